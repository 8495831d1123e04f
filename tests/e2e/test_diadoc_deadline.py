"""The Diadoc poller (as ``feeds/diadoc/kind.py`` builds it) against the Diadoc simulator over HTTP,
the box registry and the cursors in DynamoDB Local, with SNS answering slowly: seconds a page.

What an operator relies on: however slowly AWS answers, a run returns before its invocation's
deadline, so Lambda never kills it mid-page (which would leave a page to publish again and the
run counted as failed); the boxes it did not reach are the next run's."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import boto3
import pytest

from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.model import FeedEvent
from kontur_relay.feeds.diadoc.boxes import feed_id, filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.kind import KIND
from kontur_relay.observability import metrics
from kontur_relay.settings import Env
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack
from tests.fakes import FakePublisher

pytestmark = pytest.mark.slow

#: The invocation's time (the function's Timeout, scaled down) and how close to it a run stops.
TIMEOUT = 8.0
MARGIN = "1"
#: What SNS takes to accept a page here: longer than the margin.
SLOW_PAGE = 2.5


@pytest.fixture
def sim(stack: Stack, aws: dict[str, Any]) -> Iterator[tuple[DiadocSimulator, dict[str, str]]]:
    with IdentitySimulator(token_lifetime=600) as identity, DiadocSimulator(identity, seed=13) as sim:
        name = f"diadoc-credentials-{uuid.uuid4().hex}"
        aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(sim.setup(boxes=0, backlog=0)))
        yield (
            sim,
            {
                "CURSORS_TABLE": stack.physical["CursorsTable"],
                "EVENT_MEMORY_TABLE": stack.physical["EventMemoryTable"],
                "EVENTS_TOPIC_ARN": stack.physical["EventsTopic"],
                "RELAY_SAFETY_MARGIN_SECONDS": MARGIN,
                "DIADOC_API_URL": sim.url,
                "DIADOC_CREDENTIALS_SECRET": name,
                "DIADOC_MIN_POLL_SECONDS": "0.001",
                "DIADOC_MAX_POLL_SECONDS": "0.002",
            },
        )


def register(sim: DiadocSimulator, registry: DynamoBoxRegistry, count: int, events: int) -> None:
    for _ in range(count):
        box = sim.add_box().id
        sim.set_access("relay@example.ru", box, None)
        sim.generate(box, events)
        feed = box_feed({"boxId": box, "limit": 20}, {"start": "oldest", "limit": 500})
        registry.register(
            feed_id(box),
            feed.stored(),
            filters_key(feed),
            by="test",
            expected_version=0,
            restart=False,
            first_poll_at=0,
        )


def test_with_sns_slowed_to_seconds_a_page_every_run_returns_before_its_deadline(sim, stack):
    simulator, environment = sim
    registry = DynamoBoxRegistry(boto3.resource("dynamodb").Table(stack.physical["CursorsTable"]))
    register(simulator, registry, 16, events=100)  # five pages a box: more than a run can do
    poller = KIND.poller(Env(environment))
    publisher = FakePublisher()

    def slow(events: Sequence[FeedEvent]) -> None:
        time.sleep(SLOW_PAGE)

    publisher.before_publish = slow
    poller.boxes.publisher = publisher

    outcomes = []
    for _ in range(2):
        deadline = time.monotonic() + TIMEOUT
        outcomes.append(poller.run({}, lambda: deadline - time.monotonic())["outcome"])  # noqa: B023 - called at once
        late = time.monotonic() - deadline
        assert late < 0, f"a run returned {late:.2f} s after its deadline"
        metrics.clear_metrics()
    assert outcomes == ["out_of_time", "out_of_time"], "the runs stopped for time, not for want of work"

    published = Counter(event.id for event in publisher.published)
    assert published, "the runs relayed"
    assert max(published.values()) == 1, "a page published twice"
    assert len(published) < 16 * 100, "the boxes not reached are the next run's"
