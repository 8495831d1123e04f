"""What no cursor catches, against the Diadoc simulator over HTTP with the cursors, the box registry and
the boxes' memories in DynamoDB Local: events Diadoc serves again are dropped, events it serves late
behind newer ones are recovered by reconciliation, a box's newest event never published is noticed,
and a crash at any step of a pass loses nothing.

The simulator and the poller share one clock, moved by hand: Diadoc dates its events by it and serves
late ones by it, the poller schedules boxes and reconciliation by it. Events go to an in-memory
publisher (``tests/fakes.py``), which records every message, duplicates included.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.feeds.diadoc.boxes import feed_id, filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.kind import BoxPoller, box_poller
from kontur_relay.settings import Env
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.diadoc_habits import Habits
from local_stack.template import Stack, provision
from tests.fakes import Crash, FakeClock, FakePublisher

EVENTS = "/V8/GetNewEvents"
LAST_EVENT = "/V2/GetLastEvent"
LONG = 10_000.0
#: Reconciliation every minute over the last hour, so that a test moves the clock by minutes.
SETTINGS = {
    "DIADOC_RECONCILE_EVERY_SECONDS": "60",
    "DIADOC_RECONCILE_WINDOW_SECONDS": "3600",
    "DIADOC_MIN_POLL_SECONDS": "60",
}


@dataclass
class World:
    sim: DiadocSimulator
    clock: FakeClock
    registry: DynamoBoxRegistry
    environment: dict[str, str]

    def box(self, **settings: Any) -> str:
        box = self.sim.add_box().id
        self.sim.set_access("relay@example.ru", box, None)
        feed = box_feed({"boxId": box, **settings}, {"start": "oldest", "limit": 500})
        self.registry.register(
            feed_id(box),
            feed.stored(),
            filters_key(feed),
            by="test",
            expected_version=0,
            restart=False,
            first_poll_at=0,
        )
        return box

    def poller(self, publisher: FakePublisher | None = None, **environment: str) -> tuple[BoxPoller, FakePublisher]:
        publisher = publisher or FakePublisher()
        poller = box_poller(Env({**self.environment, **environment}), publisher=publisher, clock=self.clock)
        return poller, publisher

    def minutes(self, count: float) -> None:
        self.clock.advance(60 * count)

    def run(self, poller: BoxPoller) -> dict[str, object]:
        return poller.run({}, lambda: LONG)

    def tables(self) -> list[str]:
        return [self.environment["CURSORS_TABLE"], self.environment["EVENT_MEMORY_TABLE"]]


@pytest.fixture
def world(aws: dict[str, Any]) -> Iterator[World]:
    with make_world(aws) as world:
        yield world


@contextmanager
def make_world(aws: dict[str, Any]) -> Iterator[World]:
    """The template's tables of a stack of its own, a simulator on a clock of its own, the relay's secret."""
    stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}"), aws)
    clock = FakeClock()
    with DiadocSimulator(seed=21, clock=clock, realtime_dates=True) as sim:
        credentials = sim.setup(boxes=0, backlog=0)
        name = f"diadoc-credentials-{uuid.uuid4().hex}"
        aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(credentials))
        environment = {
            "CURSORS_TABLE": stack.physical["CursorsTable"],
            "EVENT_MEMORY_TABLE": stack.physical["EventMemoryTable"],
            "EVENTS_TOPIC_ARN": stack.physical["EventsTopic"],
            "RELAY_SAFETY_MARGIN_SECONDS": "1",
            "DIADOC_API_URL": sim.url,
            "DIADOC_CREDENTIALS_SECRET": name,
            "HTTP_RETRIES": "2",
            "HTTP_BACKOFF_SECONDS": "0.01",
            **SETTINGS,
        }
        table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
        yield World(sim, clock, DynamoBoxRegistry(table, clock=clock), environment)


def late(world: World, box: str, seconds: float) -> str:
    """One event of the box served ``seconds`` after its own time."""
    world.sim.habits = Habits(late=1.0, late_delay=(seconds, seconds))
    (event,) = world.sim.generate(box, 1)
    world.sim.habits = Habits()
    return event


def windows(world: World) -> list[dict[str, str]]:
    """The reconciliation reads: GetNewEvents with both time bounds."""
    return [call.query for call in world.sim.calls(EVENTS) if "timestampToTicks" in call.query]


# -- events served again ------------------------------------------------------------------------------


def test_an_event_served_again_is_dropped_not_published_again(world):
    box = world.box()
    events = world.sim.generate(box, 30)
    poller, publisher = world.poller()
    world.run(poller)

    world.sim.serve_again(box, events[3])
    world.sim.serve_again(box, events[29])
    newer = world.sim.generate(box, 2)
    world.minutes(1)
    report = world.run(poller)

    assert publisher.ids == [*events, *newer], "each event once"
    assert report["duplicates"] == 2
    assert report["events"] == 2


def test_a_new_container_remembers_what_an_earlier_one_published(world):
    box = world.box()
    events = world.sim.generate(box, 12)
    first, publisher = world.poller()
    world.run(first)

    world.sim.serve_again(box, events[0])
    world.minutes(1)
    second, _ = world.poller(publisher)  # a cold start: its memory is read from the table
    assert world.run(second)["duplicates"] == 1
    assert publisher.ids == events


@pytest.mark.parametrize("container", ["the same container", "a new container"])
def test_an_operators_replay_publishes_again_what_the_box_published_before(world, container):
    box = world.box()
    events = world.sim.generate(box, 12)
    poller, publisher = world.poller()
    world.run(poller)
    assert publisher.ids == events

    world.minutes(1)
    cursors = DynamoCursorStore(world.registry.table, clock=world.clock)
    # As PUT /feeds/{feedId}/cursor does it: back to where the box started, by a named operator.
    cursors.set_cursor(feed_id(box), None, expected_version=cursors.load(feed_id(box)).version, by="operator")
    world.minutes(1)
    if container == "a new container":
        poller, _ = world.poller(publisher)
    world.run(poller)

    assert publisher.ids == events + events, "the replay the operator asked for, every event once more"
    world.sim.serve_again(box, events[5])
    world.minutes(1)
    assert world.run(poller)["duplicates"] == 1, "what the replay published is remembered again"
    assert publisher.ids == events + events


def test_an_event_late_across_an_operators_replay_is_recovered_once(world):
    box = world.box()
    early = world.sim.generate(box, 5)
    missing = late(world, box, 300)
    newer = world.sim.generate(box, 3)
    poller, publisher = world.poller()
    world.run(poller)
    world.minutes(1)
    cursors = DynamoCursorStore(world.registry.table, clock=world.clock)
    cursors.set_cursor(feed_id(box), None, expected_version=cursors.load(feed_id(box)).version, by="operator")
    world.run(poller)  # the replay reads past the late event before Diadoc serves it
    assert missing not in publisher.ids
    for _ in range(10):
        world.minutes(1)
        world.run(poller)

    assert Counter(publisher.ids) == Counter({**dict.fromkeys(early + newer, 2), missing: 1})


# -- late events and late siblings ----------------------------------------------------------------------


def test_an_event_served_late_behind_newer_ones_is_recovered_by_reconciliation(world):
    box = world.box()
    early = world.sim.generate(box, 5)
    world.minutes(1)
    missing = late(world, box, 300)
    world.minutes(0.5)
    newer = world.sim.generate(box, 3)
    poller, publisher = world.poller()
    world.minutes(1)

    assert world.run(poller)["recovered"] == 0
    assert missing not in publisher.ids
    # The event is served five minutes after its time; the quiet box is polled less and less often,
    # and reconciled after its first turn once the event is there.
    for _ in range(10):
        world.minutes(1)
        report = world.run(poller)
        if report["recovered"]:
            break

    assert report["recovered"] == 1
    assert Counter(publisher.ids) == Counter([*early, *newer, missing]), "each event once"
    state = world.registry.get(feed_id(box))
    assert state is not None
    assert state.reconciliation is not None
    assert (state.reconciliation.recovered, state.reconciliation.recovered_total) == (1, 1)


def test_a_pass_that_finds_nothing_missing_is_one_request(world):
    box = world.box()
    world.sim.generate(box, 700)
    poller, _ = world.poller()
    world.run(poller)
    for _ in range(3):
        world.minutes(1.5)
        world.sim.generate(box, 3)
        world.run(poller)

    passes = windows(world)
    assert len(passes) == 4, "one pass after each turn with events (the backlog's first), a minute apart at least"
    assert all(query["limit"] == "500" for query in passes)
    assert not [
        call for call in world.sim.calls(EVENTS) if "afterIndexKey" in call.query and "timestampToTicks" in call.query
    ]


def test_a_late_sibling_behind_the_cursor_is_recovered(world):
    box = world.box()
    world.sim.generate(box, 2)
    twin = world.sim.generate(box, 1)
    sibling = world.sim.add_sibling(box, delay=20)
    after = world.sim.generate(box, 2)
    poller, publisher = world.poller()
    world.run(poller)
    assert sibling not in publisher.ids

    world.minutes(2)
    world.sim.generate(box, 1)
    world.run(poller)

    assert publisher.ids.count(sibling) == 1
    assert set(twin + after) <= set(publisher.ids)


def test_reconciliation_never_reaches_before_a_box_started_now(world):
    box = world.box()
    skipped = late(world, box, 120)  # behind the events after it once served: a late event, but before the start
    world.sim.generate(box, 3)
    world.minutes(1)
    world.registry.register(
        feed_id(box), {"start": "now", "limit": 500}, "", by="test", expected_version=0, restart=True, first_poll_at=0
    )
    poller, publisher = world.poller()
    world.run(poller)
    world.minutes(0.5)
    new = world.sim.generate(box, 2)
    for _ in range(4):
        world.minutes(1)
        world.run(poller)

    assert publisher.ids == new, "what came before the start stays before it, served late or not"
    assert skipped in world.sim.event_ids(box)


# -- the check of a box's newest event --------------------------------------------------------------------


def test_a_quiet_box_whose_newest_event_was_never_published_is_noticed_and_read(world):
    box = world.box()
    events = world.sim.generate(box, 4)
    poller, publisher = world.poller(
        DIADOC_LAST_EVENT_CHECK_SECONDS="300", DIADOC_MAX_POLL_SECONDS="100000", DIADOC_RECONCILE_WINDOW_SECONDS="120"
    )
    world.run(poller)
    for _ in range(8):  # the box goes quiet: its interval grows, its window passes stop
        world.minutes(2)
        world.run(poller)
    quiet = world.registry.get(feed_id(box))
    assert quiet is not None
    assert quiet.interval >= 960

    missing = late(world, box, 30)
    served_at = world.clock() + 30
    while missing not in publisher.ids and world.clock() < served_at + 300:
        world.minutes(0.5)
        world.run(poller)

    assert publisher.ids == [*events, missing]
    assert world.clock() < quiet.next_poll_at, "found by the check, long before the box's own poll"
    checks = world.sim.calls(LAST_EVENT)
    assert checks[-1].status == 200
    assert world.sim.calls(EVENTS)[-1].at > checks[-1].at, "the box was polled after its check"


def test_an_empty_box_answers_the_check_with_204_and_nothing_follows(world):
    world.box()
    poller, publisher = world.poller(DIADOC_LAST_EVENT_CHECK_SECONDS="300")
    for _ in range(7):
        world.run(poller)
        world.minutes(1)

    assert {call.status for call in world.sim.calls(LAST_EVENT)} == {204}
    assert publisher.ids == []


# -- a crash at any step of a pass ------------------------------------------------------------------------


class Steps:
    """Every step a run takes on DynamoDB and the publisher, counted; ``crash_at`` kills the run there."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.taken: list[str] = []

    def __call__(self, name: str) -> None:
        self.taken.append(name)
        if len(self.taken) - 1 == self.crash_at:
            raise Crash(f"killed at step {self.crash_at}: {name}")


