"""One poller for every registered Diadoc box, inside Kontur's request budget.

Each scheduled run scans the box registry once, then polls the boxes that are due, most overdue
first, a few at a time: never more requests in flight or per second than the budget allows (token
requests and retries included, a 429 pausing them all). Every box keeps the engine's guarantee as
it is (``Pages.drain``: publish, then move that box's cursor; ``turns``), so a crash anywhere loses
nothing. A box with a backlog gets a few pages a turn and queues again, so one busy box never
starves the others. A box whose poll found nothing waits twice as long as before, up to the maximum
interval; a poll that finds events brings it back to the minimum.

Reconciliation (``reconcile``) is the run's background work: a pass after the turn of a box with
recent events, a check of each box's newest event now and then. It runs one piece at a time, only
while no box is due, and its requests yield to every poll's in the budget; what it has not done
when the run ends waits for the next run.

Runs never overlap: one lease for the whole poller. A poll that finds nothing costs one write, its
next poll time; no metric is per box. A turn that fails with an error of every box (SNS, DynamoDB)
ends the run once the turns already running have ended, each failure logged with its box.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.errors import RelayError
from kontur_relay.domain.lease import LEASE_SECONDS, Lease, LeaseLost
from kontur_relay.domain.ports import CursorStore
from kontur_relay.feeds.diadoc.boxes import report_stored_twice
from kontur_relay.feeds.diadoc.polling import Polling, PollReport
from kontur_relay.feeds.diadoc.reconcile import Reconciler
from kontur_relay.feeds.diadoc.schedule import Schedule
from kontur_relay.feeds.diadoc.turns import BoxTurns
from kontur_relay.kontur.budget import Budget, RequestCounts
from kontur_relay.observability import MetricUnit, count_error, for_kind, logger, metrics

#: The poller's own row of the cursor table (``GET /feeds/diadoc``): its lease and its status.
LEASE = "diadoc"


@dataclass
class BoxPoller:
    budget: Budget
    cursors: CursorStore
    registry: DynamoBoxRegistry
    polling: Polling
    turns: BoxTurns
    reconciler: Reconciler
    safety_margin: float
    lease_seconds: float = LEASE_SECONDS
    clock: Callable[[], float] = time.time
    _started: float = 0.0
    #: Boxes whose check is not done yet, carried from one run to the next in this container.
    _checks: dict[str, None] = field(default_factory=dict)
    _checked_through: float | None = None

    def run(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, object]:
        started, before = self.clock(), replace(self.budget.counts)
        self._started = started
        self.turns.pace.reset()
        lease = Lease(self.cursors, LEASE, seconds=self.lease_seconds, clock=self.clock)
        report = PollReport()
        for_kind("diadoc")
        # This thread's lines name no box: the keys the engine sets on the shared logger are hidden.
        logger.thread_safe_append_keys(feed=None, cursor=None)
        if not lease.acquire():
            logger.info("Another run of the Diadoc poller holds its lease; skipping this tick")
            report.outcome = "lease_busy"
            return report.as_dict()
        try:
            self._poll(report, time_left, lease)
        except LeaseLost:
            report.outcome = "lost_race"
            logger.warning("The poller's lease lapsed and another run took it; this run stops")
        except Exception as error:
            report.outcome = "failed"
            count_error(error.kind if isinstance(error, RelayError) else "unexpected", "diadoc")
            logger.exception("The Diadoc poller's run failed; every box's cursor stays at its last published page")
            raise
        finally:
            lease.release()
            self._record(report, before, self.clock() - started)
            logger.info("Run ended", extra=report.as_dict())
        return report.as_dict()

    def _record(self, report: PollReport, before: RequestCounts, seconds: float) -> None:
        counts = self.budget.counts
        requests = counts.requests - before.requests
        report.reconciliation_requests = counts.background - before.background
        capacity = self.polling.per_second * seconds
        report.reconciliation_share = report.reconciliation_requests / capacity if capacity > 0 else 0.0
        figures = {
            "RunSucceeded": int(report.outcome in ("caught_up", "out_of_time")),
            "RunFailed": int(report.outcome == "failed"),
            "BoxesPolled": len(report.polled),
            "BoxesWithEvents": len(report.with_events),
            "EventsPublished": report.events,
            "Backlog": sum(report.backlogs.values()),
            "StoppedFeeds": report.stopped,
            "KonturRequests": requests,
            "KonturThrottled": counts.throttled - before.throttled,
            "EventsRecovered": report.recovered,
            "DuplicatesSuppressed": report.duplicates,
            "BoxesReconciled": report.reconciled,
            "ReconciliationRequests": report.reconciliation_requests,
        }
        for name, value in figures.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(name="OldestOverdueSeconds", unit=MetricUnit.Seconds, value=report.oldest_overdue)
        metrics.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=report.oldest_overdue)
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=seconds * 1000)
        used = requests / capacity if capacity > 0 else 0.0
        metrics.add_metric(name="BudgetUsed", unit=MetricUnit.Percent, value=round(min(used, 1.0) * 100, 1))
        share = round(min(report.reconciliation_share, 1.0) * 100, 1)
        metrics.add_metric(name="ReconciliationShare", unit=MetricUnit.Percent, value=share)

    def _poll(self, report: PollReport, time_left: Callable[[], float], lease: Lease) -> None:
        boxes = self.registry.registered()
        report_stored_twice(box.feed for box in boxes)
        now = self.clock()
        self.turns.stale()
        report.registered = len(boxes)
        report.stopped = sum(1 for box in boxes if box.cursor.stopped_reason)
        polled = [self._reconciling(box, now) for box in boxes if not box.cursor.stopped_reason]
        report.due = sum(1 for box in polled if box.next_poll_at <= now)
        # A box never polled yet is due from its registration, not from 1970.
        report.oldest_overdue = max(
            (now - box.next_poll_at for box in polled if 0 < box.next_poll_at <= now), default=0.0
        )
        schedule = Schedule(
            self.turns,
            self.reconciler,
            self.polling,
            report,
            started=self._started,
            safety_margin=self.safety_margin,
            clock=self.clock,
        )
        left = schedule.run(polled, self._due_checks(polled, now), time_left, lease)
        self._checks.update((feed, None) for feed in left)

    def _reconciling(self, box: RegisteredBox, now: float) -> RegisteredBox:
        """A box whose pass is due is polled now, its interval notwithstanding: a pass follows a turn
        that read the box to its end, so what it finds is late, not merely new."""
        if box.next_poll_at > now and self.reconciler.due(box, now, had_events=False):
            return replace(box, next_poll_at=now)
        return box

    def _due_checks(self, boxes: list[RegisteredBox], now: float) -> list[RegisteredBox]:
        """The boxes whose check fell due since the last run's (each at its own moment of the
        period), and those an earlier run of this container left undone."""
        through = self._checked_through if self._checked_through is not None else now - self.polling.period
        self._checked_through = now
        every = self.polling.check_every
        due = []
        for box in boxes:
            phase = int.from_bytes(hashlib.blake2b(box.feed.encode(), digest_size=4).digest()) % int(every)
            if box.feed in self._checks or (now - phase) // every > (through - phase) // every:
                due.append(box)
        self._checks.clear()
        return due
