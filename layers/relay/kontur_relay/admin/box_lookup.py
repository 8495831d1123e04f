"""Which feed a box id names in the admin API: one box is one feed, whichever spelling names it.

A box is stored under one of its two feed ids (``feeds.diadoc.boxes.spellings``) and every spelling
of its id finds that one; a box never seen takes the canonical ``…@diadoc.ru`` one. Deployments
that registered both spellings before this rule have the box stored twice: then each spelling finds
its own registration, so either can be changed or removed on its own, every answer names the other
(``alsoRegisteredAs``), and ``POST /diadoc/boxes/{boxId}/merge`` makes them one feed.
"""

from __future__ import annotations

from dataclasses import dataclass

from kontur_relay.admin.problems import ApiError
from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.feeds.diadoc import boxes


@dataclass(frozen=True)
class Found:
    """The feed a request about a box acts on, its item, and the box's item under its other spelling."""

    feed: str
    box: RegisteredBox | None
    twin: RegisteredBox | None

    @property
    def registered(self) -> RegisteredBox:
        """The box's registration; 404 when it is registered under neither spelling."""
        if self.box is None or not self.box.registered:
            box = boxes.box_of(self.feed)
            raise ApiError(404, f"Box {box} is not registered (GET /diadoc/boxes lists those that are)")
        return self.box

    @property
    def twins(self) -> tuple[RegisteredBox, RegisteredBox] | None:
        """Both registrations of a box stored twice (this spelling's first); None: it is one feed."""
        if self.box is not None and self.box.registered and self.twin is not None and self.twin.registered:
            return self.box, self.twin
        return None

    @property
    def also_registered_as(self) -> str | None:
        return self.twins[1].feed if self.twins else None


def lookup(registry: DynamoBoxRegistry, raw: str) -> Found:
    """The box ``raw`` names (either spelling, any case, braces or not); 400 naming it when it is no box id."""
    try:
        canonical, _ = boxes.spellings(raw)
        asked = boxes.feed_id(boxes.box_id(raw))
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    other = boxes.twin(asked) or canonical
    items = {asked: registry.get(asked), other: registry.get(other)}
    registered = [feed for feed, item in items.items() if item is not None and item.registered]
    # A removed box keeps its item (its cursor), to resume from; one merged away is never resumed.
    kept = [feed for feed, item in items.items() if item is not None and "into" not in (item.merge or {})]
    feed = (registered or kept or [canonical])[0]
    twin = other if feed == asked else asked
    return Found(feed=feed, box=items.get(feed), twin=items[twin])


def registered(registry: DynamoBoxRegistry, raw: str) -> Found:
    """The registered box ``raw`` names; 404 when it is registered under neither spelling."""
    found = lookup(registry, raw)
    _ = found.registered
    return found
