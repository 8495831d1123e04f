"""A Diadoc box's events feed: ``GET /V8/GetNewEvents`` (or V7), read a page at a time by IndexKey."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

import requests

from kontur_relay.domain.errors import FeedError, FeedStopped, MalformedPage
from kontur_relay.domain.model import Page
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.config import BoxFeed, Start
from kontur_relay.feeds.diadoc.events import ReadEvent, parse_event, parse_page, read_event
from kontur_relay.feeds.diadoc.ticks import to_ticks
from kontur_relay.kontur.client import ErrorDetails, KonturApi
from kontur_relay.kontur.session import RETRYABLE_STATUSES
from kontur_relay.observability import logger

PROTOBUF = "application/x-protobuf"
#: Diadoc answers these under load or behind its proxies; they pass when asked again.
DIADOC_RETRYABLE_STATUSES = frozenset({*RETRYABLE_STATUSES, 405, 409})
#: The organisation's service is not paid (402) or the user lost access to the box or department
#: (403): polling on cannot help until someone acts, so the feed stops until an operator resumes it.
STOPPING_STATUSES = frozenset({402, 403})
#: The cursor of a feed that settled on reading from the box's first event before any event came:
#: "now" found the box empty. Not an IndexKey, which is base64 and never holds ``~``.
FROM_OLDEST = "~oldest"
#: An operator's point in time (the admin API's ``PUT /feeds/{feedId}/cursor`` with a timestamp):
#: ``~since:<ticks>``. The next read asks for the events from that moment on (``timestampFromTicks``)
#: instead of those after an IndexKey; the IndexKey of its last event is the cursor from then on.
SINCE = "~since:"

_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def cursor_at(moment: datetime) -> str:
    """The cursor that makes a feed read on from ``moment`` (an aware datetime)."""
    return f"{SINCE}{to_ticks(moment)}"


def read_diadoc_error(response: requests.Response) -> ErrorDetails:
    """Diadoc's error bodies are plain text; ``X-Diadoc-ErrorCode`` names the error. A proxy's
    HTML page is summarised by its title rather than quoted."""
    code = response.headers.get("X-Diadoc-ErrorCode")
    text = response.text or ""
    if "html" in response.headers.get("Content-Type", "").lower() or text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        message = f"an HTML page ({' '.join(title.group(1).split())})" if title else "an HTML page"
    else:
        message = " ".join(text.split())[:300] or response.reason or "no message"
    return ErrorDetails(code=code, message=message, trace_id=None)


class DiadocApi(KonturApi):
    """KonturApi with Diadoc's meaning of 402 and 403: the feed stops (FeedStopped)."""

    def __init__(self, *args: Any, retryable: Collection[int] = DIADOC_RETRYABLE_STATUSES, **kwargs: Any) -> None:
        kwargs.setdefault("name", "Diadoc")
        super().__init__(*args, retryable=retryable, **kwargs)

    def error_for(self, response: requests.Response) -> FeedError:
        status = response.status_code
        if status not in STOPPING_STATUSES:
            return super().error_for(response)
        details = self.read_error(response)
        why = "the organisation's Diadoc service is not paid" if status == 402 else "no access to the box or department"
        path = (response.request.path_url or "").split("?", 1)[0]
        error = FeedStopped(
            f"Diadoc answered {status} to {response.request.method} {path}: {details.message}. The feed is stopped "
            f"({why}) until an operator resumes it with the admin API",
            status=status,
            error_code=details.code,
        )
        logger.warning(str(error), extra={"status": status, "error_code": details.code})
        return error


class DiadocSource:
    """Reads one box's feed. The cursor is the IndexKey of the last event published; a feed without
    one starts where ``feed.start`` says."""

    def __init__(self, api: KonturApi, feed: BoxFeed, *, version: str = "V8") -> None:
        self.api = api
        self.feed = feed
        self.path = f"/{version}/GetNewEvents"
        self._warned_sunset = False

    def read_page(self, cursor: str | None) -> Page:
        after: str | None = None
        since: str | None = None
        if cursor is None and self.feed.start is Start.NOW:
            after = self.last_index_key()
        elif cursor is not None and cursor.startswith(SINCE):
            since = cursor.removeprefix(SINCE)
        elif cursor is not None and cursor != FROM_OLDEST:
            after = cursor

        params = {**self.feed.query(), "limit": str(self.feed.limit)}
        if since is not None:
            params["timestampFromTicks"] = since
        if after is not None:
            params["afterIndexKey"] = after  # requests percent-encodes it: keys hold + / =
        response = self.api.request("GET", self.path, params=params, headers={"Accept": PROTOBUF})
        self._note_deprecation(response)
        _refuse_html(response)
        frame = parse_page(response.content)
        events = [read_event(raw, self.feed.box_id) for raw in frame.Events]

        return Page(
            events=[item.event for item in events],
            next_cursor=self._next_cursor(cursor, after, events),
            # A full page says more may wait; TotalCount is an estimate and never decides this.
            more=len(events) >= self.feed.limit,
            backlog=max(frame.TotalCount - len(events), 0) if frame.HasField("TotalCount") else None,
            backlog_capped=frame.TotalCountType == pb.GreaterThanOrEqual,
        )

    def last_index_key(self) -> str | None:
        """The IndexKey of the box's newest event; None when the box has no events (204)."""
        response = self.api.request(
            "GET",
            "/V2/GetLastEvent",
            params={"boxId": self.feed.box_id},
            headers={"Accept": PROTOBUF},
            ok=(200, 204),
        )
        if response.status_code == 204 or not response.content:
            logger.info("The box has no events yet; the feed starts from its first event")
            return None
        _refuse_html(response)
        event = parse_event(response.content)
        if not event.IndexKey:
            raise MalformedPage(f"GetLastEvent answered event {event.EventId or '?'} without an IndexKey")
        logger.info("The feed starts after the box's newest event", extra={"event_id": event.EventId})
        return event.IndexKey

    def _next_cursor(self, cursor: str | None, after: str | None, events: list[ReadEvent]) -> str | None:
        if events:
            last = events[-1].index_key
            if not last:
                raise MalformedPage(f"the last event of a page, {events[-1].event.id}, has no IndexKey")
            return last
        if cursor is None and self.feed.start is Start.NOW:
            # Keep what "now" resolved to, so that a later run does not skip what arrives meanwhile.
            return after or FROM_OLDEST
        return None

    def _note_deprecation(self, response: requests.Response) -> None:
        sunset = response.headers.get("Sunset")
        if sunset and not self._warned_sunset:
            self._warned_sunset = True
            logger.warning(
                "Diadoc deprecates this method; switch DiadocApiVersion before the sunset",
                extra={"path": self.path, "sunset": sunset, "link": response.headers.get("Link")},
            )


def _refuse_html(response: requests.Response) -> None:
    if "html" in response.headers.get("Content-Type", "").lower():
        details = read_diadoc_error(response)
        raise MalformedPage(f"Diadoc answered {response.status_code} with {details.message} instead of protobuf")
