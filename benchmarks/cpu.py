"""CPU limits for the measured process: one core, or the CPU share Lambda gives a memory size.

Lambda's CPU is proportional to memory, one full vCPU at 1,769 MB, enforced as a quota of CPU time
per period. Here the same is done, in order of faithfulness: a cgroup v2 ``cpu.max``, a cgroup v1
``cpu.cfs_quota_us`` (both throttle only while the process computes), or, where neither is
writable, a duty cycle that stops and continues the process (cruder: it also stops a process that
is only waiting on the network, so it understates the throughput at a share).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from kontur_relay.cpu import FULL_VCPU_MB

#: The CFS period the quota is spread over (the kernel's default).
PERIOD_US = 100_000
_V2 = Path("/sys/fs/cgroup")
_V1 = Path("/sys/fs/cgroup/cpu")


def share_of(memory_mb: int) -> float:
    return min(memory_mb / FULL_VCPU_MB, 1.0)


@dataclass(frozen=True)
class Limit:
    """What the measured process may use: ``cpus`` (an affinity), or ``share`` of one CPU's time."""

    name: str
    cpus: tuple[int, ...] | None = None
    share: float | None = None
    memory_mb: int | None = None

    @classmethod
    def memory(cls, memory_mb: int) -> Limit:
        share = share_of(memory_mb)
        return cls(f"{memory_mb} MB ({share:.2f} vCPU)", share=share, memory_mb=memory_mb)


UNLIMITED = Limit("all cores")


def one_core() -> Limit:
    # The last CPU: the first is where interrupts and most other work land on a shared machine.
    return Limit("one core", cpus=(max(os.sched_getaffinity(0)),))


class Throttle:
    """Holds a process to ``share`` of one CPU; ``method`` says how (for the report)."""

    def __init__(self, pid: int, share: float) -> None:
        self.pid = pid
        self.share = share
        self._group: Path | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        quota = f"{round(share * PERIOD_US)}"
        for root, files, method in (
            (_V2, {"cpu.max": f"{quota} {PERIOD_US}"}, "cgroup v2 cpu.max"),
            (_V1, {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": quota}, "cgroup v1 cpu.cfs_quota_us"),
        ):
            group = self._cgroup(root, files)
            if group is not None:
                self._group, self.method = group, method
                return
        self.method = "SIGSTOP/SIGCONT duty cycle"
        self._thread = threading.Thread(target=self._cycle, name="duty-cycle", daemon=True)
        self._thread.start()

    def _cgroup(self, root: Path, files: dict[str, str]) -> Path | None:
        first = next(iter(files))
        if not (root / "cgroup.procs").exists() or (root == _V2 and not (root / "cgroup.controllers").exists()):
            return None
        group = root / f"kontur-bench-{uuid.uuid4().hex[:8]}"
        try:
            group.mkdir()
            if not (group / first).exists():
                group.rmdir()
                return None
            for name, value in files.items():
                (group / name).write_text(value)
            (group / "cgroup.procs").write_text(str(self.pid))
        except OSError:
            if group.exists():
                group.rmdir()
            return None
        return group

    def _cycle(self) -> None:
        on, off = self.share * PERIOD_US / 1e6, (1 - self.share) * PERIOD_US / 1e6
        try:
            while not self._stop.is_set():
                os.kill(self.pid, signal.SIGCONT)
                if self._stop.wait(on):
                    break
                os.kill(self.pid, signal.SIGSTOP)
                self._stop.wait(off)
        except ProcessLookupError:
            return
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._group is not None:
            # The process has ended (or is moved back to the root) before its group can go.
            parent = self._group.parent
            for pid in (self._group / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (parent / "cgroup.procs").write_text(pid)
            self._group.rmdir()
