"""The Kontur.Extern docflow events feed: ``GET /v1/events``."""

from __future__ import annotations

from typing import Any

import requests

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.domain.model import FeedEvent, Page
from kontur_relay.kontur.client import ErrorDetails, KonturApi

EXTERN_EVENT_TYPE = "ru.kontur.extern.docflow-event"
#: The cursor of a feed read from its very beginning.
FIRST_EVENT_ID = "0_0"
#: Old servers answer ``last-event-id``, which names an event the next read returns again. Such a
#: cursor is kept with this prefix, so the repeated event is recognised and not published twice.
AFTER = "after:"

_ATTRIBUTES = {
    "account_id": "account-id",
    "docflow_type": "docflow-type",
    "new_state": "new-state",
    "inn": "inn",
    "kpp": "kpp",
}


def read_extern_error(response: requests.Response) -> ErrorDetails:
    """Extern's 4xx body is ``{"id": "urn:error:...", "message": ..., "trace-id": ...}``."""
    trace_id = response.headers.get("X-Kontur-Trace-Id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return ErrorDetails(
            code=_text(body.get("id")),
            message=_text(body.get("message")) or response.reason or "no message",
            trace_id=trace_id or _text(body.get("trace-id")),
        )
    return ErrorDetails(code=None, message=(response.text or response.reason or "")[:300], trace_id=trace_id)


class ExternSource:
    """Reads pages of ``take`` events; ``next-event-id`` is stored exactly as received."""

    def __init__(self, api: KonturApi, *, take: int = 100) -> None:
        if take <= 0:
            raise ValueError("take must be positive")
        self.api = api
        self.take = take

    def read_page(self, cursor: str | None) -> Page:
        repeated = cursor[len(AFTER) :] if cursor and cursor.startswith(AFTER) else None
        from_id = repeated or cursor or FIRST_EVENT_ID
        response = self.api.request("GET", "/v1/events", params={"fromId": from_id, "take": self.take})
        trace_id = response.headers.get("X-Kontur-Trace-Id")
        try:
            body = response.json()
        except ValueError as error:
            raise MalformedPage("Extern answered 200 with a body that is not JSON", trace_id=trace_id) from error
        if not isinstance(body, dict):
            raise MalformedPage("Extern answered 200 with JSON that is not an object", trace_id=trace_id)
        raw = _events_of(body, trace_id)
        events = [self._event(item, trace_id) for item in raw]
        if repeated and events and events[0].id == repeated:
            events = events[1:]

        next_cursor = _text(body.get("next-event-id"))
        if not next_cursor:
            last = _text(body.get("last-event-id"))
            next_cursor = AFTER + last if last else None
        if raw and next_cursor is None:
            # Events without a position to read on from: publishing them and keeping the cursor would
            # republish this page on every tick, and guessing a position from the ids could skip events.
            raise MalformedPage(
                f"Extern answered {len(raw)} events without next-event-id (or last-event-id)", trace_id=trace_id
            )
        # Only an empty page says the feed is drained: a server may cap `take` below what was asked
        # (its maximum is undocumented), and a short page must not leave the backlog for the next tick.
        return Page(events=events, next_cursor=next_cursor, more=bool(raw))

    @staticmethod
    def _event(item: Any, trace_id: str | None) -> FeedEvent:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise MalformedPage("an Extern event without a string id", trace_id=trace_id)
        return FeedEvent(
            id=item["id"],
            type=EXTERN_EVENT_TYPE,
            data=item,
            time=_text(item.get("event-date-time")),
            subject=_text(item.get("docflow-id")),
            attributes={name: _text(item.get(key)) for name, key in _ATTRIBUTES.items()},
            ordering_key=_text(item.get("docflow-id")),
        )


def _events_of(body: dict[str, Any], trace_id: str | None) -> list[Any]:
    """The page's ``api-events``. Only an empty array is an empty page: a missing or null key is a
    body the relay does not understand (a proxy's or a changed API's), and taking it for "nothing
    new" would hide an outage behind runs that succeed."""
    if "api-events" not in body:
        raise MalformedPage("Extern answered 200 without api-events", trace_id=trace_id)
    raw = body["api-events"]
    if raw is None:
        raise MalformedPage("Extern answered 200 with api-events null", trace_id=trace_id)
    if not isinstance(raw, list):
        raise MalformedPage(f"Extern's api-events is not an array but {type(raw).__name__}", trace_id=trace_id)
    return raw


def _text(value: object) -> str | None:
    """A scalar as a string; None for absent, null, and structured values."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
