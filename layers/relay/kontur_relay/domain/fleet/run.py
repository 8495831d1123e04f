"""Many feeds of one kind relayed by one poller, inside one request budget.

Each scheduled run reads the kind's registry of feeds once (``ports.FeedRegistry``), then polls the
feeds that are due, most overdue first, a few at a time (``schedule``): never more requests in
flight or per second than the budget allows (token requests and retries included, a 429 pausing
them all). Every feed keeps the engine's guarantee as it is (``Pages.drain``: publish, then move
that feed's cursor; ``turns``), so a crash anywhere loses nothing. A feed with a backlog gets a few
pages a turn and queues again, so one busy feed never starves the others; a quiet one is polled
less and less often.

The kind's background work (``ports.Background``: Diadoc's reconciliation) runs one piece at a
time, only while no feed is due, and its requests yield to every poll's in the budget; what it has
not done when the run ends is the kind's to carry to the next run.

Runs never overlap: one lease for the whole poller, on the kind's own row of the cursor store. A
poll that finds nothing costs the one write of its schedule; no metric is per feed. A turn that
fails with an error of every feed (the sink's, the store's) ends the run once the turns already
running have ended, each failure logged with its feed. The run's report is the engine's
(``report.RunReport``), recorded as one feed's run is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic

from kontur_relay.domain.errors import RelayError
from kontur_relay.domain.fleet.model import M, Polling
from kontur_relay.domain.fleet.ports import Background, FeedRegistry
from kontur_relay.domain.fleet.schedule import Schedule
from kontur_relay.domain.fleet.turns import Turns
from kontur_relay.domain.lease import LEASE_SECONDS, Lease, LeaseLost
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.ports import CursorStore, RequestBudget
from kontur_relay.domain.report import FleetFigures, Outcome, Requests, RunReport
from kontur_relay.observability import for_kind, logger


@dataclass
class Fleet(Generic[M]):
    """The poller of every feed of one kind. Build it once per container and call ``run`` on each tick."""

    #: The kind: its metrics' dimension, and its own row of the cursor store (the lease, ``GET /feeds/<kind>``).
    kind: str
    feeds: FeedRegistry[M]
    background: Background[M]
    cursors: CursorStore
    budget: RequestBudget
    polling: Polling
    safety_margin: float
    lease_seconds: float = LEASE_SECONDS
    #: What the kind calls one feed and many, in the run's log lines and report.
    noun: tuple[str, str] = ("feed", "feeds")
    clock: Callable[[], float] = time.time
    #: How long a page takes in this run, learned from every feed's pages.
    pace: Pace = field(default_factory=Pace)

    def __post_init__(self) -> None:
        self.turns = Turns(
            self.feeds,
            self.cursors,
            self.polling,
            safety_margin=self.safety_margin,
            pace=self.pace,
            noun=self.noun[0],
            clock=self.clock,
        )

    def run(self, time_left: Callable[[], float]) -> RunReport:
        """Poll the feeds that are due until none is or fewer than ``safety_margin`` seconds are left.
        Raises the error that ended the run, after recording it."""
        started, before = self.clock(), Requests.of(self.budget)
        self.pace.reset()
        lease = Lease(self.cursors, self.kind, seconds=self.lease_seconds, clock=self.clock)
        figures = FleetFigures(self.kind, noun=self.noun[1], per_second=self.polling.per_second)
        report = RunReport(feed=self.kind, fleet=figures)
        for_kind(self.kind)
        # This thread's lines name no feed: the keys the engine sets on the shared logger are hidden.
        logger.thread_safe_append_keys(feed=None, cursor=None)
        poller = f"{self.kind.capitalize()} poller"
        if not lease.acquire():
            logger.info(f"Another run of the {poller} holds its lease; skipping this tick")
            report.outcome = Outcome.LEASE_BUSY
            return report
        try:
            self._poll(report, figures, time_left, lease, started)
        except LeaseLost:
            report.outcome = Outcome.LOST_RACE
            logger.warning(f"The {poller}'s lease lapsed and another run took it; this run stops")
        except Exception as error:
            report.outcome = Outcome.FAILED
            report.error = error.kind if isinstance(error, RelayError) else "unexpected"
            logger.exception(
                f"The {poller}'s run failed; every {self.noun[0]}'s cursor stays at its last published page"
            )
            raise
        finally:
            lease.release()
            report.seconds = self.clock() - started
            report.requests = Requests.of(self.budget).since(before)
            report.record(self.kind)
            logger.info("Run ended", extra=report.as_dict())
        return report

    def _poll(
        self, report: RunReport, figures: FleetFigures, time_left: Callable[[], float], lease: Lease, started: float
    ) -> None:
        members = self.feeds.scheduled()
        now = self.clock()
        figures.registered = len(members)
        figures.stopped = sum(1 for member in members if member.cursor.stopped_reason)
        polled = [member for member in members if not member.cursor.stopped_reason]
        line = [(self._due_at(member, now), member) for member in polled]
        figures.due = sum(1 for at, _ in line if at <= now)
        # A feed never polled yet is due from its registration, not from 1970.
        figures.oldest_overdue = max((now - at for at, _ in line if 0 < at <= now), default=0.0)
        schedule = Schedule(
            self.turns,
            self.background,
            self.budget,
            self.polling,
            report,
            started=started,
            safety_margin=self.safety_margin,
            clock=self.clock,
        )
        schedule.run(line, self.background.begin(polled, now), time_left, lease)

    def _due_at(self, member: M, now: float) -> float:
        """When the feed is due: now, its interval notwithstanding, if its background work waits for its turn."""
        if member.next_poll_at > now and self.background.urgent(member, now):
            return now
        return member.next_poll_at
