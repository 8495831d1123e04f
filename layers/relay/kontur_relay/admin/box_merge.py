"""Merging a box stored twice (both spellings registered before one box was one feed) into one feed,
losing no event either cursor was still to read.

The feed that stays is the ``…@diadoc.ru`` one unless the operator names the other: its feed id and
CloudEvents ``source`` are what its consumers go on reading. It goes on from whichever of the two
cursors is *behind*, so every event either feed had still to publish is published under the feed
that stays; events between the two cursors come again under that feed's ``source`` (duplicates for
a consumer that read both feeds, which the answer and the log say), never missing.

Diadoc's IndexKeys are opaque, so the relay asks Diadoc how many events wait after each cursor (one
event a request, and its TotalCount): at any one moment the cursor behind has at least as many after
it. Counts are read stay / stop / stay again, and only a difference that events arriving meanwhile
cannot explain decides. When the counts cannot tell (both capped at 100,000, or Diadoc gives none),
nothing is written: 409, and the box is merged once it has caught up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kontur_relay.admin import box_lookup
from kontur_relay.admin.api import Caller
from kontur_relay.admin.box_lookup import Found
from kontur_relay.admin.box_registration import diadoc_failed
from kontur_relay.admin.boxes import MergeRequest
from kontur_relay.admin.problems import ApiError
from kontur_relay.aws import box_spellings
from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.errors import CursorConflict, FeedError
from kontur_relay.feeds.diadoc import boxes
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.source import FROM_OLDEST, DiadocSource
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import logger

#: Reads, counts and writes of one merge before giving up on a box whose cursors keep moving.
ATTEMPTS = 3


@dataclass(frozen=True)
class Count:
    """Events waiting after a cursor, as Diadoc counts them; ``at_least``: its count was capped."""

    events: int
    at_least: bool = False


#: How many events wait after a registration's cursor, read with the given box id; None: untold.
Counter = Callable[[RegisteredBox, str], Count | None]


def diadoc_counter(api: KonturApi, version: str) -> Counter:
    def count(box: RegisteredBox, box_id: str) -> Count | None:
        feed = box_feed({**(box.settings or {}), "boxId": box_id, "limit": 1})
        page = DiadocSource(api, feed, version=version).read_page(box.cursor.position)
        if not page.events:
            return Count(0)
        return None if page.backlog is None else Count(len(page.events) + page.backlog, page.backlog_capped)

    return count


def behind(stay: Count | None, stop: Count | None, stay_again: Count | None) -> str | None:
    """Which cursor is behind, ``stay`` or ``stop``, from counts read in that order; None: untold.
    Counts only grow while they are read, and a cursor behind has every event of one ahead after it."""
    if stay is None or stop is None or stay_again is None:
        return None
    if not stay_again.at_least and stop.events > stay_again.events:
        return "stop"
    if not stop.at_least and stay.events > stop.events:
        return "stay"
    if not (stay.at_least or stop.at_least) and stay.events == stop.events == stay_again.events:
        return "stay"  # the same place: nothing between them
    return None


def merge(registry: DynamoBoxRegistry, raw: str, asked: MergeRequest, count: Counter, who: Caller) -> Found:
    """Make the box ``raw`` names one feed; the box after (unchanged when it already is one)."""
    if who.name is None:
        raise ApiError(403, "No IAM principal in the request: the route must be IAM-authenticated")
    untold = False
    for _ in range(ATTEMPTS):
        found = box_lookup.registered(registry, raw)
        if found.twins is None:
            return found  # one feed already (also: a merge whose answer was lost)
        stay, stop = _sides(found.twins, asked.keep)
        if stay.filters_key != stop.filters_key:
            raise ApiError(
                409,
                f"{stay.feed} and {stop.feed} read different filters ({stay.filters_key or 'none'}; "
                f"{stop.filters_key or 'none'}): one feed cannot go on with both. Remove the one you no longer "
                "want (DELETE /diadoc/boxes/{its spelling}), or give both the same filters first.",
            )
        box_id = boxes.box_of(stay.feed)
        try:
            verdict = behind(count(stay, box_id), count(stop, box_id), count(stay, box_id))
        except FeedError as error:
            raise diadoc_failed(error, "GetNewEvents") from None
        if verdict is None:
            untold = True
            continue
        move = verdict == "stop"
        # A cursor not set yet starts its feed per its `start`; merged over, it must say so itself.
        position = (stop.cursor.position or FROM_OLDEST) if move else stay.cursor.position
        audit = {"cursor_of": (stop if move else stay).feed, "by": who.name}
        try:
            box_spellings.merge(registry, stay, stop, position=position, move=move, audit=audit, by=who.name)
        except CursorConflict:
            continue  # a poll moved a cursor meanwhile: counted and decided again
        logger.info(
            "An operator merged a Diadoc box registered under both spellings into one feed",
            extra={
                "feed": stay.feed,
                "stopped": stop.feed,
                "cursor_of": audit["cursor_of"],
                "cursors": {stay.feed: stay.cursor.position, stop.feed: stop.cursor.position},
                "duplicates": _duplicates(stay, stop, move=move),
                "by": who.name,
                "principal": who.principal,
                "source_ip": who.source_ip,
            },
        )
        return box_lookup.registered(registry, stay.box_id)
    if untold:
        raise ApiError(
            409,
            f"Diadoc's counts cannot tell which cursor of {raw.strip()} is behind (capped at 100,000, missing, or "
            "moving too fast): nothing was merged. Merge it once the box has caught up.",
        )
    raise ApiError(409, f"Box {raw.strip()} kept changing while it was being merged: send it again")


def _duplicates(stay: RegisteredBox, stop: RegisteredBox, *, move: bool) -> str:
    if move:
        return f"the events between the two cursors come again under {stay.feed}: its consumers drop them by id"
    return f"the events between the two cursors, published under {stop.feed}, now come under {stay.feed} too"


def _sides(twins: tuple[RegisteredBox, RegisteredBox], keep: str | None) -> tuple[RegisteredBox, RegisteredBox]:
    """The registration that stays (``keep``'s, or the ``…@diadoc.ru`` one) and the one that stops."""
    first, second = twins
    canonical, _ = boxes.spellings(first.box_id)
    stay = canonical
    if keep is not None:
        stay = boxes.feed_id(boxes.box_id(keep))  # the model's pattern took it: a box id
        if stay not in (first.feed, second.feed):
            raise ApiError(422, f"keep: {keep} is not a spelling of {first.box_id}")
    return (first, second) if first.feed == stay else (second, first)
