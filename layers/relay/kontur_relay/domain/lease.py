"""A run's lease on a feed: short, renewed as the run goes on, taken over once it lapses.

A lease that lasted the function's whole Timeout would block a feed for minutes after a run died;
this one lasts ``LEASE_SECONDS`` (about one schedule period) and the run renews it whenever half of
it is gone. A run that dies blocks its feed only until its lease lapses, whatever the Timeout.

The owner is one per run: a write of the run's own that is retried after its answer was lost finds
its own name on the lease and succeeds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from kontur_relay.domain.errors import RelayError
from kontur_relay.domain.ports import CursorStore

#: How long a lease lasts unless renewed. A dead run blocks its feed this long at most.
LEASE_SECONDS = 60.0


class LeaseLost(RelayError):
    """The lease lapsed and another run took it: this run stops, having changed nothing since."""

    kind = "lease_lost"


class Lease:
    def __init__(
        self,
        cursors: CursorStore,
        feed: str,
        *,
        seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cursors = cursors
        self.feed = feed
        self.seconds = seconds
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self.until = 0.0

    def acquire(self) -> bool:
        until = self.clock() + self.seconds
        if not self.cursors.acquire_lease(self.feed, self.owner, until):
            return False
        self.until = until
        return True

    def keep(self) -> None:
        """Renew once half the lease is gone; LeaseLost when another run holds it now."""
        now = self.clock()
        if self.until - now > self.seconds / 2:
            return
        until = now + self.seconds
        if not self.cursors.renew_lease(self.feed, self.owner, until):
            raise LeaseLost(f"the lease on {self.feed} lapsed and another run took it")
        self.until = until

    def release(self) -> None:
        self.cursors.release_lease(self.feed, self.owner)
