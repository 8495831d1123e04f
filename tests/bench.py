"""``make bench``: relay throughput through the real engine, the real SnsPublisher on moto's SNS over
HTTP and the real DynamoCursorStore on DynamoDB Local; only the feed is an in-memory fake, so the
figures are the relay's own cost per event and per page, not Kontur's.

Every figure is compared with a baseline measured in the same run, on the same machine: PublishBatch
calls one after another (``parallel_batches=1``) with pages of 100. Absolute numbers say how fast moto
is on this machine; the ratios say what the publisher's parallel batches and larger pages buy.

    python -m tests.bench [--events 20000] [--repeat 3] [--budget 90]

The run stays inside ``--budget`` seconds of measuring: when a warm-up shows this machine too slow
for ``--events`` in every setup, it measures fewer events and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The layer is /opt/python in Lambda; here it is imported from the repository, as pytest does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "relay"))
# Before Powertools builds its singletons: no X-Ray daemon here, and a run's info lines are noise.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayBench")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay-bench")

import argparse
import logging
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import boto3
from botocore.config import Config

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.sns import SnsPublisher
from kontur_relay.domain.engine import Outcome, Relay
from kontur_relay.domain.model import Feed
from kontur_relay.observability import metrics
from local_stack.services import LOCAL_CREDENTIALS, aws_environment, dynamodb_local, moto_server
from local_stack.template import Stack, provision
from tests.fakes import FakeSource, cursor_at


@dataclass(frozen=True)
class Setup:
    name: str
    page_size: int
    parallel_batches: int


BASELINE = Setup("baseline: batches in sequence", 100, 1)
SETUPS = [
    BASELINE,
    Setup("parallel batches (default)", 100, 10),
    Setup("batches in sequence", 500, 1),
    Setup("parallel batches (default)", 500, 10),
]


@dataclass
class Measurement:
    setup: Setup
    seconds: float
    pages: int
    events: int
    #: CPU seconds this process spent (engine, envelopes, boto3, publisher threads): the relay's own
    #: cost, which a busy machine disturbs far less than the wall clock.
    cpu_seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def ms_per_page(self) -> float:
        return self.seconds * 1000 / self.full_pages

    @property
    def cpu_ms_per_page(self) -> float:
        return self.cpu_seconds * 1000 / self.full_pages

    @property
    def full_pages(self) -> float:
        return self.events / self.setup.page_size


def _serve_moto(endpoint: Connection, stop: Event) -> None:
    """moto's server in a process of its own, so that it does not share the relay's interpreter lock:
    as in AWS, the server's work does not slow the client down."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as url:
        endpoint.send(url)
        stop.wait()


@contextmanager
def moto_in_a_process() -> Iterator[str]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    stop = context.Event()
    process = context.Process(target=_serve_moto, args=(sender, stop), daemon=True)
    process.start()
    try:
        if not receiver.poll(60):
            raise RuntimeError("moto's server did not start within 60 s")
        yield str(receiver.recv())
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()


def measure(setup: Setup, events: int, table_name: str) -> Measurement:
    # A topic of its own: moto keeps what a topic was sent, and no setup should pay for another's.
    topic_arn = boto3.client("sns").create_topic(Name=f"bench-{uuid.uuid4().hex[:12]}")["TopicArn"]
    client_config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=16)
    store = DynamoCursorStore(boto3.resource("dynamodb", config=client_config).Table(table_name))
    publisher = SnsPublisher(
        boto3.client("sns", config=client_config), topic_arn, parallel_batches=setup.parallel_batches
    )
    feed = Feed(id=f"bench-{uuid.uuid4().hex[:8]}", kind="extern", source_uri="https://extern-api.bench/v1/events")
    relay = Relay(feed, FakeSource(events, page_size=setup.page_size), publisher, store, safety_margin=0)

    started, cpu_started = time.perf_counter(), time.process_time()
    report = relay.run(time_left=lambda: 3600.0)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    metrics.clear_metrics()  # a handler would have flushed them; here they only grow

    # The figures count only if everything arrived where the relay says it did.
    if report.outcome is not Outcome.CAUGHT_UP or report.events != events:
        raise RuntimeError(f"{setup}: the run ended {report.outcome} after {report.events} of {events} events")
    status = store.status(feed.id)
    if status is None or status.cursor != cursor_at(events) or status.events_relayed != events:
        raise RuntimeError(f"{setup}: the cursor table disagrees with the run: {status}")
    return Measurement(setup, seconds, report.pages, report.events, cpu_seconds)


