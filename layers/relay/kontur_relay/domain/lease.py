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
from kontur_relay.domain.model import CursorState, Success
from kontur_relay.domain.ports import CursorStore

#: How long a lease lasts unless renewed. A dead run blocks its feed this long at most.
LEASE_SECONDS = 60.0
#: How often a run waiting for a handover tries the lease again.
HANDOVER_POLL_SECONDS = 0.5


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
        renew_below: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cursors = cursors
        self.feed = feed
        self.seconds = seconds
        self.renew_below = seconds / 2 if renew_below is None else renew_below
        self.clock = clock
        self.sleep = sleep
        self.owner = uuid.uuid4().hex
        self.until = 0.0

    def acquire(self, *, wait: float = 0.0) -> CursorState | None:
        """Take the lease; while another run holds it, try again for up to ``wait`` seconds (a run
        handing over). Returns the feed's cursor as of taking it, None if another run kept it."""
        give_up = self.clock() + wait
        while True:
            until = self.clock() + self.seconds
            state = self.cursors.acquire_lease(self.feed, self.owner, until)
            if state is not None:
                self.until = until
                return state
            if self.clock() >= give_up:
                return None
            self.sleep(HANDOVER_POLL_SECONDS)

    def keep(self) -> None:
        """Renew once less than ``renew_below`` seconds are left; LeaseLost when another run holds it now."""
        if self.until - self.clock() > self.renew_below:
            return
        self.confirm()

    def confirm(self) -> None:
        """Renew now: proof that the lease is still this run's (LeaseLost if another run holds it)."""
        until = self.clock() + self.seconds
        if not self.cursors.renew_lease(self.feed, self.owner, until):
            raise LeaseLost(f"the lease on {self.feed} lapsed and another run took it")
        self.until = until

    def release(self, success: Success | None = None) -> None:
        self.cursors.release_lease(self.feed, self.owner, success=success)
