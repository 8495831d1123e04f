"""One poller for every registered Diadoc box, inside Kontur's request budget.

Each scheduled run scans the box registry once, then polls the boxes that are due, most overdue
first, a few at a time: never more requests in flight or per second than the budget allows (token
requests and retries included, a 429 pausing them all). Every box keeps the engine's guarantee as
it is (``Pages.drain``: publish, then move that box's cursor), so a crash anywhere loses nothing.
A box with a backlog gets a few pages a turn and queues again, so one busy box never starves the
others. A box whose poll found nothing waits twice as long as before, up to the maximum interval;
a poll that finds events brings it back to the minimum.

Runs never overlap: one lease for the whole poller. A poll that finds nothing costs one write, its
next poll time; no metric is per box.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.errors import ConfigurationError, CursorConflict, FeedError, FeedStopped, RelayError
from kontur_relay.domain.lease import LEASE_SECONDS, Lease, LeaseLost
from kontur_relay.domain.model import Feed
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.pages import Pages
from kontur_relay.domain.ports import CursorStore, Publisher
from kontur_relay.feeds.diadoc.boxes import filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.polling import Polling, PollReport, Turn
from kontur_relay.feeds.diadoc.source import DiadocSource
from kontur_relay.kontur.budget import Budget, RequestCounts
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import MetricUnit, count_error, for_kind, logger, metrics

#: The poller's own row of the cursor table (``GET /feeds/diadoc``): its lease and its status.
LEASE = "diadoc"


@dataclass
class BoxPoller:
    api: KonturApi
    budget: Budget
    version: str
    publisher: Publisher
    cursors: CursorStore
    registry: DynamoBoxRegistry
    polling: Polling
    safety_margin: float
    source_uri: Callable[[str], str]
    lease_seconds: float = LEASE_SECONDS
    clock: Callable[[], float] = time.time
    #: How long a page takes, learned from every box's pages: no turn begins that cannot end in time.
    pace: Pace = field(default_factory=Pace)
    _relays: dict[tuple[str, str], Pages] = field(default_factory=dict)
    _started: float = 0.0

    def run(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, object]:
        started, before = self.clock(), replace(self.budget.counts)
        self._started = started
        self.pace.reset()
        lease = Lease(self.cursors, LEASE, seconds=self.lease_seconds, clock=self.clock)
        report = PollReport()
        for_kind("diadoc")
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
        }
        for name, value in figures.items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(name="OldestOverdueSeconds", unit=MetricUnit.Seconds, value=report.oldest_overdue)
        metrics.add_metric(name="LagSeconds", unit=MetricUnit.Seconds, value=report.oldest_overdue)
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Milliseconds, value=seconds * 1000)
        used = requests / (self.polling.per_second * seconds) if seconds > 0 else 0.0
        metrics.add_metric(name="BudgetUsed", unit=MetricUnit.Percent, value=round(min(used, 1.0) * 100, 1))

    def _poll(self, report: PollReport, time_left: Callable[[], float], lease: Lease) -> None:
        boxes = self.registry.registered()
        now = self.clock()
        report.registered = len(boxes)
        report.stopped = sum(1 for box in boxes if box.cursor.stopped_reason)
        waiting = [(box.next_poll_at, box.feed, box) for box in boxes if not box.cursor.stopped_reason]
        heapq.heapify(waiting)
        report.due = sum(1 for at, _, _ in waiting if at <= now)
        # A box never polled yet is due from its registration, not from 1970.
        report.oldest_overdue = max((now - at for at, _, box in waiting if at > 0 and at <= now), default=0.0)
        # Boxes are polled again in this run while it is within its schedule period; after that
        # the run finishes its turns and the next tick, with a fresh scan, takes over.
        period_end = now + self.polling.period
        workers = self.polling.max_in_flight * 2  # AWS calls of one box overlap Diadoc calls of another
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="box") as pool:
            running: set[Future[Turn]] = set()
            while True:
                while waiting and waiting[0][0] <= self.clock() and len(running) < workers:
                    if not self.pace.fits(time_left(), self.safety_margin):
                        report.outcome = "out_of_time"
                        break
                    _, _, box = heapq.heappop(waiting)
                    running.add(pool.submit(self._turn, box, time_left))
                if not running:
                    return
                lease.keep()
                # Woken at least four times a lease, to renew it while a slow turn goes on.
                done, running = wait(running, timeout=lease.seconds / 4, return_when=FIRST_COMPLETED)
                for future in done:
                    turn = future.result()  # a deployment-wide failure (SNS, DynamoDB) ends the run
                    report.add(turn)
                    if turn.again is not None and turn.again.next_poll_at < period_end:
                        heapq.heappush(waiting, (turn.again.next_poll_at, turn.again.feed, turn.again))

    def _turn(self, box: RegisteredBox, time_left: Callable[[], float]) -> Turn:
        """A few pages of one box, and when it is polled next."""
        try:
            relay = self._relay(box)
            progress = relay.drain(box.cursor, time_left, max_pages=self.polling.pages_per_turn)
        except CursorConflict:
            # An operator moved the cursor since the scan: the next run reads it afresh.
            logger.info("A box's cursor moved since the scan; it is polled next run", extra={"feed": box.feed})
            return Turn(box.feed)
        except (FeedError, ConfigurationError) as error:
            # This box's trouble (its answer, its access, its payment, its settings), not the others'.
            logger.warning("A box's poll failed", extra={"feed": box.feed, "error": str(error)})
            self.registry.polled(
                box,
                next_poll_at=self._started + self.polling.min_interval,
                interval=self.polling.min_interval,
                had_events=False,
                error=f"{type(error).__name__}: {error}",
                stop=isinstance(error, FeedStopped),
            )
            return Turn(box.feed, error=error.kind)
        box = replace(box, cursor=progress.state)
        if not progress.caught_up:
            # More waits: the box stays due (a crash or the end of the run leaves it first in line
            # next time), and goes back in line behind the boxes already due in this run.
            next_poll_at, interval = self.clock(), box.interval or self.polling.min_interval
        else:
            interval = self.polling.next_interval(box.interval, progress.events > 0)
            # Counted from the run's start, not from this poll's end: a box polled late in a run is
            # due again at the tick an interval later, not one tick after that. A little jitter
            # (early, never late) keeps boxes registered together from staying in lockstep for ever.
            next_poll_at = self._started + interval * random.uniform(0.9, 1.0)
        self.registry.polled(
            box,
            next_poll_at=next_poll_at,
            interval=interval,
            had_events=progress.events > 0,
            backlog=progress.backlog,
            backlog_capped=progress.backlog_capped,
        )
        again = replace(box, next_poll_at=next_poll_at, interval=interval)
        return Turn(box.feed, progress.events, again=again, backlog=progress.backlog)

    def _relay(self, box: RegisteredBox) -> Pages:
        key = (box.feed, box.filters_key or "")
        if key not in self._relays:
            feed = box_feed({**(box.settings or {}), "boxId": box.box_id})
            if filters_key(feed) != (box.filters_key or ""):
                # Settings written by hand, not by the admin API: their cursor may not match them.
                logger.warning("A box's stored filters key does not match its settings", extra={"feed": box.feed})
            # Not pipelined: the boxes' turns already overlap each other within the budget, and a
            # page read ahead would spend budget on a page the turn may end before.
            self._relays[key] = Pages(
                Feed(id=box.feed, kind="diadoc", source_uri=self.source_uri(box.box_id)),
                DiadocSource(self.api, feed, version=self.version),
                self.publisher,
                self.cursors,
                safety_margin=self.safety_margin,
                pipelined=False,
                pace=self.pace,
            )
        return self._relays[key]
