"""A poller below one vCPU's memory keeps its threads to one core (``kontur_relay.cpu``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kontur_relay import cpu
from kontur_relay.settings import Env

ROOT = Path(__file__).resolve().parents[2]
# The handler module imported as Lambda imports it, then a thread started as a run starts its own.
IMPORT_AND_START_A_THREAD = """
import json, os, runpy, threading
runpy.run_path("functions/extern_poller/app.py")
seen = []
thread = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
thread.start()
thread.join()
print(json.dumps({"main": sorted(os.sched_getaffinity(0)), "thread": seen[0]}))
"""

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core here: nothing to keep to")


def cores_after_import(memory_mb: str) -> dict[str, list[int]]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "layers/relay"), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory_mb}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_START_A_THREAD],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, list[int]] = json.loads(done.stdout.splitlines()[-1])
    return result


@needs_two_cores
def test_at_512_mb_the_poller_and_the_threads_it_starts_run_on_one_core() -> None:
    cores = cores_after_import("512")
    assert len(cores["main"]) == 1
    assert cores["thread"] == cores["main"]


@needs_two_cores
def test_at_a_full_vcpu_or_more_the_poller_keeps_every_core() -> None:
    everything = sorted(os.sched_getaffinity(0))
    assert cores_after_import("1769") == {"main": everything, "thread": everything}
    assert cores_after_import("3008") == {"main": everything, "thread": everything}


@needs_two_cores
def test_a_sandbox_refusing_the_affinity_costs_a_warning_not_the_poller(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(pid: int, cores: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    assert cpu.keep_to_one_core(Env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"})) is None
    assert "Threads not kept to one core at 512 MB" in caplog.text
