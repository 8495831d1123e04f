"""What one run of a feed came to: its outcome, its report for the logs, and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kontur_relay.domain.model import Page
from kontur_relay.domain.pages import Progress
from kontur_relay.observability import MetricUnit, count_error, for_kind, lag_seconds, metrics


class Outcome(StrEnum):
    CAUGHT_UP = "caught_up"  # the feed had nothing more
    OUT_OF_TIME = "out_of_time"  # stopped reading to finish inside the invocation's time
    LEASE_BUSY = "lease_busy"  # another run of this feed holds the lease
    LOST_RACE = "lost_race"  # another run took the lease over; this run stepped aside
    STOPPED = "stopped"  # the feed is halted until an operator resumes it
    WAITING = "waiting"  # Kontur asked to be left alone until a time still ahead
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

    def record(self, kind: str) -> None:
        """The run's metrics (Extern's; a Diadoc poller run counts its boxes itself)."""
        for_kind(kind)
        failed = self.error is not None
        if failed:
            count_error(self.error or "unexpected", kind)
        ok = not failed and self.outcome in (Outcome.CAUGHT_UP, Outcome.OUT_OF_TIME)
        counts = {
            "RunSucceeded": int(ok),
            "RunFailed": int(failed),
            "StoppedFeeds": int(self.outcome is Outcome.STOPPED),
            "EventsPublished": self.events,
        }
        for name, value in counts.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=self.seconds * 1000)
        if self.backlog is not None:
            metrics.add_metric(name="Backlog", unit=MetricUnit.Count, value=self.backlog)
        lag = lag_seconds(self.newest_event_time)
        if lag is not None:
            metrics.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=lag)
