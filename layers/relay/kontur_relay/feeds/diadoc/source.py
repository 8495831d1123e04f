"""A Diadoc box's events feed: ``GET /V8/GetNewEvents`` (or V7), read a page at a time from the box's
cursor (``cursor.Position``: the position before the last page's final group, and what it already
published there). A page holds only what is new: events the cursor saw at its base are dropped,
and, given the box's memory, events published before and served again."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any

import requests

from kontur_relay.domain.errors import FeedError, FeedRejected, FeedStopped, MalformedPage
from kontur_relay.domain.model import Page
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.config import MAX_LIMIT, BoxFeed, Start
from kontur_relay.feeds.diadoc.cursor import FROM_OLDEST, Position, at_moment
from kontur_relay.feeds.diadoc.events import ReadEvent, parse_event, parse_page, read_event
from kontur_relay.feeds.diadoc.memory import BoxMemory
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
#: V7 pages hold at most 100 events, V8 pages 500.
MAX_LIMITS = {"V7": 100, "V8": MAX_LIMIT}

_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def cursor_at(moment: datetime) -> str:
    """The cursor that makes a feed read on from ``moment`` (an aware datetime): ``~since:<ticks>``.
    The next read asks for the events from that moment on (``timestampFromTicks``) instead of those
    after an IndexKey."""
    return str(at_moment(to_ticks(moment)).text())


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
    """Reads one box's feed from its cursor (a feed without one starts where ``feed.start`` says)."""

    def __init__(self, api: KonturApi, feed: BoxFeed, *, version: str = "V8", memory: BoxMemory | None = None) -> None:
        self.api = api
        self.feed = feed
        self.path = f"/{version}/GetNewEvents"
        self.max_limit = MAX_LIMITS[version]
        self.memory = memory
        self._warned_sunset = False

    def read_page(self, cursor: str | None) -> Page:
        try:
            position = Position.parse(cursor)
        except ValueError as error:
            raise FeedRejected(f"the box's cursor cannot be read: {error}") from None
        if position.base is None and self.feed.start is Start.NOW:
            position = self.now()
        frame, limit = self.fetch(position)
        read = self.events(frame)
        after, too_large = position.after_page([(item.event.id, item.index_key) for item in read])
        if too_large:
            logger.warning("More events share one IndexKey than a cursor remembers; reconciliation reads the rest")
        if after.base is None and read:
            after = Position(FROM_OLDEST, after.seen)  # from the first event: the group read there is seen
        seen = set(position.seen)
        fresh = [item for item in read if item.event.id not in seen]
        if self.memory is not None:
            fresh = self.memory.sort(fresh)
        return Page(
            events=[item.event for item in fresh],
            next_cursor=after.text(),
            # A full page says more may wait; TotalCount is an estimate and never decides this.
            more=len(read) >= limit,
            backlog=max(frame.TotalCount - len(read), 0) if frame.HasField("TotalCount") else None,
            backlog_capped=frame.TotalCountType == pb.GreaterThanOrEqual,
        )

    def fetch(self, position: Position) -> tuple[pb.BoxEventListFrame, int]:
        """The page at ``position``, its events still as bytes, and the limit it was asked with. Read
        again at the base, the seen events come first: a page one larger per seen event still brings
        something new, a page of 1 included."""
        limit = min(self.feed.limit + len(position.seen), self.max_limit)
        params = {**self.feed.query(), "limit": str(limit)}
        if position.since is not None:
            params["timestampFromTicks"] = str(position.since)
        if position.after is not None:
            params["afterIndexKey"] = position.after  # requests percent-encodes it: keys hold + / =
        response = self.api.request("GET", self.path, params=params, headers={"Accept": PROTOBUF})
        self._note_deprecation(response)
        _refuse_html(response)
        return parse_page(response.content), limit

    def events(self, frame: pb.BoxEventListFrame) -> list[ReadEvent]:
        read = [read_event(raw, self.feed.box_id) for raw in frame.Events]
        if any(not item.index_key for item in read):
            raise MalformedPage(f"a page of {len(read)} events holds events without an IndexKey")
        return read

    def now(self) -> Position:
        """Where a feed that starts "now" begins: after the box's newest event, its floor just after
        that event's time (reconciliation never reaches back before the start); an empty box
        starts from its first event."""
        last = self.last_event()
        if last is None:
            return Position(FROM_OLDEST)
        return Position(last.IndexKey, floor=ticks_of(last) + 1)

    def last_event(self) -> pb.BoxEvent | None:
        """The box's newest event (``GET /V2/GetLastEvent``); None when the box has none (204)."""
        response = self.api.request(
            "GET",
            "/V2/GetLastEvent",
            params={"boxId": self.feed.box_id},
            headers={"Accept": PROTOBUF},
            ok=(200, 204),
        )
        if response.status_code == 204 or not response.content:
            logger.info("The box has no events yet", extra={"feed": self.feed.feed_id})
            return None
        _refuse_html(response)
        event = parse_event(response.content)
        if not event.IndexKey or not event.EventId:
            raise MalformedPage(f"GetLastEvent answered event {event.EventId or '?'} without an IndexKey or EventId")
        return event

    def _note_deprecation(self, response: requests.Response) -> None:
        sunset = response.headers.get("Sunset")
        if sunset and not self._warned_sunset:
            self._warned_sunset = True
            logger.warning(
                "Diadoc deprecates this method; switch DiadocApiVersion before the sunset",
                extra={"path": self.path, "sunset": sunset, "link": response.headers.get("Link")},
            )


def ticks_of(event: pb.BoxEvent) -> int:
    return event.Message.TimestampTicks if event.HasField("Message") else event.Patch.TimestampTicks


def _refuse_html(response: requests.Response) -> None:
    if "html" in response.headers.get("Content-Type", "").lower():
        details = read_diadoc_error(response)
        raise MalformedPage(f"Diadoc answered {response.status_code} with {details.message} instead of protobuf")
