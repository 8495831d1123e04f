"""``python -m local_stack`` run as a user runs it, in a subprocess of its own session: what it prints,
read line by line while it runs, and what it leaves behind once it ended."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Self

from local_stack.template import ROOT

MARKER = "LOCAL_STACK_TEST_RUN"


class StackRun:
    """The stack running: ``wait_for`` a line while it runs, ``finish`` for its exit code and output.

    A run that hangs is killed after ``timeout`` seconds, so that the test fails with what it printed
    rather than stalls; first it prints every thread's stack (SIGUSR1), to show where it hung.
    """

    def __init__(
        self, *args: str, timeout: float = 150, environment: dict[str, str] | None = None, period: bool = True
    ) -> None:
        #: In the environment of every process the run starts, however it starts them: how ``survivors``
        #: finds what a run left behind, in any session or process group.
        self.marker = uuid.uuid4().hex
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_stack", "--view", "plain", *(("--period", "1") if period else ()), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: what it leaves behind is findable
            env={**(os.environ if environment is None else environment), MARKER: self.marker},
        )
        self.lines: list[str] = []
        self._more = threading.Condition()
        self._watchdog = threading.Timer(timeout, self._kill)
        self._watchdog.start()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._more:
                self.lines.append(line)
                self._more.notify_all()
        with self._more:
            self._more.notify_all()

    def _kill(self) -> None:
        os.kill(self.process.pid, signal.SIGUSR1)
        time.sleep(3)
        os.killpg(self.process.pid, signal.SIGKILL)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """The first line matching ``pattern`` (printed already, or within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._more:
            while True:
                for line in self.lines[seen:]:
                    if found := re.search(pattern, line):
                        return found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"no line matched {pattern!r}:\n{self.text}")
                self._more.wait(min(left, 1.0))

    def interrupt(self, signal_number: int = signal.SIGINT) -> None:
        self.process.send_signal(signal_number)

    def finish(self) -> tuple[int, str]:
        """Wait for the run to end: its exit code and everything it printed."""
        try:
            code = self.process.wait()
            self._reader.join()
        finally:
            self._watchdog.cancel()
        return code, self.text

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.finish()


def run_stack(
    *args: str, interrupt_after: str | None = None, timeout: float = 150, environment: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python -m local_stack`` to its end: (exit code, stdout and stderr, its marker for ``survivors``)."""
    with StackRun(*args, timeout=timeout, environment=environment) as run:
        if interrupt_after:
            run.wait_for(interrupt_after, timeout)
            run.interrupt()
        code, text = run.finish()
    return code, text, run.marker


def survivors(marker: str) -> list[str]:
    """Processes still alive from the run with this marker (Java, moto, workers, anything it started)."""
    needle = f"{MARKER}={marker}".encode()
    deadline = time.monotonic() + 10
    while True:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if needle not in (proc / "environ").read_bytes().split(b"\0"):
                    continue
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if state != "Z":
                found.append(f"{proc.name}: {command}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def checks(text: str) -> dict[str, tuple[int, int, int]]:
    """Per feed kit: (received, expected, missing) from the summary's check lines."""
    found = re.findall(r"(\w+) check: (\d+) of (\d+) generated events received, (\d+) missing", text)
    return {kit: (int(received), int(expected), int(missing)) for kit, received, expected, missing in found}
