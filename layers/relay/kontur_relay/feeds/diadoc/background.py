"""When Diadoc's boxes are reconciled: the relay's background work for them
(``domain.fleet.ports.Background``), done by ``reconcile.Reconciler``.

- a **pass** follows the turn of a box with recent events that read it to its end, once a run;
  a box whose pass is due is polled at once, its interval notwithstanding, so that its pass follows
  (what a pass finds is then late, not merely new);
- a **check** of each box's newest event falls due once every ``check_every``, each box at its own
  moment of that period; checks a run did not get to are the next run's (in this container);
- the **moment** of an event a check found never published is read after the box's turn (the box
  is polled at once: the event may simply be new).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.domain.fleet.model import Found, Task, Turn
from kontur_relay.feeds.diadoc.fleet import BoxFeeds
from kontur_relay.feeds.diadoc.polling import Reconciling
from kontur_relay.feeds.diadoc.reconcile import Reconciler


@dataclass
class Reconciliation:
    reconciler: Reconciler
    feeds: BoxFeeds
    settings: Reconciling
    #: Boxes whose check is not done yet, carried from one run to the next in this container.
    _checks: dict[str, None] = field(default_factory=dict)
    _checked_through: float | None = None
    #: In this run: boxes a check found with an unpublished newest event (its time), and those reconciled.
    _unpublished: dict[str, int] = field(default_factory=dict)
    _reconciled: set[str] = field(default_factory=set)

    def begin(self, boxes: Sequence[RegisteredBox], now: float) -> list[Task[RegisteredBox]]:
        """The checks due: those that fell due since the last run's (each box at its own moment of
        the period), and those an earlier run of this container left undone."""
        self._unpublished.clear()
        self._reconciled.clear()
        through = self._checked_through if self._checked_through is not None else now - self.settings.period
        self._checked_through = now
        every = self.settings.check_every
        due = []
        for box in boxes:
            phase = int.from_bytes(hashlib.blake2b(box.feed.encode(), digest_size=4).digest()) % int(every)
            if box.feed in self._checks or (now - phase) // every > (through - phase) // every:
                due.append(Task(box, "check", partial(self._check, box)))
        self._checks.clear()
        return due

    def urgent(self, box: RegisteredBox, now: float) -> bool:
        return self.reconciler.due(box, now, had_events=False)

    def after(self, turn: Turn[RegisteredBox]) -> list[Task[RegisteredBox]]:
        box, at = turn.again, turn.caught_up_at
        if box is None or at is None:
            return []
        tasks = []
        if box.feed not in self._reconciled and self.reconciler.due(box, at, turn.events > 0):
            tasks.append(Task(box, "pass", partial(self._pass, box, at)))
        if box.feed in self._unpublished:
            ticks = self._unpublished.pop(box.feed)
            tasks.append(Task(box, "moment", partial(self._moment, box, ticks)))
        return tasks

    def left(self, tasks: Sequence[Task[RegisteredBox]]) -> None:
        self._checks.update((task.member.feed, None) for task in tasks if task.kind == "check")

    def _pass(self, box: RegisteredBox, at: float) -> Found:
        found = self.reconciler.reconcile(box, self.feeds.memory(box), at)
        self._reconciled.add(box.feed)
        return found

    def _moment(self, box: RegisteredBox, ticks: int) -> Found:
        return self.reconciler.moment(box, self.feeds.memory(box), ticks)

    def _check(self, box: RegisteredBox) -> Found:
        found, unpublished = self.reconciler.check(box, self.feeds.memory(box))
        if unpublished is not None:
            self._unpublished[box.feed] = unpublished
        return found
