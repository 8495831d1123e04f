"""One run's line of feeds, most overdue first, and its background work.

Turns of due feeds go first, as many at once as the workers allow. Background work (``ports.Background``)
is taken one piece at a time and only while no feed is due, its requests in the budget's background
lane (behind every poll's, within ``Polling.share`` of it): what follows a turn that read its feed
to its end goes before what was due at the run's start. A feed never has a turn and background work
at once (one cursor, and whatever the kind keeps beside it).

A run is its tick's: it takes the feeds that fall due until ``Polling.handover`` before the next
tick, and begins nothing, due or not, that cannot end by then or before its safety margin, at the
pace its pages go. A run still holding the lease at the next tick would make that tick skip, and
every feed falling due in its minute wait for the tick after.

A turn that raises an error of every feed (the sink's, the store's) is logged with its feed; the run
takes no more work, lets what runs end (each failure logged too) and raises the first.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic

from kontur_relay.domain.fleet.model import Found, M, Polling, Task, Turn
from kontur_relay.domain.fleet.ports import Background
from kontur_relay.domain.fleet.turns import Turns
from kontur_relay.domain.lease import Lease
from kontur_relay.domain.ports import RequestBudget
from kontur_relay.domain.report import Outcome, RunReport
from kontur_relay.observability import logger


class Schedule(Generic[M]):
    def __init__(
        self,
        turns: Turns[M],
        background: Background[M],
        budget: RequestBudget,
        polling: Polling,
        report: RunReport,
        *,
        started: float,
        safety_margin: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.turns = turns
        self.background = background
        self.budget = budget
        self.polling = polling
        self.report = report
        self.started = started
        self.safety_margin = safety_margin
        self.clock = clock
        self._waiting: list[tuple[float, str, M]] = []
        self._work: deque[Task[M]] = deque()
        self._running: dict[Future[Turn[M] | Found], Task[M] | M] = {}
        self._failures: list[Exception] = []

    def run(
        self, line: Iterable[tuple[float, M]], work: Iterable[Task[M]], time_left: Callable[[], float], lease: Lease
    ) -> None:
        """Poll the feeds of ``line`` as they fall due (each at its time) and do ``work``; what is left
        undone goes back to the background."""
        self._waiting = [(at, member.feed, member) for at, member in line]
        heapq.heapify(self._waiting)
        self._work = deque(work)
        workers = self.polling.max_in_flight * 2  # AWS calls of one feed overlap Kontur calls of another
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="feed") as pool:
            while True:
                self._start_turns(pool, workers, time_left)
                if self._may_work(workers) and self._fits(time_left):
                    self._start_background(pool)
                if not self._running:
                    if self._failures:
                        raise self._failures[0]
                    self.background.left(list(self._work))
                    return
                lease.keep()
                # Woken at least four times a lease, to renew it while a slow turn goes on.
                done, _ = wait(self._running, timeout=lease.seconds / 4, return_when=FIRST_COMPLETED)
                for future in done:
                    self._collect(future)

    def _start_turns(self, pool: ThreadPoolExecutor, workers: int, time_left: Callable[[], float]) -> None:
        waiting = self._waiting
        while not self._failures and waiting and waiting[0][0] <= min(self.clock(), self.handover_at):
            if len(self._running) >= workers:
                return
            if not self._fits(time_left):
                self.report.outcome = Outcome.OUT_OF_TIME
                return
            _, feed, member = heapq.heappop(waiting)
            if feed in self._busy():  # its background work ends first
                heapq.heappush(waiting, (self.clock() + 1, feed, member))
                return
            self._running[pool.submit(self.turns.turn, member, time_left, self.started)] = member

    @property
    def handover_at(self) -> float:
        """When this run stops taking work, for the next tick's run to find the lease free."""
        return self.started + self.polling.period * (1 - self.polling.handover)

    def _fits(self, time_left: Callable[[], float]) -> bool:
        """Whether a turn begun now ends before the handover and the safety margin, at the pace
        pages go in this run."""
        pace = self.turns.pace
        return pace.fits(time_left(), self.safety_margin) and pace.fits(self.handover_at - self.clock(), 0)

    def _may_work(self, workers: int) -> bool:
        due = bool(self._waiting) and self._waiting[0][0] <= self.clock()
        background = any(isinstance(job, Task) for job in self._running.values())
        return bool(self._work) and not (self._failures or due or background) and len(self._running) < workers

    def _start_background(self, pool: ThreadPoolExecutor) -> None:
        busy = self._busy()
        for _ in range(len(self._work)):
            task = self._work.popleft()
            if task.member.feed not in busy:
                self._running[pool.submit(self._do, task)] = task
                return
            self._work.append(task)

    def _busy(self) -> set[str]:
        return {job.member.feed if isinstance(job, Task) else job.feed for job in self._running.values()}

    def _collect(self, future: Future[Turn[M] | Found]) -> None:
        job = self._running.pop(future)
        feed = job.member.feed if isinstance(job, Task) else job.feed
        try:
            result = future.result()
        except Exception as error:  # noqa: BLE001 - logged with its feed; the run raises it
            logger.exception(
                f"A {self.turns.noun}'s turn failed; the run ends once the others have", extra={"feed": feed}
            )
            self._failures.append(error)
            return
        if isinstance(result, Turn):
            self._turned(result)
        elif isinstance(job, Task):
            self._found(job, result)

    def _turned(self, turn: Turn[M]) -> None:
        self.report.turned(turn)
        member = turn.again
        if member is None:
            return
        if member.next_poll_at <= self.handover_at:
            heapq.heappush(self._waiting, (member.next_poll_at, member.feed, member))
        if turn.caught_up_at is not None:
            self._work.extendleft(reversed(self.background.after(turn)))

    def _found(self, task: Task[M], found: Found) -> None:
        self.report.found(found)
        if found.poll:
            # Polled at once (the event may simply be new); what follows its turn comes after it.
            heapq.heappush(self._waiting, (self.clock(), task.member.feed, task.member))

    def _do(self, task: Task[M]) -> Found:
        logger.thread_safe_append_keys(feed=task.member.feed, cursor=None)
        try:
            # Its requests to Kontur go behind every poll's, within their share of the budget.
            with self.budget.background(self.polling.share):
                return task.work()
        finally:
            logger.thread_safe_append_keys(feed=None)
