"""In-memory stand-ins for the engine's three ports, each able to fail on command.

They exist to inject faults the real components cannot be made to produce on demand (a crash
between two publish batches, a cursor write that lands and then loses its answer, two runs racing
for one cursor). They keep the real components' semantics: ``FakeCursorStore`` is held to the same
contract as ``DynamoCursorStore`` by ``tests/adapters/test_dynamo_store.py``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kontur_relay.domain.errors import CursorConflict
from kontur_relay.domain.model import CursorState, Feed, FeedEvent, Page, Success
from kontur_relay.feeds.extern.source import EXTERN_EVENT_TYPE


class Crash(BaseException):
    """The process dying mid-run (a Lambda timeout, an out-of-memory kill).

    A BaseException, so that no ``except Exception`` in the code under test can handle or record it:
    a dead process records nothing. Only ``finally`` blocks still run, which a real kill skips;
    tests that care about the lease a dead run leaves behind model it explicitly.
    """


class FakeClock:
    """Epoch seconds that move only when told, shared by the store's lease and the run's deadline."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def cursor_at(offset: int) -> str:
    """FakeSource's cursors: opaque to the engine, readable by the tests (the next event's index)."""
    return f"c{offset}"


def offset_of(cursor: str | None) -> int:
    return 0 if cursor is None else int(cursor.removeprefix("c"))


def make_event(index: int, **attributes: str | None) -> FeedEvent:
    event_id = f"ev{index:06d}"
    return FeedEvent(
        id=event_id,
        type=EXTERN_EVENT_TYPE,
        data={"id": event_id, "n": index},
        attributes=attributes,
        ordering_key=f"docflow-{index % 7}",
    )


class FakeSource:
    """A feed of numbered events read ``page_size`` at a time; ``more`` means a full page.

    ``faults`` holds exceptions the next reads raise, one each, before reading anything.
    ``before_read`` runs on every read (tests use it to move a clock or to line up threads).
    ``stuck`` answers pages whose next cursor is the cursor read from: a broken feed.
    """

    def __init__(self, count: int = 0, *, page_size: int = 100) -> None:
        self.events: list[FeedEvent] = [make_event(i) for i in range(count)]
        self.page_size = page_size
        self.reads: list[str | None] = []
        self.faults: deque[BaseException] = deque()
        self.before_read: Callable[[str | None], None] | None = None
        self.stuck = False
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    def append(self, count: int) -> None:
        with self._lock:
            start = len(self.events)
            self.events.extend(make_event(i) for i in range(start, start + count))

    def read_page(self, cursor: str | None) -> Page:
        if self.before_read is not None:
            self.before_read(cursor)
        with self._lock:
            self.reads.append(cursor)
            if self.faults:
                raise self.faults.popleft()
            start = offset_of(cursor)
            events = self.events[start : start + self.page_size]
            end = start + len(events)
            backlog = len(self.events) - end
        next_cursor = cursor if self.stuck else (cursor_at(end) if events else cursor)
        return Page(events=events, next_cursor=next_cursor, more=len(events) == self.page_size, backlog=backlog)


@dataclass
class _PublishFault:
    after_batches: int
    error: BaseException


class FakePublisher:
    """Accepts events in batches of ``batch_size`` like SNS's PublishBatch, keeping every accepted
    message in ``published`` (duplicates included, in acceptance order).

    ``fail_after(n, error)`` makes one later ``publish`` call accept its first ``n`` batches and then
    raise ``error``; ``n`` at or past the page's batch count means everything was accepted and the
    answer was lost. ``before_batch`` runs before each batch (tests use it to hold a run in place).
    """

    def __init__(self, batch_size: int = 10) -> None:
        self.batch_size = batch_size
        self.published: list[FeedEvent] = []
        self.calls = 0
        self.before_batch: Callable[[int], None] | None = None
        #: Runs as each publish call begins, with its events (tests arm a crash for a given page).
        self.before_publish: Callable[[Sequence[FeedEvent]], None] | None = None
        self._faults: deque[_PublishFault] = deque()
        self._lock = threading.Lock()

    @property
    def ids(self) -> list[str]:
        with self._lock:
            return [event.id for event in self.published]

    def fail_after(self, batches: int, error: BaseException) -> None:
        self._faults.append(_PublishFault(batches, error))

    def publish(self, feed: Feed, messages: Sequence[FeedEvent]) -> None:
        if self.before_publish is not None:
            self.before_publish(messages)
        with self._lock:
            self.calls += 1
            fault = self._faults.popleft() if self._faults else None
        chunks = [messages[i : i + self.batch_size] for i in range(0, len(messages), self.batch_size)]
        for number, chunk in enumerate(chunks):
            if fault is not None and number == fault.after_batches:
                raise fault.error
            if self.before_batch is not None:
                self.before_batch(number)
            with self._lock:
                self.published.extend(chunk)
        if fault is not None:
            raise fault.error