def table(results: list[Measurement], baseline: Measurement) -> str:
    header = (
        f"{'setup':<32} {'page':>5} {'parallel':>8} {'seconds':>8} {'events/s':>9} {'ms/page':>8} "
        f"{'CPU ms/page':>12} {'vs baseline':>12}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        ratio = result.events_per_second / baseline.events_per_second
        lines.append(
            f"{result.setup.name:<32} {result.setup.page_size:>5} {result.setup.parallel_batches:>8} "
            f"{result.seconds:>8.2f} {result.events_per_second:>9,.0f} {result.ms_per_page:>8.1f} "
            f"{result.cpu_ms_per_page:>12.1f} {ratio:>11.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events a run, at most (default 20000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each setup; the median counts (default 3)")
    parser.add_argument("--budget", type=float, default=90, help="seconds of measuring at most (default 90)")
    args = parser.parse_args()

    started = time.perf_counter()
    print("Starting DynamoDB Local and moto's server ...", flush=True)
    with dynamodb_local() as dynamodb, moto_in_a_process() as moto:
        os.environ.update(aws_environment(moto, dynamodb))
        os.environ.update(LOCAL_CREDENTIALS)
        clients = {name: boto3.client(name) for name in ("dynamodb", "sns", "sqs", "s3", "secretsmanager")}
        stack = provision(Stack(name=f"bench{uuid.uuid4().hex[:6]}"), clients)
        table_name = stack.physical["CursorsTable"]

        measure(BASELINE, 1_000, table_name)  # warm up: imports, pools, the JVM's JIT
        warm = measure(BASELINE, 2_000, table_name)
        # Every setup is assumed no faster than the baseline, with a margin for a noisy machine.
        fits = int(args.budget * warm.events_per_second / (1.5 * args.repeat * len(SETUPS)))
        events = args.events if fits >= args.events else max(2_000, fits // 500 * 500)
        if events < args.events:
            print(f"  {args.events:,} events would not fit {args.budget:.0f} s on this machine: measuring {events:,}")
        runs: dict[Setup, list[Measurement]] = {setup: [] for setup in SETUPS}
        for round_ in range(args.repeat):
            # Interleaved, each round starting elsewhere, so that a slow spell of a shared machine
            # does not land on one setup only.
            for setup in SETUPS[round_ % len(SETUPS) :] + SETUPS[: round_ % len(SETUPS)]:
                runs[setup].append(measure(setup, events, table_name))
                print(f"  {setup.name}, page {setup.page_size}: {runs[setup][-1].seconds:.2f} s", flush=True)

    medians = [
        Measurement(
            setup,
            statistics.median(m.seconds for m in found),
            found[0].pages,
            found[0].events,
            statistics.median(m.cpu_seconds for m in found),
        )
        for setup, found in runs.items()
    ]
    print()
    print(
        f"Relay throughput: {events:,} events a run, median of {args.repeat}; "
        "SnsPublisher -> moto SNS over HTTP, DynamoCursorStore -> DynamoDB Local"
    )
    print(table(medians, medians[0]))
    load = ", ".join(f"{figure:.1f}" for figure in os.getloadavg())
    print(
        f"\n{time.perf_counter() - started:.0f} s in all, services included; "
        f"load average {load} on {os.cpu_count()} CPUs."
    )


if __name__ == "__main__":
    main()
