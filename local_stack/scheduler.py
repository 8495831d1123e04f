"""The local scheduler: each function's schedules from template.yaml, accelerated, invoking the very
handler Lambda invokes, with a Lambda-like context.

Each function runs in a worker process of its own, kept warm between invocations like a Lambda
container. That is the simplest arrangement that is correct, for three reasons a thread would break:

- the environment is the function's own (template variables differ per function), with no union to
  keep compatible and no ``os.environ`` shared between concurrent handlers;
- Powertools' logger keys and metric sets are process-wide singletons: two handlers in one process
  at once would tag each other's log lines and flush each other's metrics;
- a handler that overruns its Timeout can be stopped the way Lambda stops it (the worker is killed
  and the next invocation starts cold), which a thread cannot.

Time is accelerated by ``speed``: a ``rate(1 minute)`` schedule ticks every ``60 / speed`` seconds
and a function's Timeout becomes ``Timeout / speed`` real seconds, which is what
``get_remaining_time_in_millis`` counts down. The handler lives on the real clock throughout (its
lease, its HTTP timeouts); the local stack scales the template's SafetyMarginSeconds by the same
factor so that a run keeps the same share of its time in reserve as it does when deployed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from local_stack.constants import function_arn
from local_stack.template import ROOT, Function
from local_stack.worker import WorkerSpec, run_worker

LAYER = ROOT / "layers" / "relay"
#: Lambda ends a run at its Timeout; a worker is given this much more for the answer to come back.
KILL_GRACE_SECONDS = 0.5
#: Time for a worker to write its threads' stacks before it is killed.
STACKS_SECONDS = 0.2
#: Lambda's limit for a cold start's init phase (imports and module scope), not counted in the Timeout.
INIT_SECONDS = 10.0


@dataclass(frozen=True)
class Invocation:
    """One invocation as the scheduler saw it."""

    function: str
    request_id: str
    started: float
    duration: float
    #: ``ok``, ``error`` (the handler raised or could not be loaded), ``timeout`` (killed at its
    #: Timeout) or ``stopped`` (killed because the local stack stopped).
    status: str
    result: Any = None
    error_type: str | None = None
    error: str | None = None
    cold: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class FunctionStats:
    """Counters per function, for the live view and the summary."""

    invocations: int = 0
    failures: int = 0
    timeouts: int = 0
    cold_starts: int = 0
    #: Invocations ended by the local stack's own stop, not by the function.
    stopped: int = 0
    #: Ticks that came while the previous invocation was still running (deployed: a LEASE_BUSY run).
    skipped_ticks: int = 0
    last: Invocation | None = None
    last_failure: Invocation | None = None


class _Container:
    """One worker process and its end of the pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.used = False

    def stop(self) -> None:
        self.conn.close()  # an idle worker reads EOF and returns
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.kill()

    def kill(self) -> None:
        """What Lambda does to a run past its Timeout: no chance to finish. Where it was is written to
        the function's log first (the worker's SIGUSR1), which Lambda does not, to show what overran."""
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGUSR1)
            time.sleep(STACKS_SECONDS)
        self.conn.close()
        self.process.kill()
        self.process.join(timeout=5)