@dataclass
class _Item:
    position: str | None = None
    version: int = 0
    stopped_reason: str | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    events_relayed: int = 0
    last_error: str | None = None
    last_success: dict[str, Any] | None = None
    last_success_at: str | None = None
    not_before: float | None = None


@dataclass
class CursorWrite:
    feed: str
    position: str | None
    version: int


@dataclass
class _StoreFault:
    error: BaseException
    #: True: the write lands, then the caller gets the error (the answer was lost).
    after_write: bool
    #: Only the write that moves the cursor here (None: the next write, wherever it goes).
    to: str | None = None


@dataclass
class FakeCursorStore:
    """One record per feed, every change under one lock: the conditional writes of DynamoDB.

    ``bypass_lease`` grants every lease request, to force two runs of a feed into a race.
    ``fail_advance(error, after_write=..., to=...)`` makes the next cursor write (or the next one to
    ``to``) raise, before or after it lands.
    ``witness`` sees every cursor write before it lands (tests assert their invariants there).
    """

    clock: Callable[[], float] = field(default_factory=FakeClock)
    bypass_lease: bool = False
    witness: Callable[[str, str | None], None] | None = None
    items: dict[str, _Item] = field(default_factory=dict)
    #: Every cursor write that landed, in order.
    writes: list[CursorWrite] = field(default_factory=list)
    #: How many times a run's success was written.
    successes: int = 0
    #: (feed, error, stop) of every record_failure.
    failures: list[tuple[str, str, bool]] = field(default_factory=list)
    _advance_faults: deque[_StoreFault] = field(default_factory=deque)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def _item(self, feed: str) -> _Item:
        return self.items.setdefault(feed, _Item())

    def fail_advance(self, error: BaseException, *, after_write: bool = False, to: str | None = None) -> None:
        self._advance_faults.append(_StoreFault(error, after_write, to))

    # -- the CursorStore port ---------------------------------------------------------------------

    def acquire_lease(self, feed: str, owner: str, until: float) -> CursorState | None:
        with self._lock:
            item = self._item(feed)
            if self.bypass_lease:
                return self.load(feed)
            if item.lease_until is not None and item.lease_until >= self.clock() and item.lease_owner != owner:
                return None
            item.lease_owner, item.lease_until = owner, until
            return self.load(feed)

    def renew_lease(self, feed: str, owner: str, until: float) -> bool:
        with self._lock:
            item = self._item(feed)
            if item.lease_owner != owner:
                return False
            item.lease_until = until
            return True

    def release_lease(self, feed: str, owner: str, *, success: Success | None = None) -> None:
        with self._lock:
            item = self._item(feed)
            if item.lease_owner == owner:
                item.lease_owner = item.lease_until = None
            if success is not None:
                self.record_success(feed, backlog=success.backlog, backlog_capped=success.backlog_capped)

    def load(self, feed: str) -> CursorState:
        with self._lock:
            item = self._item(feed)
            return CursorState(
                feed, item.position, item.version, item.stopped_reason, item.last_success_at, item.not_before
            )

    def advance(self, state: CursorState, position: str | None, *, relayed: int) -> CursorState:
        with self._lock:
            fault = self._advance_faults[0] if self._advance_faults else None
            if fault is not None and fault.to not in (None, position):
                fault = None
            if fault is not None:
                self._advance_faults.popleft()
            if fault is not None and not fault.after_write:
                raise fault.error
            item = self._item(state.feed)
            if item.version != state.version:
                raise CursorConflict(f"the cursor of feed {state.feed} is no longer at version {state.version}")
            if self.witness is not None:
                self.witness(state.feed, position)
            item.position, item.version = position, item.version + 1
            item.events_relayed += relayed
            self.writes.append(CursorWrite(state.feed, position, item.version))
            if fault is not None:
                raise fault.error
            return CursorState(state.feed, position, item.version)

    def record_success(self, feed: str, *, backlog: int | None, backlog_capped: bool) -> None:
        with self._lock:
            item = self._item(feed)
            item.last_success = {"backlog": backlog, "backlog_capped": backlog_capped}
            item.last_success_at = datetime.fromtimestamp(self.clock(), UTC).isoformat()
            self.successes += 1

    def record_failure(self, feed: str, error: str, *, stop: bool = False, not_before: float | None = None) -> None:
        with self._lock:
            item = self._item(feed)
            item.last_error = error
            item.not_before = not_before
            if stop:
                item.stopped_reason = error
            self.failures.append((feed, error, stop))

    # -- what operators do (DynamoCursorStore.set_cursor's semantics) -----------------------------

    def set_cursor(self, feed: str, position: str | None, *, expected_version: int, by: str) -> CursorState:
        with self._lock:
            item = self._item(feed)
            if item.version != expected_version:
                raise CursorConflict(f"the cursor of feed {feed} is no longer at version {expected_version}")
            item.position, item.version, item.stopped_reason = position, item.version + 1, None
            self.writes.append(CursorWrite(feed, position, item.version))
            return CursorState(feed, position, item.version)
