"""How long a page takes here and now, so that a run begins no page it cannot finish in time.

A page is three steps: its read (Kontur), its publishing (the sink) and its cursor write (the
store). Each is timed as it happens, and a page is taken to last the sum of the longest of each
step's last few in this run. A run begins a page only if that page, and the one still
being published beside it when pipelined, end before its safety margin: however slowly Kontur or AWS
answers, the run returns before Lambda's deadline, and the page it did not begin is the next run's.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

STEPS = ("read", "publish", "write")


class Pace:
    """The steps' recent durations. Shared by every feed a poller relays (a Diadoc box's first page
    is judged by its neighbours' pace), so safe to use from several threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, samples: int = 20) -> None:
        self.clock = clock
        self._recent = {step: deque[float](maxlen=samples) for step in STEPS}
        self._lock = threading.Lock()

    def timed(self, step: str, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``work(*args, **kwargs)``, its duration recorded as one ``step``."""
        begun = self.clock()
        result = work(*args, **kwargs)
        with self._lock:
            self._recent[step].append(self.clock() - begun)
        return result

    def reset(self) -> None:
        """Forget what earlier runs saw: a run learns its own pace, and a slow spell of the past
        (a page that took longer than a whole invocation) never keeps a run from beginning."""
        with self._lock:
            for recent in self._recent.values():
                recent.clear()

    @property
    def page(self) -> float:
        """Seconds a page takes, as far as this run has seen (0 before its first)."""
        with self._lock:
            return sum(max(recent, default=0.0) for recent in self._recent.values())

    def fits(self, seconds_left: float, margin: float, *, pages: int = 1) -> bool:
        """Whether ``pages`` pages begun with ``seconds_left`` before the deadline end before ``margin``."""
        return seconds_left - pages * self.page >= margin
