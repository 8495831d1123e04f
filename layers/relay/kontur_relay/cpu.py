"""A poller's threads on one core when its memory buys less than one vCPU.

Lambda lets a function compute only in proportion to its memory (one vCPU's time at 1,769 MB, 0.29
at the default 512 MB), yet may show it two cores even then. A run's threads (the reader
reading ahead, the sink's publishers) share one interpreter lock, and each time it passes to a
thread waiting on the other core the hand-over costs CPU of that small share. Kept on one core
they lose no time they could have had, and under a 512 MB quota the relay spent 0.35 ms of CPU an
event instead of 0.40 and relayed a fifth more (docs/benchmarks.md).
"""

from __future__ import annotations

import os

from kontur_relay.observability import logger
from kontur_relay.settings import Env

#: Lambda's CPU: one vCPU's time at this many MB, proportionally less below.
FULL_VCPU_MB = 1769


def keep_to_one_core(env: Env | None = None) -> int | None:
    """Below one vCPU's share (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), move this process's threads,
    and every thread they start, to one core; the core, or None where nothing was moved. Call it
    while the process has only the thread calling (the handler module's import): an affinity is a
    thread's own, inherited by the threads it starts."""
    memory = (env or Env()).whole("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", FULL_VCPU_MB)
    cores = os.sched_getaffinity(0)
    if memory >= FULL_VCPU_MB or len(cores) < 2:
        return None
    # Which core does not matter in Lambda; spread by process, those sharing a machine (the local
    # stack's) do not all crowd onto one.
    core = sorted(cores)[os.getpid() % len(cores)]
    try:
        os.sched_setaffinity(0, {core})
    except OSError as error:
        # Only slower where the sandbox refuses it: the runs themselves are unchanged.
        logger.warning(f"Threads not kept to one core at {memory} MB; runs go on, spending more CPU: {error}")
        return None
    return core
