"""What the Diadoc poller works with: its settings (the budget and the intervals), a box's turn, and
the report of a run."""

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

    @classmethod
    def from_env(cls, env: Env) -> Polling:
        polling = cls(
            max_in_flight=env.whole("DIADOC_MAX_IN_FLIGHT", 4),
            per_second=env.whole("DIADOC_MAX_REQUESTS_PER_SECOND", 20),
            min_interval=env.number("DIADOC_MIN_POLL_SECONDS", 60),
            max_interval=env.number("DIADOC_MAX_POLL_SECONDS", 3600),
            pages_per_turn=env.whole("DIADOC_PAGES_PER_TURN", 5),
            period=env.number("SCHEDULE_PERIOD_SECONDS", 60),
        )
        if not 0 < polling.min_interval <= polling.max_interval:
            raise ConfigurationError("DIADOC_MIN_POLL_SECONDS must be positive and at most DIADOC_MAX_POLL_SECONDS")
        return polling

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
        }