class FunctionRunner:
    """A function's containers: worker processes started on demand, up to ``concurrency`` at once
    (deployed, Lambda runs concurrent invocations in containers of their own), kept warm between
    invocations, and replaced after one was killed at its timeout."""

    def __init__(
        self,
        function: Function,
        environment: Mapping[str, str],
        log_path: Path,
        *,
        speed: float = 1.0,
        concurrency: int = 1,
    ) -> None:
        self.function = function
        self.environment = dict(environment)
        self.log_path = log_path
        self.speed = speed
        self.concurrency = max(1, concurrency)
        self.stats = FunctionStats()
        #: Set by the scheduler when stopping: an invocation still running gets ``abort_grace`` more.
        self.aborting = threading.Event()
        self.abort_grace = 5.0
        self._abort_started = 0.0
        self._available = threading.Condition()
        self._idle: list[_Container] = []
        self._containers: list[_Container] = []
        #: Containers running or being started: never more than ``concurrency``.
        self._slots = 0
        self._running = 0
        self._context = multiprocessing.get_context("spawn")

    @property
    def name(self) -> str:
        return self.environment.get("AWS_LAMBDA_FUNCTION_NAME", self.function.logical_id)

    @property
    def budget(self) -> float:
        """Real seconds an invocation may take: the function's Timeout, accelerated."""
        return self.function.timeout / self.speed

    @property
    def busy(self) -> bool:
        return self._running > 0

    def invoke(self, event: Any, *, cancel: threading.Event | None = None) -> Invocation | None:
        """Run the handler on ``event`` in a free container (waiting while ``concurrency`` are busy);
        None if ``cancel`` was set before one was free."""
        with self._available:
            while not self._idle and self._slots >= self.concurrency:
                self._available.wait()
            if cancel is not None and cancel.is_set():
                return None
            container = self._idle.pop() if self._idle else None
            if container is None:
                self._slots += 1
            self._running += 1
        try:
            if container is None:
                container = self._start()
            invocation = self._invoke(container, event)
        finally:
            with self._available:
                self._running -= 1
                if container is not None and container.process.is_alive():
                    self._idle.append(container)
                else:
                    self._slots -= 1
                    if container in self._containers:
                        self._containers.remove(container)
                self._available.notify()
        return invocation

    def _start(self) -> _Container:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=run_worker,
            args=(
                child,
                WorkerSpec(
                    name=self.name,
                    arn=function_arn(self.name),
                    code_uri=str(self.function.code_uri),
                    handler=self.function.handler,
                    memory_mb=self.function.memory_size,
                    layers=(str(LAYER),),
                    environment=self.environment,
                    log_path=str(self.log_path),
                ),
            ),
            name=f"lambda-{self.function.logical_id}",
            daemon=True,
        )
        process.start()
        child.close()
        container = _Container(process, parent)
        with self._available:
            self._containers.append(container)
        self.stats.cold_starts += 1
        return container

    def _invoke(self, container: _Container, event: Any) -> Invocation:
        cold, container.used = not container.used, True
        request_id = str(uuid.uuid4())
        started = time.time()
        container.conn.send((request_id, event, self.budget))
        # Lambda gives the init phase 10 seconds of its own; a cold worker gets them here too.
        kill_at = started + self.budget + KILL_GRACE_SECONDS + (INIT_SECONDS if cold else 0.0)
        answer: Any = None
        while answer is None:
            limit = kill_at
            if self.aborting.is_set():
                limit = min(limit, self._abort_started + self.abort_grace)
            if container.conn.poll(min(0.1, max(0.0, limit - time.time()))):
                try:
                    answer = container.conn.recv()
                except (EOFError, OSError):
                    answer = ("error", "WorkerDied", f"the worker of {self.function.logical_id} exited")
                    container.stop()
            elif time.time() >= limit:
                elapsed = time.time() - started
                container.kill()
                if self.aborting.is_set() and elapsed < kill_at - started:
                    # Not the function's failure: the local stack is stopping and ended it.
                    answer = ("stopped", "Stopped", f"stopped with the local stack after {elapsed:.2f} s")
                else:
                    answer = ("timeout", "TimeoutError", f"Task timed out after {elapsed:.2f} seconds")
            elif not container.process.is_alive():
                answer = ("error", "WorkerDied", f"the worker exited with {container.process.exitcode}")
                container.stop()
        status = answer[0]
        invocation = Invocation(
            function=self.function.logical_id,
            request_id=request_id,
            started=started,
            duration=time.time() - started,
            status=status,
            result=answer[1] if status == "ok" else None,
            error_type=None if status == "ok" else answer[1],
            error=None if status == "ok" else answer[2],
            cold=cold,
        )
        self.stats.invocations += 1
        self.stats.last = invocation
        if status == "stopped":
            self.stats.stopped += 1
        elif not invocation.ok:
            self.stats.failures += 1
            self.stats.timeouts += status == "timeout"
            self.stats.last_failure = invocation
        return invocation

    def abort(self, grace: float) -> None:
        self._abort_started = time.time()
        self.abort_grace = grace
        self.aborting.set()

    def close(self) -> None:
        """Stop every container; call once no invocation runs (``Scheduler.stop`` sees to that)."""
        with self._available:
            containers, self._containers, self._idle, self._slots = self._containers, [], [], 0
        for container in containers:
            container.stop()


@dataclass
class Tick:
    """A scheduled invocation: which function, on which schedule, with which input."""

    function: str
    schedule: str
    period: float
    input: dict[str, Any]


@dataclass
class Scheduler:
    """Invokes each function on each of its schedules, every ``period / speed`` seconds.

    The first tick of each schedule comes at once, so a run shows activity from its first second.
    A schedule's ticks that pass while its own invocation still runs are skipped and counted:
    deployed, EventBridge would invoke anyway and the second run would find the lease busy.
    """

    runners: dict[str, FunctionRunner]
    speed: float
    on_invocation: Callable[[Invocation], None] = lambda invocation: None
    #: The functions whose schedules tick; None: all. The others are invoked only through ``invoke``.
    scheduled: set[str] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def ticks(self) -> list[Tick]:
        return [
            Tick(name, schedule.name, schedule.seconds / self.speed, schedule.input)
            for name, runner in self.runners.items()
            if self.scheduled is None or name in self.scheduled
            for schedule in runner.function.schedules
        ]

    def start(self) -> None:
        for tick in self.ticks():
            thread = threading.Thread(
                target=self._loop, args=(tick,), name=f"schedule-{tick.function}-{tick.schedule}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def invoke(self, function: str, event: Any) -> Invocation:
        """Invoke a function now (for HTTP fronts and tests), waiting for its worker to be free."""
        invocation = self.runners[function].invoke(event)
        assert invocation is not None
        self.on_invocation(invocation)
        return invocation

    def _loop(self, tick: Tick) -> None:
        runner = self.runners[tick.function]
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            # Another schedule of the same function (another Diadoc box) may hold the worker: this
            # tick waits for it, as a second Lambda container would have run it meanwhile.
            invocation = runner.invoke(tick.input, cancel=self.stop_event)
            if invocation is not None:
                self.on_invocation(invocation)
            next_at += tick.period
            now = time.monotonic()
            if next_at < now:  # overran: the ticks it covered are gone, as they would be deployed
                runner.stats.skipped_ticks += int((now - next_at) // tick.period)
                next_at = now
            self.stop_event.wait(next_at - now)

    def stop(self, grace: float = 5.0) -> None:
        """No more ticks; a running invocation gets ``grace`` seconds, then its worker is killed."""
        self.stop_event.set()
        for runner in self.runners.values():
            runner.abort(grace)
        for thread in self._threads:
            thread.join(timeout=grace + 15)
        for runner in self.runners.values():
            runner.close()


def lambda_environment(function: Function, name: str, log_level: str | None = None) -> dict[str, str]:
    """The variables the Lambda runtime sets beside the template's, as far as handlers notice them."""
    values = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "LAMBDA_TASK_ROOT": str(function.code_uri),
        "_HANDLER": function.handler,
    }
    if log_level:
        values["POWERTOOLS_LOG_LEVEL"] = log_level
    return values
