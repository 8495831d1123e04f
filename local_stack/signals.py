"""Signals while the stack runs: SIGINT and SIGTERM end a run in order, SIGUSR1 shows where every
thread is.
"""

from __future__ import annotations

import faulthandler
import signal
import time
import types
from collections.abc import Callable


def dump_stacks_on_sigusr1() -> None:
    """``kill -USR1 <pid>`` prints every thread's stack: how to see where a run that does not stop is."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)


class Interrupted(Exception):
    """SIGINT or SIGTERM during start-up."""


class Signals:
    """SIGINT and SIGTERM: during start-up they abort it, while running they end the run, and while
    stopping they are noted and otherwise ignored, so that clean-up (Java!) is never cut short."""

    def __init__(self, out: Callable[[str], None]) -> None:
        # A plain attribute, not a threading.Event: the handler runs in the main thread between two
        # bytecodes, possibly while that thread holds the Event's lock inside Event.wait, and
        # Event.set would then wait for that lock for ever.
        self.received: int | None = None
        self.phase = "starting"
        self._out = out
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        if self.received is not None:
            self._out(f"{signal.Signals(number).name} again: still stopping, please wait")
            return
        self.received = number
        if self.phase == "starting":
            self.phase = "stopping"
            raise Interrupted(signal.Signals(number).name)

    @property
    def stopped(self) -> bool:
        return self.received is not None

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if a signal comes."""
        deadline = time.monotonic() + seconds
        while not self.stopped and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def running(self) -> None:
        self.phase = "running"

    def stopping(self) -> None:
        self.phase = "stopping"

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    @property
    def exit_code(self) -> int:
        return 128 + self.received if self.received is not None else 0
