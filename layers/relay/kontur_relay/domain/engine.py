"""The relay engine: read a page at the cursor, publish every event, and only then move the cursor.

The delivery guarantee lives in ``Relay._relay_page``: a cursor write happens only after the
publisher returned, and the publisher returns only when the sink accepted every event of the page.
A crash anywhere before the write leaves the cursor where it was, so the page is read and
published again (a duplicate, never a loss). The version check on the write keeps two runs of one
feed from moving the cursor backwards; the lease keeps them from running at the same time at all.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from kontur_relay.domain.errors import CursorConflict, FeedStopped, MalformedPage, RelayError
from kontur_relay.domain.model import CursorState, Feed, Page
from kontur_relay.domain.ports import CursorStore, Publisher, Source
from kontur_relay.observability import MetricUnit, count_error, logger, metrics

#: Seconds the lease outlives the invocation's deadline, for clock skew between Lambda and DynamoDB.
LEASE_SLACK_SECONDS = 5.0


class Outcome(StrEnum):
    CAUGHT_UP = "caught_up"  # the feed had nothing more
    OUT_OF_TIME = "out_of_time"  # stopped reading to finish inside the invocation's time
    LEASE_BUSY = "lease_busy"  # another run of this feed holds the lease
    LOST_RACE = "lost_race"  # another writer moved the cursor; this run stepped aside
    STOPPED = "stopped"  # the feed is halted until an operator resumes it


@dataclass
class RunReport:
    feed: str
    outcome: Outcome = Outcome.CAUGHT_UP
    pages: int = 0
    events: int = 0
    cursor_before: str | None = None
    cursor_after: str | None = None
    backlog: int | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "feed": self.feed,
            "outcome": self.outcome.value,
            "pages": self.pages,
            "events": self.events,
            "cursor_before": self.cursor_before,
            "cursor_after": self.cursor_after,
            "backlog": self.backlog,
        }


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.feed = feed
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
        owner = uuid.uuid4().hex
        logger.append_keys(feed=feed)
        metrics.add_dimension("feed", feed)

        if not self.cursors.acquire_lease(feed, owner, started + time_left() + LEASE_SLACK_SECONDS):
            logger.info("Another run of this feed holds its lease; skipping this tick")
            metrics.add_metric(name="LeaseBusy", unit=MetricUnit.Count, value=1)
            report.outcome = Outcome.LEASE_BUSY
            return report
        try:
            self._run_leased(report, time_left)
        except Exception as error:
            # Recorded for operators and counted, then re-raised: the invocation fails, and its
            # failure destination gets the error. AWS errors are not RelayErrors but count too.
            kind = error.kind if isinstance(error, RelayError) else "unexpected"
            count_error(kind, feed)
            self.cursors.record_failure(feed, f"{type(error).__name__}: {error}", stop=isinstance(error, FeedStopped))
            logger.exception("Run failed; the cursor stays at the last fully published page")
            raise
        finally:
            self.cursors.release_lease(feed, owner)
            metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=(self.clock() - started) * 1000)
            metrics.add_metric(name="PagesRead", unit=MetricUnit.Count, value=report.pages)
            metrics.add_metric(name="EventsPublished", unit=MetricUnit.Count, value=report.events)
            logger.info("Run ended", extra=report.as_dict())
        return report

    def _run_leased(self, report: RunReport, time_left: Callable[[], float]) -> None:
        state = self.cursors.load(self.feed.id)
        report.cursor_before = report.cursor_after = state.position
        if state.stopped_reason:
            logger.warning("Feed is stopped until an operator resumes it", extra={"reason": state.stopped_reason})
            metrics.add_metric(name="StoppedRuns", unit=MetricUnit.Count, value=1)
            report.outcome = Outcome.STOPPED
            return

        while True:
            logger.append_keys(cursor=state.position)
            page = self.source.read_page(state.position)
            report.pages += 1
            report.backlog = page.backlog
            try:
                state = self._relay_page(state, page)
            except CursorConflict:
                logger.warning("Another writer moved the cursor; this run changed nothing and stops")
                metrics.add_metric(name="CursorConflicts", unit=MetricUnit.Count, value=1)
                report.outcome = Outcome.LOST_RACE
                return
            report.events += len(page.events)
            report.cursor_after = state.position

            if not page.events or not page.more:
                report.outcome = Outcome.CAUGHT_UP
                break
            if time_left() < self.safety_margin:
                report.outcome = Outcome.OUT_OF_TIME
                break

        metrics.add_metric(name="CaughtUp", unit=MetricUnit.Count, value=int(report.outcome is Outcome.CAUGHT_UP))
        if page.backlog is not None:
            metrics.add_metric(name="Backlog", unit=MetricUnit.Count, value=page.backlog)
        self.cursors.record_success(self.feed.id, backlog=page.backlog, backlog_capped=page.backlog_capped)

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
