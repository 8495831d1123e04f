"""The budgeted Diadoc poller against the Diadoc simulator over HTTP, with the box registry and the
cursors in DynamoDB Local. What an integrator with many boxes relies on: Kontur's budget holds as
Kontur counts it (at the simulator), a 429 pauses every box, quiet boxes back off and busy ones are
polled again at once, one busy box never starves the rest, and a crash anywhere loses nothing.

Events go to an in-memory publisher here (tests/fakes.py), so that tens of thousands of them take
seconds; the path to SNS is the same ``Relay.drain`` the end-to-end tests prove against moto."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.domain.errors import PublishError
from kontur_relay.feeds.diadoc.boxes import feed_id, filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.cursor import Position
from kontur_relay.feeds.diadoc.kind import BoxPoller, box_poller
from kontur_relay.observability import metrics
from kontur_relay.settings import Env
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack
from tests.e2e.test_admin_api import captured_logs
from tests.fakes import Crash, FakeClock, FakePublisher

EVENTS = "/V8/GetNewEvents"
LONG = 10_000.0  # seconds left: these runs are never out of time


@dataclass
class World:
    sim: DiadocSimulator
    registry: DynamoBoxRegistry
    environment: dict[str, str]

    def register(self, box: str, **settings: Any) -> None:
        feed = box_feed({"boxId": box, **settings}, {"start": "oldest", "limit": 500})
        stored = feed.stored()
        existing = self.registry.get(feed_id(box))
        self.registry.register(
            feed_id(box),
            stored,
            filters_key(feed),
            by="test",
            expected_version=existing.cursor.version if existing else 0,
            restart=False,
            first_poll_at=0,
        )

    def poller(self, **environment: str) -> tuple[BoxPoller, FakePublisher, FakeClock]:
        publisher, clock = FakePublisher(), FakeClock()
        poller = box_poller(Env({**self.environment, **environment}), publisher=publisher, clock=clock)
        return poller, publisher, clock

    def box_requests(self) -> list[str]:
        """The box of each poll (GetNewEvents from a cursor, not reconciliation's reads by time), in
        the order the simulator got them."""
        return [call.query["boxId"] for call in self.sim.calls(EVENTS) if "timestampToTicks" not in call.query]


@pytest.fixture
def world(stack: Stack, aws: dict[str, Any]) -> Iterator[World]:
    with IdentitySimulator(token_lifetime=600) as identity, DiadocSimulator(identity, seed=11) as sim:
        credentials = sim.setup(boxes=0, backlog=0)
        name = f"diadoc-credentials-{uuid.uuid4().hex}"
        aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(credentials))
        table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
        environment = {
            "CURSORS_TABLE": stack.physical["CursorsTable"],
            "EVENT_MEMORY_TABLE": stack.physical["EventMemoryTable"],
            "EVENTS_TOPIC_ARN": stack.physical["EventsTopic"],
            "RELAY_SAFETY_MARGIN_SECONDS": "1",
            "DIADOC_API_URL": sim.url,
            "DIADOC_CREDENTIALS_SECRET": name,
            "HTTP_RETRIES": "3",
            "HTTP_BACKOFF_SECONDS": "0.01",
        }
        yield World(sim, DynamoBoxRegistry(table), environment)


def boxes(world: World, count: int, events: int = 0, *, login: str = "relay@example.ru") -> list[str]:
    """``count`` boxes with ``events`` events each, visible to the relay's user, registered."""
    created = [world.sim.add_box().id for _ in range(count)]
    for box in created:
        world.sim.set_access(login, box, None)
        if events:
            world.sim.generate(box, events)
        world.register(box)
    return created


def test_the_budget_holds_at_the_server_in_flight_and_per_second(world: World) -> None:
    relayed = boxes(world, 30, events=120)
    world.sim.load.latency = 0.05  # requests overlap as they would across a network
    poller, publisher, _ = world.poller(
        DIADOC_MAX_IN_FLIGHT="3", DIADOC_MAX_REQUESTS_PER_SECOND="15", DIADOC_PAGES_PER_TURN="1"
    )
    for box in relayed:
        world.register(box, limit=50)

    report = poller.run({}, lambda: LONG)

    assert report["events"] == 30 * 120
    assert Counter(event.id for event in publisher.published) == Counter(
        event for box in relayed for event in world.sim.event_ids(box)
    )
    assert world.sim.load.most_in_flight == 3, "the budget's in-flight places were all used, and no more"
    assert world.sim.load.most_per_second() <= 15
    assert world.sim.load.most_per_second() >= 10, "the poller used its per-second budget"


def test_a_429_pauses_every_box_for_its_retry_after(world: World) -> None:
    boxes(world, 12, events=30)
    poller, _, _ = world.poller(DIADOC_MAX_IN_FLIGHT="4", DIADOC_MAX_REQUESTS_PER_SECOND="50")
    world.sim.faults.add(Fault.throttle(retry_after=1), prefix=EVENTS)
    world.sim.load.latency = 0.01

    report = poller.run({}, lambda: LONG)

    assert report["events"] == 12 * 30
    assert report["failed"] == 0
    throttled_at = next(call.at for call in world.sim.journal if call.fault == "throttle")
    # Requests already on their way (sent before the 429 came back) may land; every box's next request waits.
    during = [at - throttled_at for at in world.sim.load.arrivals if throttled_at + 0.25 < at < throttled_at + 0.9]
    assert not during, f"requests went out {during} s into the pause"
    assert max(world.sim.load.arrivals) > throttled_at + 0.9, "and the boxes went on after it"
    assert poller.budget.counts.throttled >= 1


def test_a_quiet_box_backs_off_to_the_maximum_and_comes_back_when_it_has_events(world: World) -> None:
    (box,) = boxes(world, 1)
    poller, _, clock = world.poller(DIADOC_MIN_POLL_SECONDS="60", DIADOC_MAX_POLL_SECONDS="600")
    intervals = []
    for _ in range(6):
        poller.run({}, lambda: LONG)
        state = world.registry.get(feed_id(box))
        assert state is not None
        intervals.append(state.interval)
        assert state.next_poll_at <= clock() + state.interval
        clock.advance(state.next_poll_at - clock() + 0.001)
    assert intervals == [60, 120, 240, 480, 600, 600]

    clock.advance(-100)  # not due yet: a tick polls nothing
    polled = len(world.box_requests())
    assert poller.run({}, lambda: LONG)["polled"] == 0
    assert len(world.box_requests()) == polled, "a box that is not due is not asked"

    world.sim.generate(box, 3)
    clock.advance(100)
    assert poller.run({}, lambda: LONG)["events"] == 3
    state = world.registry.get(feed_id(box))
    assert state is not None
    assert state.interval == 60
    assert state.last_events_at is not None


def test_a_busy_box_never_starves_the_quiet_ones(world: World) -> None:
    (busy,) = boxes(world, 1, events=50_000)
    quiet = boxes(world, 500)
    world.registry.polled(  # the busy box is the most overdue: it goes first
        world.registry.get(feed_id(busy)),  # type: ignore[arg-type]
        next_poll_at=-1,
        interval=60,
        had_events=False,
    )
    poller, publisher, _ = world.poller(DIADOC_MAX_REQUESTS_PER_SECOND="10000", DIADOC_PAGES_PER_TURN="5")

    report = poller.run({}, lambda: LONG)

    assert report["events"] == 50_000
    assert len(publisher.published) == 50_000
    order = world.box_requests()
    last_quiet = max(i for i, box in enumerate(order) if box != busy)
    busy_before = sum(1 for box in order[:last_quiet] if box == busy)
    # Every quiet box was asked while the busy one had had at most two turns of five pages.
    assert set(order[: last_quiet + 1]) >= set(quiet)
    assert busy_before <= 2 * 5 + 4, f"the busy box took {busy_before} pages before the last quiet box was polled"
    assert sum(1 for box in order if box == busy) == 50_000 // 500 + 1
    for box in random.Random(3).sample(quiet, 20):
        state = world.registry.get(feed_id(box))
        assert state is not None
        assert state.last_poll_at is not None, "polled on time, in this very run"


def test_a_crash_anywhere_in_a_run_loses_nothing_and_the_next_run_finishes(world: World) -> None:
    relayed = boxes(world, 6, events=700)
    expected = Counter(event for box in relayed for event in world.sim.event_ids(box))
    poller, publisher, clock = world.poller(DIADOC_MIN_POLL_SECONDS="0.001", DIADOC_MAX_POLL_SECONDS="0.002")
    rng = random.Random(5)
    crashes = 0
    for _ in range(5):
        # The process dies between two PublishBatch calls of some page, somewhere in the run.
        publisher.fail_after(rng.randint(0, 40), Crash("killed"))
        with pytest.raises(Crash):
            poller.run({}, lambda: LONG)
        crashes += 1
        clock.advance(1)
    report = poller.run({}, lambda: LONG)
    clock.advance(1)
    poller.run({}, lambda: LONG)

    delivered = Counter(event.id for event in publisher.published)
    assert set(delivered) == set(expected), "every event published at least once"
    duplicates = sum((delivered - expected).values())
    # At most the pages being published when each crash struck, one per box in flight.
    assert duplicates <= crashes * 8 * 500
    assert report["failed"] == 0
    for box in relayed:
        state = world.registry.get(feed_id(box))
        assert state is not None
        last = world.sim.event_ids(box)[-1]
        assert state.cursor.position == f"{world.sim.index_keys(box)[-2]}~seen:{last}"


# -- a box's failure and log lines are that box's own ---------------------------------------------------


class ResumedInBetween(DynamoBoxRegistry):
    """An operator resumes the box while its turn is still on its way to recording the stop."""

    def __init__(self, table: Any, clock: Any, cursors: DynamoCursorStore) -> None:
        super().__init__(table, clock=clock)
        self.cursors = cursors

    def polled(self, box: Any, **kwargs: Any) -> None:
        if kwargs.get("stop_at") is not None or kwargs.get("stop"):
            now = self.cursors.load(box.feed)
            self.cursors.set_cursor(box.feed, now.position, expected_version=now.version, by="operator")
        super().polled(box, **kwargs)


def test_a_stale_turn_does_not_stop_again_a_box_an_operator_just_resumed(world: World) -> None:
    (box,) = boxes(world, 1, events=30)
    world.register(box, limit=10)
    poller, publisher, clock = world.poller()
    poller.run({}, lambda: LONG)
    world.sim.set_access("relay@example.ru", box, False)  # then Diadoc answers 403
    cursors = DynamoCursorStore(world.registry.table, clock=clock)
    poller.boxes.registry = ResumedInBetween(world.registry.table, clock, cursors)
    clock.advance(120)

    report = poller.run({}, lambda: LONG)

    assert report["failed"] == 1
    state = world.registry.get(feed_id(box))
    assert state is not None
    assert state.cursor.stopped_reason is None, "the operator's resume stands"
    assert state.last_error is not None
    assert "403" in state.last_error, "the turn's error is still recorded"
    assert len(publisher.published) == 30


def test_every_line_of_a_box_carries_its_own_box_and_cursor(world: World) -> None:
    relayed = boxes(world, 6, events=60)
    for box in relayed:
        world.register(box, limit=5)
    world.sim.load.latency = 0.01  # turns overlap
    world.sim.faults.randomly(0.15, seed=3, faults=(Fault.server_error(400),), prefix=EVENTS)
    poller, _, clock = world.poller(DIADOC_MIN_POLL_SECONDS="0.001", DIADOC_MAX_POLL_SECONDS="0.002")

    with captured_logs() as lines:
        for _ in range(4):
            poller.run({}, lambda: LONG)
            clock.advance(1)

    keys = {feed_id(box): set(world.sim.index_keys(box)) for box in relayed}
    carried = [json.loads(line) for line in lines if line.startswith("{") and '"feed"' in line]
    with_cursor = [line for line in carried if line.get("cursor") and line["feed"] in keys]
    failures = [line for line in carried if line["message"] == "A box's poll failed"]
    assert len(failures) >= 3, "a box's failure is logged with its box"
    assert with_cursor
    for line in with_cursor:
        base = Position.parse(line["cursor"]).after
        assert base is None or base in keys[line["feed"]], f"{line['message']}: another box's cursor"


def test_every_turn_that_fails_the_run_is_logged_with_its_box(world: World) -> None:
    relayed = boxes(world, 2, events=20)
    poller, publisher, _ = world.poller()
    for _ in relayed:
        publisher.fail_after(0, PublishError("SNS refused the batch"))

    with captured_logs() as lines, pytest.raises(PublishError):
        poller.run({}, lambda: LONG)

    failed = [json.loads(line) for line in lines if "A box's turn failed" in line]
    assert {line["feed"] for line in failed} == {feed_id(box) for box in relayed}
    assert all("SNS refused the batch" in line["exception"] for line in failed)


def test_a_retry_after_longer_than_a_run_stops_every_box_until_then(world: World) -> None:
    boxes(world, 6, events=10)
    poller, _, clock = world.poller(DIADOC_MAX_IN_FLIGHT="1", DIADOC_MAX_REQUESTS_PER_SECOND="50")
    world.sim.faults.add(Fault.throttle(retry_after=3600), prefix=EVENTS)

    report = poller.run({}, lambda: LONG)

    assert report["failed"] == 6, "the first box was told to wait, and no other box asked after it"
    assert len(world.sim.calls(EVENTS)) == 1, "not retried, and nothing else sent while Kontur asks to wait"
    for box in world.registry.registered():
        assert box.next_poll_at >= clock() + 3599, "each box's row keeps the time Kontur asked for"
        assert box.last_error is not None
        assert "Kontur asks to wait 3600 s" in box.last_error
    clock.advance(600)
    assert poller.run({}, lambda: LONG)["polled"] == 0, "the next runs leave the boxes alone"
    assert len(world.sim.calls(EVENTS)) == 1
    metrics.clear_metrics()  # a handler would flush them; here they would reach the next test's flush
