"""A cold start's imports: the Extern poller's handler module as ``sam build`` packs it, against the
floor every Python Lambda that calls AWS pays (``import boto3`` and one client).

Each figure is a fresh interpreter. The packed layer is imported as Lambda would: ``/opt`` is
read-only there, so nothing is compiled once and cached; bytecode writing is off here for the same
reason. boto3 itself comes from this environment, as the runtime provides it. The layer's compiled
extensions are built for arm64 and do not load on another machine (pure-Python fallbacks do).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTION = "ExternPollerFunction"

_TIMED = """
import sys, time
started = time.perf_counter()
{body}
print(time.perf_counter() - started)
"""
_HANDLER = "sys.path[:0] = {paths!r}\nimport app"
_FLOOR = "import boto3\nboto3.client('sns', region_name='us-east-1')"


@dataclass(frozen=True)
class ImportTimes:
    handler: list[float]
    floor: list[float]
    build: str
    modules_in_layer: list[str]

    @property
    def ratio(self) -> float:
        return statistics.median(self.handler) / statistics.median(self.floor)


def packed_build(build_dir: Path | None = None) -> tuple[Path, str]:
    """The directory ``sam build`` wrote: the repository's own if it has the function, else a fresh
    build in a temporary directory. Raises RuntimeError when it cannot be built."""
    existing = ROOT / ".aws-sam" / "build"
    if build_dir is None and (existing / FUNCTION / "app.py").exists():
        return existing, f"reused {existing.relative_to(ROOT)}"
    target = build_dir or Path(tempfile.mkdtemp(prefix="bench-sam-build-"))
    sam = shutil.which("sam")
    if sam is None:
        raise RuntimeError("sam is not on PATH")
    done = subprocess.run(  # noqa: S603 - our own build, arguments fixed
        [sam, "build", "--build-dir", str(target), "--cache-dir", str(target) + "-cache", FUNCTION],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
        check=False,
    )
    if done.returncode != 0 or not (target / FUNCTION / "app.py").exists():
        raise RuntimeError(f"sam build failed: {(done.stderr or done.stdout)[-600:]}")
    return target, f"sam build into {target}"


def _time(code: str, env: dict[str, str]) -> float:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own code
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def measure_imports(build: Path, how: str, trials: int) -> ImportTimes:
    layer = build / "RelayLayer" / "python"
    paths = [str(build / FUNCTION), str(layer)]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONDONTWRITEBYTECODE": "1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_SERVICE_NAME": "kontur-feed-relay",
        "POWERTOOLS_METRICS_NAMESPACE": "KonturFeedRelay",
        # As deployed: Tracing is off unless the Tracing parameter turns it on.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    handler_code = _TIMED.format(body=_HANDLER.format(paths=paths))
    floor_code = _TIMED.format(body=_FLOOR)
    handler, floor = [], []
    for _ in range(trials):  # interleaved: a busy spell lands on both
        handler.append(_time(handler_code, env))
        floor.append(_time(floor_code, env))
    shadowing = sorted(
        name for name in ("boto3", "botocore", "s3transfer", "urllib3") if (layer / name / "__init__.py").exists()
    )
    return ImportTimes(handler, floor, how, shadowing)
