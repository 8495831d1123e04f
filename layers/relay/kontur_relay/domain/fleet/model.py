"""What the many-feed loop works with: its settings, a feed as its registry holds it, and what a
feed's turn and a piece of background work come to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from kontur_relay.domain.model import CursorState, Feed
from kontur_relay.domain.ports import Publisher, Source


class Scheduled(Protocol):
    """A feed as a many-feed registry holds it: its cursor and when it is polled next."""

    @property
    def feed(self) -> str: ...

    @property
    def cursor(self) -> CursorState: ...

    @property
    def next_poll_at(self) -> float:
        """Epoch seconds; 0 for a feed never polled (due from its registration)."""
        ...

    @property
    def interval(self) -> float:
        """The interval its last poll chose; 0 before its first."""
        ...


M = TypeVar("M", bound=Scheduled)


@dataclass(frozen=True)
class Polling:
    """How many feeds share one request budget, and how often each is polled."""

    max_in_flight: int = 4
    per_second: int = 20
    min_interval: float = 60.0
    max_interval: float = 3600.0
    pages_per_turn: int = 5
    #: The schedule's period: how long one run goes on polling feeds again.
    period: float = 60.0
    #: The end of the period (a share of it: 5 s of 60) in which a run begins nothing, so that it has
    #: ended when the next tick's run starts; one still holding the lease then would cost that tick.
    handover: float = 1 / 12
    #: The share (0..1) of the per-second budget background work may take: its requests go through
    #: the budget's background lane, behind every poll's.
    share: float = 0.1

    def next_interval(self, previous: float, had_events: bool) -> float:
        """A poll that found nothing doubles the wait, up to the maximum; one with events ends it."""
        if had_events or previous <= 0:
            return self.min_interval
        return min(previous * 2, self.max_interval)


@dataclass(frozen=True)
class Plug:
    """What relays one feed of many: the feed, its source and its publisher (each kind's own)."""

    feed: Feed
    source: Source
    publisher: Publisher


@dataclass(frozen=True)
class Poll:
    """What a turn writes of its feed, in one write: its schedule, and what operators see of the poll."""

    next_poll_at: float
    interval: float
    had_events: bool
    #: The cursor as the turn left it; None when the turn failed.
    state: CursorState | None = None
    #: When the turn began.
    began: float = 0.0
    backlog: int | None = None
    backlog_capped: bool = False
    error: str | None = None
    #: Stop the feed (402/403) if its cursor is still at this version: an operator's resume since stands.
    stop_at: int | None = None


@dataclass(frozen=True)
class Turn(Generic[M]):
    """What one turn of a feed came to."""

    feed: str
    events: int = 0
    #: The feed with its new state, to poll again in this run when it falls due.
    again: M | None = None
    backlog: int | None = None
    error: str | None = None
    #: Events dropped because the feed had published them before (served again).
    duplicates: int = 0
    #: When the turn began, if it read the feed to its end: what work after it may trust.
    caught_up_at: float | None = None


@dataclass(frozen=True)
class Found:
    """What one piece of background work came to: a reconciliation pass over a feed, or a check."""

    feed: str
    recovered: int = 0
    duplicates: int = 0
    #: A check (of a feed's newest event), not a pass: counted apart.
    check: bool = False
    #: The feed is to be polled at once (a check found its newest event never published).
    poll: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Task(Generic[M]):
    """A piece of background work for one feed, done on a worker thread, never beside the feed's turn."""

    member: M
    #: The work's own name (``pass``, ``check``): what its kind makes of what the run left undone.
    kind: str
    work: Callable[[], Found]
