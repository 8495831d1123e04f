"""The local stack's demo consumer with each sink: template.yaml provisioned in moto with that Sink,
the consumer the local stack starts for it, and events published by the sink the pollers build from
their environment; what the live view and the check count is what the sink delivered."""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from typing import Any

import pytest

from kontur_relay import sinks
from kontur_relay.domain.model import Feed
from kontur_relay.settings import Env
from local_stack import feeds
from local_stack.cli import Options
from local_stack.consumers import start_consumer, start_receiver
from local_stack.queues import QueueConsumer
from local_stack.runtime import FeedRun
from local_stack.template import Stack, provision
from tests.fakes import make_event

EXTERN = Feed(id="extern", kind="extern", source_uri="https://extern-api.test/v1/events")
REPORT, OTHER = "urn:docflow:fns534-report", "urn:docflow:stat-report"


def received(consumer: QueueConsumer, label: str) -> set[str]:
    queue = next(queue for queue in consumer.queues if queue.label == label)
    return {event for _, event in queue.received}


@pytest.mark.parametrize("sink", sinks.SINKS)
def test_the_demo_consumer_gets_every_event_of_each_sink_and_its_filtered_queue_only_what_matches(
    sink: str, aws: dict[str, Any]
) -> None:
    with ExitStack() as resources:
        options = Options(parameters={"Sink": sink})
        receiver = start_receiver(options, options.parameters, resources, print)
        stack = provision(Stack(name=f"c{uuid.uuid4().hex[:8]}", parameters=options.parameters), aws)
        runs = [FeedRun(feeds.KITS["extern"])]
        consumer = start_consumer(options, stack, runs, aws, resources, receiver=receiver)
        assert consumer is not None
        page = [make_event(i, docflow_type=REPORT if i % 3 == 0 else OTHER) for i in range(12)]

        sinks.from_env(Env(stack.sink()[1])).publish(EXTERN, page)

        everything = "webhook" if sink == "webhook" else "all"
        deadline = time.monotonic() + 10
        while received(consumer, everything) != {e.id for e in page} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received(consumer, everything) == {e.id for e in page}
        if sink in ("sns", "eventbridge"):  # the sinks that filter for their consumers
            consumer.settle(quiet=0.5, limit=5)
            reports = {e.id for e in page if e.attributes["docflow_type"] == REPORT}
            assert received(consumer, "extern-filtered") == reports
        assert all(queue.unreadable == 0 and queue.outside_filter == 0 for queue in consumer.queues)
        if receiver is not None:
            assert receiver.refused == [], "the receiver verified every signature with the stack's secret"
