"""The measured process: the real relay, reading alone and a naive poller, one command at a time.

It runs apart from the services and from the process that orchestrates, so that its CPU time is its
own and a CPU limit applies to it alone. Clients and adapters are built once, as a warm Lambda
container keeps them; each measurement relays a feed of its own from the start of the log.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import boto3

from benchmarks.cpu import Limit
from benchmarks.latency import Latency, VirtualClock, measure_latency
from benchmarks.rig import DYNAMODB_CALL_SECONDS, SNS_CALL_SECONDS, Kontur, RoundTrips
from benchmarks.sinks import WEBHOOK_PATH
from kontur_relay import cpu, wiring
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.domain.cadence import Cadence
from kontur_relay.domain.engine import Outcome, Relay
from kontur_relay.domain.model import Feed
from kontur_relay.domain.ports import Publisher
from kontur_relay.feeds.extern.source import ExternSource, read_extern_error
from kontur_relay.kontur import client
from kontur_relay.kontur.auth import StaticCredential
from kontur_relay.kontur.session import session as http_session
from kontur_relay.observability import metrics
from kontur_relay.settings import Env
from kontur_relay.sinks import eventbridge, sns, sqs, webhook
from kontur_relay.sinks.message import message as sink_message
from kontur_relay.sinks.sns import SnsPublisher

_TOPIC = "arn:aws:sns:us-east-1:123456789012:"
#: What a DynamoDB call that writes is called: an idle tick must make none of them.
WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
#: What the deployed functions import, besides the runtime.
LAYER_LOCK = Path(__file__).resolve().parents[1] / "layers" / "relay" / "requirements.txt"


def as_deployed() -> dict[str, str]:
    """The environment that makes the measured process sign AWS calls as the deployed functions do.
    botocore signs with awscrt whenever it can import it; this environment has awscrt (for SAM CLI),
    the layer does not pack it, so a Lambda signs with botocore's own SigV4. The two differ in CPU
    (awscrt's was the slower here, by about a tenth of the publish path)."""
    return {} if "awscrt==" in LAYER_LOCK.read_text() else {"BOTO_DISABLE_CRT": "true"}


def signer() -> str:
    """How this process signs AWS calls (for the report)."""
    # Imported here: botocore decides at import, and the orchestrator sets BOTO_DISABLE_CRT only later.
    from botocore.compat import HAS_CRT  # noqa: PLC0415

    return "awscrt" if HAS_CRT else "botocore's SigV4"


@dataclass(frozen=True)
class Setup:
    """What the worker is given: where everything is, and its CPU limit."""

    kontur: Kontur
    table: str
    limit: Limit
    #: The sinks' stand-in's endpoint (``benchmarks.sinks``): the relay's own pace, as against AWS.
    sns_url: str
    publisher_threads: int | None = None


@dataclass(frozen=True)
class Sample:
    events: int
    seconds: float
    cpu_seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_ms_per_event(self) -> float:
        return self.cpu_seconds * 1000 / self.events


class Worker:
    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.kontur = setup.kontur
        self.sns_trips = RoundTrips(SNS_CALL_SECONDS)
        self.dynamodb_trips = RoundTrips(DYNAMODB_CALL_SECONDS)
        # The deployed clients (wiring's configuration). SNS is the stand-in, whose server holds
        # each call for its round trip; moto's, for comparison, with the round trip added here.
        os.environ["AWS_ENDPOINT_URL_SNS"] = setup.sns_url
        self.publisher = self._threads(sns.from_env(Env({"EVENTS_TOPIC_ARN": f"{_TOPIC}stand-in"})))
        del os.environ["AWS_ENDPOINT_URL_SNS"]
        self.sinks = other_sinks(setup.sns_url)
        self.to_moto = self._threads(sns.from_env(Env({"EVENTS_TOPIC_ARN": f"{_TOPIC}none"})))
        self.sns_trips.attach(self.to_moto.client)
        self.store = wiring.cursor_store(setup.table)
        self.dynamodb_trips.attach(self.store.table.meta.client)
        self.api = self._api()
        self.setup_sns = boto3.client("sns")  # topics are made without the round trips
        self.feed_uri = f"{self.kontur.extern_url}/v1/events"

    def _api(self) -> client.KonturApi:
        return client.KonturApi(
            self.kontur.extern_url,
            http_session(),
            StaticCredential({"Authorization": f"Bearer {self.kontur.token}"}),
            read_extern_error,
            name="Extern",
        )

    def _threads(self, publisher: SnsPublisher) -> SnsPublisher:
        if self.setup.publisher_threads is None:
            return publisher
        return SnsPublisher(publisher.client, publisher.topic_arn, parallel_batches=self.setup.publisher_threads)

    def _feed(self) -> Feed:
        return Feed(id=f"bench-{uuid.uuid4().hex[:10]}", kind="extern", source_uri=self.feed_uri)

    def _topic(self) -> str:
        # A topic of its own: moto keeps what a topic was sent, and no measurement should pay for another's.
        return str(self.setup_sns.create_topic(Name=f"bench-{uuid.uuid4().hex[:12]}")["TopicArn"])

    @staticmethod
    def _timed(work: Callable[[], int]) -> Sample:
        started, cpu_started = time.perf_counter(), time.process_time()
        events = work()
        return Sample(events, time.perf_counter() - started, time.process_time() - cpu_started)

    def relay(self, page: int, events: int, *, to_moto: bool = False, sink: str = "sns") -> Sample:
        publisher: Publisher = self.publisher if sink == "sns" else self.sinks[sink]
        if to_moto:
            self.to_moto.topic_arn = self._topic()
            publisher = self.to_moto
        relay = Relay(self._feed(), ExternSource(self.api, take=page), publisher, self.store, safety_margin=0)

        def run() -> int:
            report = relay.run(time_left=lambda: 3600.0)
            if report.outcome is not Outcome.CAUGHT_UP or report.events != events:
                raise RuntimeError(f"the relay ended {report.outcome} after {report.events} of {events} events")
            return report.events

        sample = self._timed(run)
        metrics.clear_metrics()  # a handler would have flushed them; here they only grow
        return sample

    def profile(self, page: int, events: int, top: int) -> str:
        """Where the relay's CPU goes: one run in this thread (no read-ahead, batches in sequence,
        so that cProfile, which follows one thread, sees everything), by own time."""
        publisher = SnsPublisher(self.publisher.client, self.publisher.topic_arn, parallel_batches=1)
        source = ExternSource(self.api, take=page)
        relay = Relay(self._feed(), source, publisher, self.store, safety_margin=0, pipelined=False)
        profiler = cProfile.Profile()
        profiler.runcall(relay.run, time_left=lambda: 3600.0)
        metrics.clear_metrics()
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return f"{events} events, page {page}\n" + text.getvalue()

    def eventbridge(self, page: int, events: int) -> Sample:
        return self.relay(page, events, sink="eventbridge")

    def sqs(self, page: int, events: int) -> Sample:
        return self.relay(page, events, sink="sqs")

    def webhook(self, page: int, events: int) -> Sample:
        return self.relay(page, events, sink="webhook")

    def signing(self) -> str:
        return signer()

    def relay_moto(self, page: int, events: int) -> Sample:
        """The relay publishing to moto's server, whose own CPU per message sets the pace here."""
        return self.relay(page, events, to_moto=True)

    def read(self, page: int, events: int) -> Sample:
        """The practical limit: the feed's pages read back to back, nothing else."""
        source = ExternSource(self.api, take=page)

        def run() -> int:
            cursor, read = None, 0
            while True:
                found = source.read_page(cursor)
                if not found.events:
                    break
                read += len(found.events)
                cursor = found.next_cursor
            if read != events:
                raise RuntimeError(f"read {read} of {events} events")
            return read

        return self._timed(run)

    def naive(self, page: int, events: int) -> Sample:
        """What a first attempt does: every event published alone, the cursor written after each."""
        source = ExternSource(self.api, take=page)
        feed, topic, table = self._feed(), self.publisher.topic_arn, self.store.table
        sns = self.publisher.client

        def run() -> int:
            cursor, done = None, 0
            while done < events:
                found = source.read_page(cursor)
                if not found.events:
                    break
                for event in found.events[: events - done]:
                    message = sink_message(feed, event)
                    sns.publish(TopicArn=topic, Message=message.body, MessageAttributes=message.message_attributes)
                    table.update_item(
                        Key={"feed": feed.id},
                        UpdateExpression="SET #position = :position",
                        ExpressionAttributeNames={"#position": "position"},
                        ExpressionAttributeValues={":position": event.id},
                    )
                    done += 1
                cursor = found.next_cursor
            return done

        return self._timed(run)

    def idle(self, ticks: int) -> dict[str, float]:
        """Scheduled ticks of a feed that has caught up: DynamoDB writes and reads, Kontur requests."""
        relay = Relay(self._feed(), ExternSource(self.api, take=500), self.publisher, self.store, safety_margin=0)
        relay.run(time_left=lambda: 300.0)  # catches up, and records the feed as checked
        calls, requests = dict(self.dynamodb_trips.calls), self.kontur.feed_requests()
        for _ in range(ticks):
            relay.run(time_left=lambda: 300.0)
        metrics.clear_metrics()
        after = self.dynamodb_trips.calls
        made = {name: after[name] - calls.get(name, 0) for name in after}
        return {
            "writes": sum(n for name, n in made.items() if name in WRITES) / ticks,
            "reads": sum(n for name, n in made.items() if name not in WRITES) / ticks,
            "requests": (self.kontur.feed_requests() - requests) / ticks,
        }

    def latency(self, interval: float, minutes: float, per_second: float, seed: int) -> Latency:
        """Events arriving without pause for ``minutes``, a run a minute (``benchmarks.latency``)."""
        feed = self._feed()
        cadence = Cadence(every=interval) if interval < 60 else None

        def container(clock: VirtualClock, stamped: Callable[[Publisher], Publisher]) -> Relay:
            # A warm container of its own: its own clients, as a concurrent invocation has.
            table = wiring.table(self.setup.table)
            self.dynamodb_trips.attach(table.meta.client)
            return Relay(
                feed,
                ExternSource(self._api(), take=100),
                stamped(self.publisher),
                DynamoCursorStore(table, clock=clock),
                cadence=cadence,
                clock=clock,
                sleep=clock.sleep,
            )

        return measure_latency(self.kontur, container, minutes=minutes, per_second=per_second, seed=seed)


def other_sinks(url: str) -> dict[str, Publisher]:
    """The other sinks as the pollers build them (their modules' ``from_env``), all at the stand-in."""
    variables = {"AWS_ENDPOINT_URL_EVENTBRIDGE": url, "AWS_ENDPOINT_URL_SQS": url}
    os.environ.update(variables)
    try:
        built: dict[str, Publisher] = {
            "eventbridge": eventbridge.from_env(Env({"EVENT_BUS_NAME": "bench"})),
            "sqs": sqs.from_env(Env({"EVENTS_QUEUE_URL": f"{url}/123456789012/bench"})),
        }
    finally:
        for name in variables:
            del os.environ[name]
    # The signing secret's value, as the pollers read it from Secrets Manager (once, then cached).
    built["webhook"] = webhook.WebhookPublisher(url + WEBHOOK_PATH, lambda: [b"bench-signing-key-of-24-b"])
    return built


def serve(connection: Connection, setup: Setup) -> None:
    """The worker process: apply the CPU limit, build once, then answer commands until told to stop."""
    if setup.limit.cpus is not None:
        os.sched_setaffinity(0, setup.limit.cpus)
    if setup.limit.memory_mb is not None:  # what a poller's import does at that memory size
        cpu.keep_to_one_core(Env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(setup.limit.memory_mb)}))
    worker = Worker(setup)
    connection.send("ready")
    while True:
        command, args = connection.recv()
        if command == "stop":
            return
        try:
            connection.send(("ok", getattr(worker, command)(*args)))
        except Exception as error:  # noqa: BLE001 - the orchestrator reports it and stops
            connection.send(("error", f"{command}{args}: {type(error).__name__}: {error}"))
