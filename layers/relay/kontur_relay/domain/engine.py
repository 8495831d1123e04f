"""The relay engine: read a page at the cursor, publish every event, and only then move the cursor.

The delivery guarantee lives in ``Relay._relay_page``: a cursor write happens only after the
publisher returned, and the publisher returns only when the sink accepted every event of the page.
A crash anywhere before the write leaves the cursor where it was, so the page is read and
published again (a duplicate, never a loss). The version check on the write keeps two runs of one
feed from moving the cursor backwards; the lease keeps them from running at the same time at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

from kontur_relay.domain.errors import CursorConflict, FeedStopped, MalformedPage, RelayError
from kontur_relay.domain.lease import LEASE_SECONDS, Lease, LeaseLost
from kontur_relay.domain.model import CursorState, Feed, Page
from kontur_relay.domain.ports import CursorStore, Publisher, Source
from kontur_relay.observability import count_error, logger, record_run


class Outcome(StrEnum):
    CAUGHT_UP = "caught_up"  # the feed had nothing more
    OUT_OF_TIME = "out_of_time"  # stopped reading to finish inside the invocation's time
    LEASE_BUSY = "lease_busy"  # another run of this feed holds the lease
    LOST_RACE = "lost_race"  # another writer moved the cursor; this run stepped aside
    STOPPED = "stopped"  # the feed is halted until an operator resumes it
    FAILED = "failed"  # an error ended the run; the cursor stays at the last fully published page


@dataclass
class RunReport:
    feed: str
    outcome: Outcome = Outcome.CAUGHT_UP
    pages: int = 0
    events: int = 0
    cursor_before: str | None = None
    cursor_after: str | None = None
    backlog: int | None = None
    #: The error kind that ended the run, if one did.
    error: str | None = None
    newest_event_time: str | None = None
    seconds: float = 0.0

    def add(self, progress: Progress, page: Page) -> None:
        """Count a page the run relayed."""
        self.pages += 1
        self.events += len(page.events)
        self.backlog = page.backlog
        self.cursor_after = progress.state.position
        self.newest_event_time = progress.newest_event_time

    def as_dict(self) -> dict[str, object]:
        return {
            "feed": self.feed,
            "outcome": self.outcome.value,
            "pages": self.pages,
            "events": self.events,
            "cursor_before": self.cursor_before,
            "cursor_after": self.cursor_after,
            "backlog": self.backlog,
            "error": self.error,
        }


@dataclass
class Progress:
    """Where a feed got to in one stretch of pages (``Relay.drain``)."""

    state: CursorState
    pages: int = 0
    events: int = 0
    #: The last page was empty or short: the feed has nothing more right now.
    caught_up: bool = False
    backlog: int | None = None
    backlog_capped: bool = False
    #: The feed's own time of the newest event published (for the lag figure).
    newest_event_time: str | None = None


class Relay:
    """Relays one feed. Build it once per feed and call ``run`` on each scheduled tick."""

    def __init__(
        self,
        feed: Feed,
        source: Source,
        publisher: Publisher,
        cursors: CursorStore,
        *,
        safety_margin: float = 30.0,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.feed = feed
        self.lease_seconds = lease_seconds
        self.source = source
        self.publisher = publisher
        self.cursors = cursors
        self.safety_margin = safety_margin
        self.clock = clock

    def run(self, time_left: Callable[[], float]) -> RunReport:
        """Relay pages until the feed is drained or fewer than ``safety_margin`` seconds are left.

        ``time_left`` returns the seconds the invocation still has (Lambda's remaining time).
        Raises the RelayError that ended the run, after recording it for operators.
        """
        feed = self.feed.id
        report = RunReport(feed=feed)
        started = self.clock()
        lease = Lease(self.cursors, feed, seconds=self.lease_seconds, clock=self.clock)
        logger.append_keys(feed=feed)

        if not lease.acquire():
            logger.info("Another run of this feed holds its lease; skipping this tick")
            report.outcome = Outcome.LEASE_BUSY
            return report
        try:
            self._run_leased(report, time_left, lease)
        except Exception as error:
            # Recorded for operators and counted, then re-raised: the invocation fails, and its
            # failure destination gets the error. AWS errors are not RelayErrors but count too.
            report.outcome = Outcome.FAILED
            report.error = error.kind if isinstance(error, RelayError) else "unexpected"
            logger.exception("Run failed; the cursor stays at the last fully published page")
            with _logged("Could not record the run's failure on the feed"):
                self.cursors.record_failure(
                    feed, f"{type(error).__name__}: {error}", stop=isinstance(error, FeedStopped)
                )
            raise
        finally:
            with _logged("Could not release the feed's lease; it lapses on its own"):
                lease.release()
            report.seconds = self.clock() - started
            record_run(self.feed.kind, report)
            logger.info("Run ended", extra=report.as_dict())
        return report

    def _run_leased(self, report: RunReport, time_left: Callable[[], float], lease: Lease) -> None:
        state = self.cursors.load(self.feed.id)
        report.cursor_before = report.cursor_after = state.position
        if state.stopped_reason:
            logger.warning("Feed is stopped until an operator resumes it", extra={"reason": state.stopped_reason})
            report.outcome = Outcome.STOPPED
            return
        try:
            progress = self.drain(state, time_left, report=report, keep=lease.keep)
        except (CursorConflict, LeaseLost):
            logger.warning("Another run or an operator moved on; this run changed nothing more and stops")
            report.outcome = Outcome.LOST_RACE
            return
        report.outcome = Outcome.CAUGHT_UP if progress.caught_up else Outcome.OUT_OF_TIME
        self.cursors.record_success(self.feed.id, backlog=progress.backlog, backlog_capped=progress.backlog_capped)

    def drain(
        self,
        state: CursorState,
        time_left: Callable[[], float],
        *,
        max_pages: int | None = None,
        report: RunReport | None = None,
        keep: Callable[[], None] | None = None,
    ) -> Progress:
        """Relay pages from ``state`` until the feed has nothing more, ``max_pages`` were read, or
        time runs short. Holds no lease: the caller makes sure no other run relays this feed.
        Raises CursorConflict when another writer moved the cursor (nothing of this page moved it);
        ``keep`` runs between pages (the caller's lease renewal, which may raise LeaseLost)."""
        progress = Progress(state=state)
        while True:
            logger.append_keys(cursor=progress.state.position)
            page = self.source.read_page(progress.state.position)
            progress.pages += 1
            progress.backlog, progress.backlog_capped = page.backlog, page.backlog_capped
            progress.state = self._relay_page(progress.state, page)
            progress.events += len(page.events)
            if page.events:
                progress.newest_event_time = page.events[-1].time
            if report is not None:
                report.add(progress, page)
            if not page.events or not page.more:
                progress.caught_up = True
                return progress
            if (max_pages is not None and progress.pages >= max_pages) or time_left() < self.safety_margin:
                return progress
            if keep is not None:
                keep()

    def _relay_page(self, state: CursorState, page: Page) -> CursorState:
        """Publish the page, then move the cursor: the order that makes delivery at-least-once."""
        moved = page.next_cursor is not None and page.next_cursor != state.position
        if page.events and not moved:
            # Publishing would succeed and the next read would return the same page for ever.
            raise MalformedPage(f"a page of {len(page.events)} events did not move the cursor")
        if page.events:
            self.publisher.publish(self.feed, page.events)
        if not moved:
            return state
        return self.cursors.advance(state, page.next_cursor, relayed=len(page.events))


@contextmanager
def _logged(what: str) -> Iterator[None]:
    """Bookkeeping after a run that must not replace the run's own outcome or error: its failure is
    logged (and counted) instead. What it fails to write only delays operators' view of the feed."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - logged and counted; the run's own error goes on
        logger.exception(what)
        count_error(error.kind if isinstance(error, RelayError) else "unexpected")
