"""The relay engine: one feed's run, from its cursor until it has caught up or its time is short.

The delivery guarantee lives in ``pages.Pages.drain``: a page is published, and only then does the
cursor move. A run adds what makes runs of one feed cheap and orderly:

- **an idle tick writes nothing**: the feed is read once before anything is written; a page with
  nothing new ends the tick there (its "last checked" time is refreshed every few minutes only);
- **one run at a time**: a page with events is relayed under the feed's lease (``lease.Lease``),
  short and renewed, so a run that dies holds the feed up for one lease at most;
- **sub-minute latency, on request** (``Cadence``): a run keeps polling at a shorter interval until
  the next scheduled run takes over, holding its lease and writing nothing while nothing arrives.
  The next run waits for the lease as long as its own minute lasts and relays from the cursor as the
  lease finds it, so the handover costs no poll; a cursor moved under a run by another writer (a
  run that outlived its lease, an operator) is read again while the lease is still the run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kontur_relay.domain.cadence import Cadence
from kontur_relay.domain.errors import CursorConflict, FeedStopped, FeedUnavailable, RelayError
from kontur_relay.domain.lease import LEASE_SECONDS, Lease, LeaseLost
from kontur_relay.domain.model import CursorState, Feed, Page, Success
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.pages import Pages, Progress
from kontur_relay.domain.ports import CursorStore, Publisher, RequestBudget, Source
from kontur_relay.domain.read_ahead import ReadAhead
from kontur_relay.domain.report import Outcome, Requests, RunReport
from kontur_relay.observability import count_error, logger

#: An idle tick refreshes the feed's "last checked" time once this many seconds have passed.
REFRESH_SECONDS = 300.0


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
        cadence: Cadence | None = None,
        pipelined: bool = True,
        budget: RequestBudget | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.feed = feed
        #: Counts the run's requests to Kontur for its report (Extern's limit is Kontur's to enforce).
        self.budget = budget
        self.source = source
        self.cursors = cursors
        self.pages = Pages(
            feed, source, publisher, cursors, safety_margin=safety_margin, pipelined=pipelined, pace=Pace(clock)
        )
        self.safety_margin = safety_margin
        self.lease_seconds = lease_seconds
        self.cadence = cadence
        self.clock = clock
        self.sleep = sleep

    def run(self, time_left: Callable[[], float]) -> RunReport:
        """Relay pages until the feed is drained or fewer than ``safety_margin`` seconds are left.

        ``time_left`` returns the seconds the invocation still has (Lambda's remaining time).
        Raises the RelayError that ended the run, after recording it for operators.
        """
        report = RunReport(feed=self.feed.id)
        started = self.clock()
        before = Requests.of(self.budget) if self.budget is not None else None
        self.pages.pace.reset()
        logger.append_keys(feed=self.feed.id)
        try:
            self._run(report, time_left, started)
        except Exception as error:
            # Recorded for operators and counted, then re-raised: the invocation fails, and its
            # failure destination gets the error. AWS errors are not RelayErrors but count too.
            report.outcome = Outcome.FAILED
            report.error = error.kind if isinstance(error, RelayError) else "unexpected"
            logger.exception("Run failed; the cursor stays at the last fully published page")
            asked = error.retry_after if isinstance(error, FeedUnavailable) else None
            with _logged("Could not record the run's failure on the feed"):
                self.cursors.record_failure(
                    self.feed.id,
                    f"{type(error).__name__}: {error}",
                    stop=isinstance(error, FeedStopped),
                    not_before=None if asked is None else self.clock() + asked,
                )
            raise
        finally:
            report.seconds = self.clock() - started
            if self.budget is not None and before is not None:
                report.requests = Requests.of(self.budget).since(before)
            report.record(self.feed.kind)
            logger.info("Run ended", extra=report.as_dict())
        return report

    def _run(self, report: RunReport, time_left: Callable[[], float], started: float) -> None:
        state = self.cursors.load(self.feed.id)
        report.cursor_before = report.cursor_after = state.position
        if state.stopped_reason:
            logger.warning("Feed is stopped until an operator resumes it", extra={"reason": state.stopped_reason})
            report.outcome = Outcome.STOPPED
            return
        if state.not_before is not None and self.clock() < state.not_before:
            logger.info("Kontur asked to be left alone; this run does not call it", extra={"until": state.not_before})
            report.outcome = Outcome.WAITING
            return
        first = None
        if self.cadence is None:
            first = self.pages.read(state.position)
            if not first.events and first.next_cursor in (None, state.position):
                report.pages = 1
                self._checked(state)
                return
        # The page after the first is read while the lease is taken: one round trip fewer to wait for.
        ahead = self.pages.read_ahead(state.position, first, time_left, depth=1) if first is not None else None
        try:
            self._leased(report, state, first, ahead, time_left=time_left, started=started)
        finally:
            if ahead is not None:
                ahead.close()

    def _leased(
        self,
        report: RunReport,
        state: CursorState,
        first: Page | None,
        ahead: ReadAhead | None,
        *,
        time_left: Callable[[], float],
        started: float,
    ) -> None:
        """The run under the feed's lease, from ``state`` as loaded (``first``: the page read there)."""
        lease = self._lease()
        held = lease.acquire(wait=self._handover(started, time_left))
        if held is None:
            logger.info("Another run of this feed holds its lease; skipping this tick")
            report.outcome = Outcome.LEASE_BUSY
            return
        if held.version != state.version:
            # The run before this one moved the cursor while this one waited for the lease.
            if ahead is not None:
                ahead.close()
            first = ahead = None
            report.cursor_before = report.cursor_after = held.position
        if held.stopped_reason:
            _release(lease)  # the run before this one was stopped (Diadoc's 402) while this one waited
            report.outcome = Outcome.STOPPED
            return
        try:
            progress = self._relay(held, first, ahead, lease=lease, report=report, time_left=time_left, started=started)
        except LeaseLost:
            logger.warning("Another run took the lease over; this run changed nothing more and stops")
            report.outcome = Outcome.LOST_RACE
            _release(lease)
            return
        except BaseException:
            _release(lease)
            raise
        report.outcome = Outcome.CAUGHT_UP if progress.caught_up else Outcome.OUT_OF_TIME
        recorded = report.events or progress.backlog is not None or self._due_check(state)
        # One write: the lease given up, and the success operators see when there is news to show.
        lease.release(Success(progress.backlog, progress.backlog_capped) if recorded else None)

    def _relay(
        self,
        state: CursorState,
        first: Page | None,
        ahead: ReadAhead | None,
        *,
        lease: Lease,
        report: RunReport,
        time_left: Callable[[], float],
        started: float,
    ) -> Progress:
        """Drain the feed, then, with a cadence, poll it again until the next run takes over. A cursor
        moved by another writer (a run that outlived its lease, an operator) is read again and
        relayed from, for as long as the lease is still this run's."""
        while True:
            try:
                progress = self.pages.drain(
                    state, time_left, first=first, ahead=ahead, keep=lease.keep, on_page=report.add
                )
                while progress.caught_up and self._polls_again(started, time_left):
                    self.sleep(self.cadence.every if self.cadence else 0.0)
                    progress = self.pages.drain(progress.state, time_left, keep=lease.keep, on_page=report.add)
                return progress
            except CursorConflict:
                lease.confirm()
                state, first, ahead = self.cursors.load(self.feed.id), None, None
                logger.warning(
                    "The cursor moved under this run; it goes on from there", extra={"moved_to": state.position}
                )

    def _lease(self) -> Lease:
        seconds, renew_below = (self.lease_seconds, None) if self.cadence is None else self.cadence.lease_terms
        return Lease(
            self.cursors, self.feed.id, seconds=seconds, renew_below=renew_below, clock=self.clock, sleep=self.sleep
        )

    def _handover(self, started: float, time_left: Callable[[], float]) -> float:
        """How long to wait for the lease: with a cadence, while the run before hands over, for as
        long as this run could still poll in its own period."""
        if self.cadence is None:
            return 0.0
        return self.cadence.lease_wait(started, self.clock(), time_left() - self.safety_margin)

    def _polls_again(self, started: float, time_left: Callable[[], float]) -> bool:
        if self.cadence is None:
            return False
        return self.cadence.polls_again(started, self.clock()) and self.pages.pace.fits(
            time_left() - self.cadence.every, self.safety_margin
        )

    def _due_check(self, state: CursorState) -> bool:
        return not state.succeeded_within(REFRESH_SECONDS, self.clock())

    def _checked(self, state: CursorState) -> None:
        """An idle tick: nothing to write, but operators' "last checked" every few minutes."""
        if self._due_check(state):
            self.cursors.record_success(self.feed.id, backlog=None, backlog_capped=False)


def _release(lease: Lease) -> None:
    """After a run that failed or lost: its lease lapses on its own if this write fails too."""
    with _logged("Could not release the feed's lease; it lapses on its own"):
        lease.release()


@contextmanager
def _logged(what: str) -> Iterator[None]:
    """Bookkeeping after a run that must not replace the run's own outcome or error: its failure is
    logged (and counted) instead. What it fails to write only delays operators' view of the feed."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - logged and counted; the run's own error goes on
        logger.exception(what)
        count_error(error.kind if isinstance(error, RelayError) else "unexpected")
