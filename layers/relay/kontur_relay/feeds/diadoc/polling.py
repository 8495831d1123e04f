"""What the Diadoc poller works with: its settings (the budget, the intervals, reconciliation), a
box's turn, and the report of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.observability import count_error
from kontur_relay.settings import Env


@dataclass(frozen=True)
class Polling:
    """How the boxes share the budget and how often each is polled (the Diadoc* template parameters)."""

    max_in_flight: int = 4
    per_second: int = 20
    min_interval: float = 60.0
    max_interval: float = 3600.0
    pages_per_turn: int = 5
    #: The schedule's period: how long one run goes on polling boxes again.
    period: float = 60.0
    #: How far back a box's reconciliation reads by time (DiadocReconcileWindowSeconds).
    window: float = 3600.0
    #: How often a box with events in the window is reconciled (DiadocReconcileEverySeconds).
    reconcile_every: float = 300.0
    #: How often each box's newest event is checked (DiadocLastEventCheckSeconds).
    check_every: float = 21600.0
    #: The share of the per-second budget reconciliation may take (DiadocReconcileShare / 100).
    share: float = 0.1

    @classmethod
    def from_env(cls, env: Env) -> Polling:
        polling = cls(
            max_in_flight=env.whole("DIADOC_MAX_IN_FLIGHT", 4),
            per_second=env.whole("DIADOC_MAX_REQUESTS_PER_SECOND", 20),
            min_interval=env.number("DIADOC_MIN_POLL_SECONDS", 60),
            max_interval=env.number("DIADOC_MAX_POLL_SECONDS", 3600),
            pages_per_turn=env.whole("DIADOC_PAGES_PER_TURN", 5),
            period=env.number("SCHEDULE_PERIOD_SECONDS", 60),
            window=env.number("DIADOC_RECONCILE_WINDOW_SECONDS", 3600),
            reconcile_every=env.number("DIADOC_RECONCILE_EVERY_SECONDS", 300),
            check_every=env.number("DIADOC_LAST_EVENT_CHECK_SECONDS", 21600),
            share=env.whole("DIADOC_RECONCILE_SHARE", 10, high=100) / 100,
        )
        if not 0 < polling.min_interval <= polling.max_interval:
            raise ConfigurationError("DIADOC_MIN_POLL_SECONDS must be positive and at most DIADOC_MAX_POLL_SECONDS")
        if min(polling.window, polling.reconcile_every, polling.check_every) <= 0:
            raise ConfigurationError("DIADOC_RECONCILE_* and DIADOC_LAST_EVENT_CHECK_SECONDS must be positive")
        return polling

    @property
    def memory_seconds(self) -> float:
        """How long a box remembers what it published: a pass reads back a window and a period,
        and a pass may come late; twice that."""
        return 2 * (self.window + self.reconcile_every)

    def next_interval(self, previous: float, had_events: bool) -> float:
        if had_events or previous <= 0:
            return self.min_interval
        return min(previous * 2, self.max_interval)


@dataclass(frozen=True)
class Turn:
    """What one turn of a box came to."""

    feed: str
    events: int = 0
    #: The box with its new state, to poll again in this run when it falls due.
    again: RegisteredBox | None = None
    backlog: int | None = None
    error: str | None = None
    #: Events dropped because the box had published them before (served again).
    duplicates: int = 0
    #: When the turn began, if it read the box to its end: what a reconciliation after it may trust.
    caught_up_at: float | None = None


@dataclass(frozen=True)
class Found:
    """What one piece of reconciliation came to: a pass over a box's window, or a check of its newest event."""

    feed: str
    recovered: int = 0
    duplicates: int = 0
    #: A check found the box's newest event never published: its time (ticks), for a pass of its own.
    unpublished: int | None = None
    error: str | None = None


@dataclass
class PollReport:
    """One run of the poller, for its log line and its metrics."""

    outcome: str = "caught_up"
    registered: int = 0
    due: int = 0
    polled: set[str] = field(default_factory=set)
    with_events: set[str] = field(default_factory=set)
    events: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    stopped: int = 0
    #: Each box's backlog as its latest turn found it.
    backlogs: dict[str, int] = field(default_factory=dict)
    oldest_overdue: float = 0.0
    duplicates: int = 0
    recovered: int = 0
    reconciled: int = 0
    checked: int = 0
    #: Requests reconciliation sent, and its share of the run's per-second budget (0..1).
    reconciliation_requests: int = 0
    reconciliation_share: float = 0.0

    def add(self, turn: Turn) -> None:
        self.polled.add(turn.feed)
        self.events += turn.events
        if turn.events:
            self.with_events.add(turn.feed)
        if turn.error is not None:
            self.failed[turn.feed] = turn.error
            count_error(turn.error, "diadoc")
        if turn.backlog is not None:
            self.backlogs[turn.feed] = turn.backlog
        self.duplicates += turn.duplicates

    def found(self, found: Found, *, check: bool) -> None:
        self.recovered += found.recovered
        self.duplicates += found.duplicates
        self.checked += int(check)
        self.reconciled += int(not check)
        if found.error is not None:
            self.failed[found.feed] = found.error
            count_error(found.error, "diadoc")

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": "diadoc",
            "outcome": self.outcome,
            "boxes": self.registered,
            "due": self.due,
            "polled": len(self.polled),
            "with_events": len(self.with_events),
            "events": self.events,
            "failed": len(self.failed),
            "stopped": self.stopped,
            "oldest_overdue_seconds": round(self.oldest_overdue, 1),
            "duplicates": self.duplicates,
            "recovered": self.recovered,
            "reconciled": self.reconciled,
            "checked": self.checked,
            "reconciliation_requests": self.reconciliation_requests,
            "reconciliation_share": round(self.reconciliation_share, 3),
        }
