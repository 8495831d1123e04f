"""What one run came to, for one feed (``engine.Relay``) or for many (``fleet.run.Fleet``): its
outcome, its report for the logs, and its metrics, recorded in one place for both.

Metrics carry the kind of feed and nothing finer (``observability``); a run over many feeds adds
what it found among them (``FleetFigures``), under the names the alarms and the dashboard read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kontur_relay.domain.fleet.model import Found, Turn
from kontur_relay.domain.model import Page
from kontur_relay.domain.pages import Progress
from kontur_relay.domain.ports import RequestBudget
from kontur_relay.observability import MetricUnit, count_error, for_kind, lag_seconds, metrics


class Outcome(StrEnum):
    CAUGHT_UP = "caught_up"  # the feed had nothing more
    OUT_OF_TIME = "out_of_time"  # stopped reading to finish inside the invocation's time
    LEASE_BUSY = "lease_busy"  # another run of this feed holds the lease
    LOST_RACE = "lost_race"  # another run took the lease over; this run stepped aside
    STOPPED = "stopped"  # the feed is halted until an operator resumes it
    WAITING = "waiting"  # Kontur asked to be left alone until a time still ahead
    FAILED = "failed"  # an error ended the run; the cursor stays at the last fully published page


@dataclass(frozen=True)
class Requests:
    """Requests to Kontur: ``sent`` (retries and token requests included), those refused with a
    429, and those sent as background work."""

    sent: int = 0
    throttled: int = 0
    background: int = 0

    @classmethod
    def of(cls, budget: RequestBudget) -> Requests:
        counts = budget.counts
        return cls(counts.requests, counts.throttled, counts.background)

    def since(self, before: Requests) -> Requests:
        return Requests(self.sent - before.sent, self.throttled - before.throttled, self.background - before.background)


@dataclass
class FleetFigures:
    """What a run over many feeds found among them, beside its events."""

    kind: str
    #: What the kind calls its feeds in the run's report (Diadoc: ``boxes``).
    noun: str = "feeds"
    #: The budget's requests per second: what its use and reconciliation's share are shares of.
    per_second: int = 0
    registered: int = 0
    due: int = 0
    polled: set[str] = field(default_factory=set)
    with_events: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: int = 0
    #: Each feed's backlog as its latest turn found it.
    backlogs: dict[str, int] = field(default_factory=dict)
    oldest_overdue: float = 0.0
    duplicates: int = 0
    recovered: int = 0
    reconciled: int = 0
    checked: int = 0


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
    #: The run's requests to Kontur, where its budget counts them.
    requests: Requests | None = None
    #: A run over many feeds: what it found among them.
    fleet: FleetFigures | None = None

    def add(self, progress: Progress, page: Page) -> None:
        """Count a page the run relayed."""
        self.pages += 1
        self.events += len(page.events)
        self.backlog = page.backlog
        self.cursor_after = progress.state.position
        self.newest_event_time = progress.newest_event_time

    def turned(self, turn: Turn[Any]) -> None:
        """Count a feed's turn in a run over many."""
        fleet = self._fleet
        fleet.polled.add(turn.feed)
        self.events += turn.events
        if turn.events:
            fleet.with_events.add(turn.feed)
        if turn.error is not None:
            fleet.failed[turn.feed] = turn.error
            count_error(turn.error, fleet.kind)
        if turn.backlog is not None:
            fleet.backlogs[turn.feed] = turn.backlog
        fleet.duplicates += turn.duplicates

    def found(self, found: Found) -> None:
        """Count a piece of background work in a run over many feeds."""
        fleet = self._fleet
        fleet.recovered += found.recovered
        fleet.duplicates += found.duplicates
        fleet.checked += int(found.check)
        fleet.reconciled += int(not found.check)
        if found.error is not None:
            fleet.failed[found.feed] = found.error
            count_error(found.error, fleet.kind)

    @property
    def _fleet(self) -> FleetFigures:
        if self.fleet is None:
            raise TypeError(f"the run of {self.feed} is a run of one feed")
        return self.fleet

    def share(self, requests: int) -> float:
        """``requests`` as a share (0..1, unbounded) of what the budget allowed in the run."""
        capacity = (self.fleet.per_second if self.fleet else 0) * self.seconds
        return requests / capacity if capacity > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        if self.fleet is not None:
            return self._fleet_dict(self.fleet)
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

    def _fleet_dict(self, fleet: FleetFigures) -> dict[str, object]:
        background = self.requests.background if self.requests else 0
        return {
            "kind": fleet.kind,
            "outcome": self.outcome.value,
            fleet.noun: fleet.registered,
            "due": fleet.due,
            "polled": len(fleet.polled),
            "with_events": len(fleet.with_events),
            "events": self.events,
            "failed": len(fleet.failed),
            "stopped": fleet.stopped,
            "oldest_overdue_seconds": round(fleet.oldest_overdue, 1),
            "duplicates": fleet.duplicates,
            "recovered": fleet.recovered,
            "reconciled": fleet.reconciled,
            "checked": fleet.checked,
            "reconciliation_requests": background,
            "reconciliation_share": round(self.share(background), 3),
        }

    def record(self, kind: str) -> None:
        """The run's metrics, as ``tests/metric_contract.py`` lists them for the kind."""
        for_kind(kind)
        failed = self.error is not None
        if failed:
            count_error(self.error or "unexpected", kind)
        fleet = self.fleet
        ok = not failed and self.outcome in (Outcome.CAUGHT_UP, Outcome.OUT_OF_TIME)
        counts = {
            "RunSucceeded": int(ok),
            "RunFailed": int(failed),
            "StoppedFeeds": fleet.stopped if fleet else int(self.outcome is Outcome.STOPPED),
            "EventsPublished": self.events,
        }
        if self.requests is not None:
            counts |= {"KonturRequests": self.requests.sent, "KonturThrottled": self.requests.throttled}
        for name, value in counts.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=self.seconds * 1000)
        backlog = sum(fleet.backlogs.values()) if fleet else self.backlog
        if backlog is not None:
            metrics.add_metric(name="Backlog", unit=MetricUnit.Count, value=backlog)
        # Many feeds' lag is the oldest overdue poll's: no metric is per feed.
        lag = fleet.oldest_overdue if fleet else lag_seconds(self.newest_event_time)
        if lag is not None:
            metrics.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=lag)
        if fleet is not None:
            self._record_fleet(fleet)

    def _record_fleet(self, fleet: FleetFigures) -> None:
        requests = self.requests or Requests()
        # The contract's names, from when Diadoc's boxes were the only feeds of a many-feed run.
        counts = {
            "BoxesPolled": len(fleet.polled),
            "BoxesWithEvents": len(fleet.with_events),
            "EventsRecovered": fleet.recovered,
            "DuplicatesSuppressed": fleet.duplicates,
            "BoxesReconciled": fleet.reconciled,
            "ReconciliationRequests": requests.background,
        }
        for name, value in counts.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(name="OldestOverdueSeconds", unit=MetricUnit.Seconds, value=fleet.oldest_overdue)
        for name, part in (("BudgetUsed", requests.sent), ("ReconciliationShare", requests.background)):
            percent = round(min(self.share(part), 1.0) * 100, 1)
            metrics.add_metric(name=name, unit=MetricUnit.Percent, value=percent)
