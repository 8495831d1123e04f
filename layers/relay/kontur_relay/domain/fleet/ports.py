"""What the many-feed loop talks to besides the engine's ports: the registry of a kind's feeds, and
the kind's background work. Adapters implement them (Diadoc's boxes, its reconciliation); tests fake them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kontur_relay.domain.fleet.model import M, Plug, Poll, Task, Turn


class FeedRegistry(Protocol[M]):
    """The feeds of a many-feed kind: where each stands, what relays it, what its polls write."""

    def scheduled(self) -> Sequence[M]:
        """Every registered feed with its cursor and its schedule, read once a run."""
        ...

    def plug(self, member: M) -> Plug:
        """The feed's source and publisher: the same Plug while the feed's settings stay (the
        engine keeps what it built for it)."""
        ...

    def polled(self, member: M, poll: Poll) -> M:
        """A turn's poll of ``member`` (the feed as the run read it), in one write; the feed as it
        stands after it. Nothing is written for a feed removed meanwhile."""
        ...

    def dropped(self, member: M) -> int:
        """Events of the feed dropped as published before (served again), since last asked."""
        ...


class Background(Protocol[M]):
    """Work a many-feed run does for its feeds beside their polls (reconciliation). The run takes it
    one piece at a time, only while no feed is due, and its requests yield to the polls' in the budget."""

    def begin(self, members: Sequence[M], now: float) -> list[Task[M]]:
        """A run begins over ``members`` (the feeds it polls): the work due at once, in order."""
        ...

    def urgent(self, member: M, now: float) -> bool:
        """Whether the feed is polled now, its interval notwithstanding, for the work its turn brings."""
        ...

    def after(self, turn: Turn[M]) -> list[Task[M]]:
        """The work to follow a turn that read its feed to its end, before any other, in order."""
        ...

    def left(self, tasks: Sequence[Task[M]]) -> None:
        """The work the run ended before taking (a kind may carry some of it to its next run)."""
        ...
