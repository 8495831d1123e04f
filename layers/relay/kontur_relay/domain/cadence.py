"""Polling more often than the schedule: the sub-minute cadence of a feed's runs, and the handover
from one run to the next (``PollIntervalSeconds``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cadence:
    """Polling more often than the schedule: every ``every`` seconds, for one schedule ``period``
    (and ``handover`` more, so that the next run finds the lease about to come free, not free, and
    waits for it instead of leaving a gap while the scheduler's tick is late)."""

    every: float
    period: float = 60.0
    handover: float = 5.0

    @property
    def lease_seconds(self) -> float:
        return self.period + self.handover + 2 * self.every + 5

    @property
    def lease_terms(self) -> tuple[float, float]:
        """The lease's seconds, and the seconds left below which it is renewed: long enough for the
        whole cadence, renewed only if a page runs late, so that idle polls write nothing."""
        return self.lease_seconds, self.every + 5

    def lease_wait(self, started: float, now: float, to_spare: float) -> float:
        """How long a run that started at ``started`` waits for the lease: for as long as it could
        still poll in its own period, and no longer than it has ``to_spare``."""
        last_poll = started + self.period + self.handover - self.every
        return max(0.0, min(last_poll - now, to_spare))

    def polls_again(self, started: float, now: float) -> bool:
        """Whether a run that started at ``started`` polls once more before the next one takes over."""
        return now + self.every < started + self.period + self.handover
