"""The services a benchmark measures against, each in a process of its own so that none of them
spends the measured process's CPU: DynamoDB Local (Java), moto's server (SNS, SQS), a stand-in for
every sink that costs only its round trip (``benchmarks.sinks``), and Kontur (the identity and
Extern simulators over HTTP, plus a small control server to generate events)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

import requests

from benchmarks.sinks import serve_sinks
from local_stack.services import moto_server
from local_stack.simulators.base import Request, Response, Simulator
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.identity import IdentitySimulator

#: The integrator the relay reads the feed as.
CLIENT_ID = "feed-relay-bench"
#: Round trips injected on every call (seconds), as a Lambda in the same Region would see them.
KONTUR_PAGE_SECONDS = 0.050
SNS_CALL_SECONDS = 0.020
DYNAMODB_CALL_SECONDS = 0.010
#: Bytes of one Extern event as JSON: a realistic event is ~600; the brief's load is ~2 KB.
EVENT_BYTES = 2048
_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Kontur:
    """Where the Extern feed is served and how to read it."""

    extern_url: str
    control_url: str
    token: str

    def generate(self, count: int) -> list[str]:
        """Append ``count`` events to the feed now; their ids."""
        answer = requests.post(f"{self.control_url}/generate", params={"count": count}, timeout=60)
        answer.raise_for_status()
        return list(answer.json()["ids"])

    def end(self) -> str:
        """The cursor of a reader that has read everything."""
        return str(_get(f"{self.control_url}/end")["end"])

    def feed_requests(self) -> int:
        """``GET /v1/events`` requests the server has answered so far."""
        return int(_get(f"{self.control_url}/requests")["count"])


def _get(url: str) -> Any:
    answer = requests.get(url, timeout=30)
    answer.raise_for_status()
    return answer.json()


class _Control(Simulator):
    """The benchmark's own side door into the Extern simulator: no injected latency, not journaled
    by Extern, so that it changes nothing a relay sees or is counted for."""

    name = "bench-control"

    def __init__(self, extern: ExternSimulator) -> None:
        super().__init__()
        self.extern = extern
        self.route("POST", "/generate", lambda r: Response.json({"ids": extern.generate(int(r.query["count"]))}))
        self.route("GET", "/end", lambda r: Response.json({"end": extern.end_id}))
        self.route("GET", "/requests", self._requests)

    def _requests(self, request: Request) -> Response:
        return Response.json({"count": len(self.extern.calls("/v1/events"))})


def _padded(extern: ExternSimulator, size: int) -> None:
    """Every event the simulator generates grows to ``size`` bytes with a key the relay has never
    heard of (relayed verbatim in ``data``), in Cyrillic as Kontur's own texts are: 2 bytes a letter."""
    generate = extern.docflows.next_event

    def next_event(accounts: Any) -> Any:
        account, docflow, event = generate(accounts)
        missing = size - len(json.dumps({**event, "id": "0000000_800", "comment": ""}, ensure_ascii=False).encode())
        event["comment"] = ("Отчётность сдана " * (missing // 16 + 1))[: max(missing // 2, 0)]
        return account, docflow, event

    extern.docflows.next_event = next_event  # type: ignore[method-assign]


def _serve_kontur(endpoint: Connection, stop: Event, events: int, event_bytes: int) -> None:
    with IdentitySimulator(token_lifetime=24 * 3600) as identity, ExternSimulator(identity, seed=11) as extern:
        extern.add_integrator(CLIENT_ID, "bench-api-key", username="svc@bench.example", password=secrets.token_hex(8))
        _padded(extern, event_bytes)
        extern.setup(CLIENT_ID, accounts=3, backlog=events)
        extern.load.latency = KONTUR_PAGE_SECONDS
        with _Control(extern) as control:
            token = identity.issue("svc@bench.example", CLIENT_ID)
            endpoint.send(Kontur(extern.url, control.url, token))
            stop.wait()


def _serve_moto(endpoint: Connection, stop: Event) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as url:
        endpoint.send(url)
        stop.wait()


@contextmanager
def in_a_process(target: Callable[..., None], *args: Any, what: str) -> Iterator[Any]:
    """Run ``target(endpoint, stop, *args)`` in a spawned process; yield what it sends first."""
    receiver, sender = _SPAWN.Pipe(duplex=False)
    stop = _SPAWN.Event()
    process = _SPAWN.Process(target=target, args=(sender, stop, *args), daemon=True, name=what)
    process.start()
    try:
        if not receiver.poll(120):
            raise RuntimeError(f"{what} did not start within 120 s")
        yield receiver.recv()
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()


def kontur(events: int, event_bytes: int = EVENT_BYTES) -> Any:
    """The Extern feed with ``events`` events waiting, in a process of its own; yields ``Kontur``."""
    return in_a_process(_serve_kontur, events, event_bytes, what="Kontur simulators")


def moto() -> Any:
    """moto's server in a process of its own (as in AWS, the server's work is not the client's)."""
    return in_a_process(_serve_moto, what="moto server")


def sink_stand_in() -> Any:
    """Each sink's round trip and nothing else, over HTTP in a process of its own (``benchmarks.sinks``)."""
    return in_a_process(serve_sinks, SNS_CALL_SECONDS, what="sink stand-in")


class RoundTrips:
    """Holds every call of a botocore client back by a fixed round trip, and counts the calls by
    operation. The wait happens in ``before-send``, where the call would be on the wire: threads
    calling in parallel wait in parallel, as they would for AWS."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: Counter[str] = Counter()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._count)
        client.meta.events.register("before-send", self._wait)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _wait(self, **_: Any) -> None:
        time.sleep(self.seconds)
