"""One run of the Diadoc poller: its line of boxes, most overdue first, and its background work.

Turns of due boxes go first, as many at once as the workers allow. Background work (``reconcile``)
is taken one piece at a time and only while no box is due: a pass after the turn of a box with
recent events, the moment of an event a check found unpublished (once the box's own turn is done),
then the checks. A box never has a turn and background work at once (one memory, one cursor).

A turn that raises an error of every box (SNS, DynamoDB) is logged with its box; the run takes no
more work, lets what runs end (each failure logged too) and raises the first.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.domain.lease import Lease
from kontur_relay.feeds.diadoc.polling import Found, Polling, PollReport, Turn
from kontur_relay.feeds.diadoc.reconcile import Reconciler
from kontur_relay.feeds.diadoc.turns import BoxTurns
from kontur_relay.observability import logger


@dataclass(frozen=True)
class Task:
    """Background work for one box: a ``pass`` after its turn (``at``: when the turn began), a
    ``moment`` a check found unpublished (``ticks``), or a ``check``."""

    kind: str
    box: RegisteredBox
    at: float = 0.0
    ticks: int = 0


@dataclass
class Schedule:
    turns: BoxTurns
    reconciler: Reconciler
    polling: Polling
    report: PollReport
    started: float
    safety_margin: float
    clock: Callable[[], float] = time.time
    _waiting: list[tuple[float, str, RegisteredBox]] = field(default_factory=list)
    _work: deque[Task] = field(default_factory=deque)
    _running: dict[Future[Turn | Found], Task | RegisteredBox] = field(default_factory=dict)
    #: Boxes a check found with an unpublished newest event: its time, read after the box's turn.
    _unpublished: dict[str, int] = field(default_factory=dict)
    _reconciled: set[str] = field(default_factory=set)
    _failures: list[Exception] = field(default_factory=list)

    def run(
        self,
        boxes: Iterable[RegisteredBox],
        checks: Iterable[RegisteredBox],
        time_left: Callable[[], float],
        lease: Lease,
    ) -> list[str]:
        """Poll ``boxes`` as they fall due and check ``checks``; the boxes whose check was left undone."""
        self._waiting = [(box.next_poll_at, box.feed, box) for box in boxes]
        heapq.heapify(self._waiting)
        self._work = deque(Task("check", box) for box in checks)
        # Boxes are polled again in this run while it is within its schedule period; after that
        # the run finishes its turns and the next tick, with a fresh scan, takes over.
        period_end = self.clock() + self.polling.period
        workers = self.polling.max_in_flight * 2  # AWS calls of one box overlap Diadoc calls of another
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="box") as pool:
            while True:
                self._start_turns(pool, workers, time_left)
                if self._may_work(workers) and self._fits(time_left) and self.clock() < period_end:
                    self._start_background(pool)
                if not self._running:
                    if self._failures:
                        raise self._failures[0]
                    return [task.box.feed for task in self._work if task.kind == "check"]
                lease.keep()
                # Woken at least four times a lease, to renew it while a slow turn goes on.
                done, _ = wait(self._running, timeout=lease.seconds / 4, return_when=FIRST_COMPLETED)
                for future in done:
                    self._collect(future, period_end)

    def _start_turns(self, pool: ThreadPoolExecutor, workers: int, time_left: Callable[[], float]) -> None:
        waiting = self._waiting
        while not self._failures and waiting and waiting[0][0] <= self.clock() and len(self._running) < workers:
            if not self._fits(time_left):
                self.report.outcome = "out_of_time"
                return
            _, feed, box = heapq.heappop(waiting)
            if feed in self._busy():  # its background work ends first
                heapq.heappush(waiting, (self.clock() + 1, feed, box))
                return
            self._running[pool.submit(self.turns.turn, box, time_left, self.started)] = box

    def _fits(self, time_left: Callable[[], float]) -> bool:
        """Whether a turn begun now ends before the safety margin, at the pace pages go in this run."""
        return self.turns.pace.fits(time_left(), self.safety_margin)

    def _may_work(self, workers: int) -> bool:
        due = bool(self._waiting) and self._waiting[0][0] <= self.clock()
        background = any(isinstance(job, Task) for job in self._running.values())
        return bool(self._work) and not (self._failures or due or background) and len(self._running) < workers

    def _start_background(self, pool: ThreadPoolExecutor) -> None:
        busy = self._busy()
        for _ in range(len(self._work)):
            task = self._work.popleft()
            if task.box.feed not in busy:
                self._running[pool.submit(self._background, task)] = task
                return
            self._work.append(task)

    def _busy(self) -> set[str]:
        return {job.box.feed if isinstance(job, Task) else job.feed for job in self._running.values()}

    def _collect(self, future: Future[Turn | Found], period_end: float) -> None:
        job = self._running.pop(future)
        feed = job.box.feed if isinstance(job, Task) else job.feed
        try:
            result = future.result()
        except Exception as error:  # noqa: BLE001 - logged with its box; the run raises it
            logger.exception("A box's turn failed; the run ends once the others have", extra={"feed": feed})
            self._failures.append(error)
            return
        if isinstance(result, Turn):
            self._turned(result, period_end)
        elif isinstance(job, Task):
            self._found(job, result)

    def _turned(self, turn: Turn, period_end: float) -> None:
        self.report.add(turn)
        box = turn.again
        if box is None:
            return
        if box.next_poll_at < period_end:
            heapq.heappush(self._waiting, (box.next_poll_at, box.feed, box))
        if turn.caught_up_at is None:
            return
        if box.feed in self._unpublished:
            self._work.appendleft(Task("moment", box, ticks=self._unpublished.pop(box.feed)))
        if box.feed not in self._reconciled and self.reconciler.due(box, turn.caught_up_at, turn.events > 0):
            self._work.appendleft(Task("pass", box, at=turn.caught_up_at))

    def _found(self, task: Task, found: Found) -> None:
        self.report.found(found, check=task.kind == "check")
        if task.kind == "pass":
            self._reconciled.add(task.box.feed)
        if found.unpublished is not None:
            # Polled at once (the event may simply be new), then its moment read once the turn is done.
            self._unpublished[task.box.feed] = found.unpublished
            heapq.heappush(self._waiting, (self.clock(), task.box.feed, task.box))

    def _background(self, task: Task) -> Found:
        logger.thread_safe_append_keys(feed=task.box.feed, cursor=None)
        try:
            memory = self.turns.memory(task.box)
            if task.kind == "check":
                return self.reconciler.check(task.box, memory)
            if task.kind == "moment":
                return self.reconciler.moment(task.box, memory, task.ticks)
            return self.reconciler.reconcile(task.box, memory, task.at)
        finally:
            logger.thread_safe_append_keys(feed=None)