class SteppedTable:
    """A boto3 Table whose every call is a step."""

    def __init__(self, table: Any, steps: Steps) -> None:
        self._table, self._steps = table, steps

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._table, name)
        if name not in ("query", "scan", "get_item", "put_item", "update_item"):
            return attribute

        def step(*args: Any, **kwargs: Any) -> Any:
            self._steps(f"{name} {kwargs.get('UpdateExpression', '')[:40]}".strip())
            return attribute(*args, **kwargs)

        return step


def crash_scenario(world: World, steps: Steps) -> tuple[FakePublisher, set[str]]:
    """A box with events, three of them served late; the run that reconciles them meets ``steps``."""
    box = world.box(limit=2)
    expected = set(world.sim.generate(box, 4))
    world.minutes(1)
    expected |= {late(world, box, 150) for _ in range(3)}
    world.minutes(0.5)
    expected |= set(world.sim.generate(box, 2))
    publisher = FakePublisher()
    poller, _ = world.poller(publisher)
    world.minutes(1)
    world.run(poller)
    world.minutes(2)  # every late one is served now, and the box is due

    publisher.before_publish = lambda events: steps("publish")
    tables: dict[str, Any] = {
        name: SteppedTable(boto3.resource("dynamodb").Table(name), steps) for name in world.tables()
    }
    crashing = box_poller(Env(world.environment), publisher=publisher, clock=world.clock, tables=tables.__getitem__)
    with suppress(Crash):
        world.run(crashing)
    publisher.before_publish = None
    return publisher, expected


def test_a_crash_at_every_step_of_a_reconciliation_pass_loses_nothing(aws):
    rehearsal = Steps()
    with make_world(aws) as world:
        publisher, expected = crash_scenario(world, rehearsal)
        assert set(publisher.ids) == expected
    assert "publish" in rehearsal.taken
    assert any("last_reconciliation" in step for step in rehearsal.taken), rehearsal.taken

    for step in range(len(rehearsal.taken)):
        with make_world(aws) as world:
            publisher, expected = crash_scenario(world, Steps(crash_at=step))
            world.minutes(2)
            after, _ = world.poller(publisher)  # a new container
            for _ in range(3):
                world.run(after)
                world.minutes(1)
            published = Counter(publisher.ids)
            assert set(published) == expected, f"lost at step {step}: {rehearsal.taken[step]}"
            # At most what was published and not yet remembered when the process died.
            assert sum(published.values()) - len(expected) <= 3, f"step {step}: {rehearsal.taken[step]}"
