"""The sub-minute cadence across the minute's handover, at the Extern simulator over HTTP with the
cursor in DynamoDB Local and SNS in moto: the Extern poller as ``feeds/extern/kind.py`` composes it,
two warm containers taking the scheduled ticks in turn, events arriving without pause.

What a user of ``PollIntervalSeconds`` relies on: every minute has a run polling, so an event waits
about one interval, also at the handover and also when the previous run is slow to hand over. Time is
scaled (a "minute" of a few seconds, the interval and the handover in the deployed proportion, 5 s of
60) so that several handovers take seconds; the lease waits and polls are real.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from kontur_relay.domain.cadence import Cadence
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.domain.ports import Publisher
from kontur_relay.feeds import EnginePoller
from kontur_relay.feeds.extern.kind import KIND
from kontur_relay.observability import metrics
from kontur_relay.settings import Env
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack
from tests.queues import bodies, receive, subscribe

pytestmark = pytest.mark.slow

CLIENT_ID = "feed-relay"
#: The deployed cadence (a poll every 5 s, a minute's schedule, 5 s of handover) at a tenth of its pace.
CADENCE = Cadence(every=0.5, period=6.0, handover=0.5)
#: Lambda's Timeout for the poller (template.yaml), which the scaled runs never come near.
TIMEOUT = 300.0
#: How often an event appears in the feed: without pause, as a busy integrator's feed.
ARRIVAL_SECONDS = 0.1


@dataclass
class Kontur:
    extern: ExternSimulator
    token: str


@pytest.fixture
def kontur() -> Iterator[Kontur]:
    with IdentitySimulator(token_lifetime=600) as identity, ExternSimulator(identity, seed=5) as extern:
        extern.add_integrator(CLIENT_ID, "api-key", username="svc@integrator.example", password="unused")
        extern.setup(CLIENT_ID, accounts=2)
        yield Kontur(extern, identity.issue("svc@integrator.example", CLIENT_ID))


class Stamped:
    """The container's publisher, noting when SNS accepted each event; ``slow`` holds every page
    published meanwhile that many seconds first (AWS answering slowly)."""

    def __init__(self, inner: Publisher, accepted: dict[str, float]) -> None:
        self.inner = inner
        self.accepted = accepted
        #: (from, until, seconds): a page whose publishing begins in [from, until) waits that long first.
        self.slow: tuple[float, float, float] | None = None

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        if self.slow is not None and self.slow[0] <= time.monotonic() < self.slow[1]:
            time.sleep(self.slow[2])
        self.inner.publish(feed, events)
        now = time.monotonic()
        for event in events:
            self.accepted.setdefault(event.id, now)


@dataclass
class Minutes:
    """A scheduler's ticks, each run in a warm container of its own, and what the feed and the
    topic saw meanwhile."""

    extern: ExternSimulator
    containers: list[EnginePoller[Relay]]
    accepted: dict[str, float] = field(default_factory=dict)
    appeared: dict[str, float] = field(default_factory=dict)
    reports: list[dict[str, object]] = field(default_factory=list)

    def run(self, start: float, ticks: int) -> None:
        """``ticks`` scheduled runs a period apart from ``start`` (monotonic) while events arrive."""
        stop = threading.Event()
        arrivals = threading.Thread(target=self._arrive, args=(stop,), name="arrivals")
        runs = []
        arrivals.start()
        try:
            for tick in range(ticks):
                time.sleep(max(start + tick * CADENCE.period - time.monotonic(), 0.0))
                # A run lasts a period and its handover: the container of the tick before is busy.
                runs.append(threading.Thread(target=self._invoke, args=(self.containers[tick % 2],), name=f"run{tick}"))
                runs[-1].start()
            time.sleep(CADENCE.period - 1.0)
        finally:
            stop.set()
            arrivals.join()
            for run in runs:
                run.join(timeout=60)
        metrics.clear_metrics()

    def _arrive(self, stop: threading.Event) -> None:
        while not stop.wait(ARRIVAL_SECONDS):
            (event_id,) = self.extern.generate(1)
            self.appeared[event_id] = time.monotonic()

    def _invoke(self, container: EnginePoller[Relay]) -> None:
        invoked = time.monotonic()
        self.reports.append(container.run({}, lambda: TIMEOUT - (time.monotonic() - invoked)))

    def waits(self) -> list[float]:
        return [self.accepted[event_id] - at for event_id, at in self.appeared.items() if event_id in self.accepted]

    def longest_silence(self, start: float, end: float) -> float:
        """The longest stretch of [start, end] in which nobody read the feed."""
        polls = [start] + [call.at for call in self.extern.calls("/v1/events") if start <= call.at <= end] + [end]
        return max(later - earlier for earlier, later in itertools.pairwise(polls))


def minutes(stack: Stack, kontur: Kontur, aws: dict[str, Any]) -> Minutes:
    secret = f"extern-credentials-{uuid.uuid4().hex}"
    aws["secretsmanager"].create_secret(
        Name=secret, SecretString=json.dumps({"access_token": kontur.token, "api_key": "api-key"})
    )
    extern = kontur.extern
    environment = Env(
        {
            "CURSORS_TABLE": stack.physical["CursorsTable"],
            "EVENTS_TOPIC_ARN": stack.physical["EventsTopic"],
            "EXTERN_API_URL": extern.url,
            "EXTERN_CREDENTIALS_SECRET": secret,
            "POLL_INTERVAL_SECONDS": "5",
        }
    )
    world = Minutes(extern, [KIND.poller(environment) for _ in range(2)])
    for container in world.containers:
        container.engine.cadence = CADENCE
        container.engine.pages.publisher = Stamped(container.engine.pages.publisher, world.accepted)
    return world


def test_every_minute_has_a_run_polling_across_handovers_while_events_arrive_without_pause(stack, kontur, aws):
    world = minutes(stack, kontur, aws)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    start = time.monotonic() + 0.2

    world.run(start, ticks=4)  # three handovers

    assert [report["outcome"] for report in world.reports] == ["caught_up"] * 4, world.reports
    silence = world.longest_silence(start, start + 4 * CADENCE.period)
    assert silence < 4 * CADENCE.every, f"nobody polled the feed for {silence:.2f} s"
    waits = world.waits()
    assert len(waits) == len(world.appeared), "an event never published"
    assert max(waits) < 5 * CADENCE.every, f"an event waited {max(waits):.2f} s at a {CADENCE.every} s interval"
    delivered = [body["id"] for body in bodies(receive(aws, queue))]
    assert set(delivered) == set(world.appeared), "an event never reached the topic's subscriber"


def test_a_previous_run_slow_to_hand_over_is_waited_for_and_the_next_minute_still_polls(stack, kontur, aws):
    world = minutes(stack, kontur, aws)
    first = world.containers[0].engine.pages.publisher
    assert isinstance(first, Stamped)
    start = time.monotonic() + 0.2
    # The first run's last polls meet SNS answering slowly: it hands over 2 s late, longer than the
    # interval and the handover together.
    slow = 2.0
    first.slow = (start + CADENCE.period - 0.2, start + CADENCE.period + 1.0, slow)

    world.run(start, ticks=3)

    assert [report["outcome"] for report in world.reports] == ["caught_up"] * 3, world.reports
    # Only the slow page's own wait; after it, the next run polls at once.
    silence = world.longest_silence(start, start + 3 * CADENCE.period)
    assert silence < slow + 4 * CADENCE.every, f"nobody polled the feed for {silence:.2f} s"
    waits = world.waits()
    assert len(waits) == len(world.appeared), "an event never published"
    assert max(waits) < slow + 5 * CADENCE.every, f"an event waited {max(waits):.2f} s"
