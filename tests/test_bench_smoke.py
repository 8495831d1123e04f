"""``make bench`` kept runnable: the whole benchmark at toy sizes (its figures mean nothing here),
and the cold-import measurement against a stand-in of what ``sam build`` packs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.imports import FUNCTION, measure_imports

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_and_judges_every_target() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            *("--rounds", "1", "--events", "40", "--naive-events", "3", "--pages", "100"),
            *("--idle-ticks", "1", "--latency-minutes", "1", "--import-trials", "0"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "relay -> moto" in out
    for sink in ("sns", "eventbridge", "sqs", "webhook"):
        assert re.search(rf"^{sink} +100 +[\d,]+/", out, re.MULTILINE), f"no throughput of the {sink} sink"
    assert "0 DynamoDB writes" in out, "a caught-up feed's tick must write nothing"
    assert out.count("PASS") + out.count("FAIL") == 6
    assert "PollIntervalSeconds=5: runs" in out, "the latency of each minute, and how its runs ended"
    assert "load average" in out.lower()


def test_cold_imports_are_timed_in_fresh_interpreters_from_the_packed_tree(tmp_path: Path) -> None:
    (tmp_path / FUNCTION).mkdir()
    (tmp_path / FUNCTION / "app.py").write_text("import packed_dependency\nhandler = None\n")
    (tmp_path / "RelayLayer" / "python").mkdir(parents=True)
    (tmp_path / "RelayLayer" / "python" / "packed_dependency.py").write_text("VALUE = 1\n")

    times = measure_imports(tmp_path, "a stand-in build", trials=1)

    assert len(times.handler) == len(times.floor) == 1
    assert times.ratio > 0
    assert times.modules_in_layer == []
