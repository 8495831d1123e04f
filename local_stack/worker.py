"""A function's local container: a process that loads the handler once and runs each invocation the
scheduler sends it, with a Lambda-like context.

Kept free of heavy imports: a worker starts (spawns) in well under the time a cold start takes.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from local_stack.context import LocalContext


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    arn: str
    code_uri: str
    #: ``module.attribute``, as in template.yaml.
    handler: str
    memory_mb: int
    #: Directories on sys.path after the code (a layer's /opt/python).
    layers: tuple[str, ...]
    environment: dict[str, str]
    log_path: str


def _load(spec: WorkerSpec) -> Callable[[Any, Any], Any]:
    module_name, _, attribute = spec.handler.rpartition(".")
    path = Path(spec.code_uri) / f"{module_name.replace('.', '/')}.py"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"no handler module {module_name} at {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    handler: Callable[[Any, Any], Any] = getattr(module, attribute)
    return handler


def run_worker(conn: Connection, spec: WorkerSpec) -> None:
    """Receive ``(request_id, event, budget_seconds)``; answer ``("ok", result)`` or
    ``("error", type, message)``. Returns when the scheduler closes its end of the pipe."""
    # The terminal's Ctrl-C reaches the whole process group; the scheduler decides when a worker ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # Handlers log and print EMF metrics to stdout, as in Lambda; here that is the function's log file.
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # Asked before a run is killed at its Timeout: where every thread was goes to the function's log.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    os.environ.update(spec.environment)
    # Lambda's task root, then the layers' /opt/python.
    sys.path[:0] = [spec.code_uri, *spec.layers]
    handler: Callable[[Any, Any], Any] | None = None
    while True:
        try:
            request_id, event, budget = conn.recv()
        except (EOFError, OSError):
            return  # the scheduler is gone, and so is this container
        try:
            if handler is None:
                handler = _load(spec)
            # As in Lambda, the init phase (imports, module scope) is not part of the Timeout.
            context = LocalContext(
                spec.name,
                budget,
                arn=spec.arn,
                memory_mb=spec.memory_mb,
                request_id=request_id,
                log_stream_name=f"local/{os.getpid()}",
            )
            answer: tuple[Any, ...] = ("ok", handler(event, context))
        except Exception as error:  # noqa: BLE001 - Lambda reports any exception as the invocation's error
            traceback.print_exc()
            answer = ("error", type(error).__name__, str(error))
        try:
            conn.send(answer)
        except OSError:
            return
