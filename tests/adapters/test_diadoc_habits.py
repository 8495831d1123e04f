"""Diadoc's habits (``local_stack.simulators.diadoc_habits``), at the simulator over HTTP: first that the
simulator shows each as integrators reported it, then that a box's feed loses nothing to them.

The relay side runs the engine's own page loop (``Pages.drain``, the one place a cursor moves) over
the real ``DiadocSource`` and the simulator, with the in-memory cursor store and publisher: every
cursor the source gives passes the engine's checks, and what the publisher got is compared with
what the box served, event by event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from kontur_relay.domain.model import CursorState, Feed
from kontur_relay.domain.pages import Pages
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.source import (
    DIADOC_RETRYABLE_STATUSES,
    DiadocApi,
    DiadocSource,
    cursor_at,
    read_diadoc_error,
)
from kontur_relay.feeds.diadoc.ticks import TICKS_PER_SECOND, to_ticks
from kontur_relay.kontur import session as http
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.diadoc_habits import Habits
from tests.fakes import FakeClock, FakeCursorStore, FakePublisher

EVENTS = "/V8/GetNewEvents"


class Token:
    """DiadocAuth for the simulator's relay user: one POST /V3/Authenticate, then its header."""

    def __init__(self, sim: DiadocSimulator, credentials: dict[str, str]) -> None:
        answer = requests.post(
            f"{sim.url}/V3/Authenticate",
            params={"type": "password"},
            headers={"Authorization": f"DiadocAuth ddauth_api_client_id={credentials['api_client_id']}"},
            json={"login": credentials["login"], "password": credentials["password"]},
            timeout=5,
        )
        answer.raise_for_status()
        self.value = (
            f"DiadocAuth ddauth_api_client_id={credentials['api_client_id']},ddauth_token={answer.text.strip()}"
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.value}

    def renew(self, refused: object = None) -> bool:
        return False

    def accepted(self, headers: object) -> None:
        """A token for the whole test: nothing to learn from an answer."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DiadocSimulator]:
    with DiadocSimulator(seed=4, clock=clock, realtime_dates=True) as simulator:
        simulator.token = Token(simulator, simulator.setup(boxes=1, backlog=0))  # type: ignore[attr-defined]
        yield simulator


def box_of(sim: DiadocSimulator) -> str:
    return next(iter(sim.boxes))


def read(sim: DiadocSimulator, path: str = EVENTS, **params: str) -> requests.Response:
    headers = {**sim.token.headers(), "Accept": "application/x-protobuf"}  # type: ignore[attr-defined]
    return requests.get(f"{sim.url}{path}", params={"boxId": box_of(sim), **params}, headers=headers, timeout=5)


def ids(answer: requests.Response) -> list[str]:
    return [event.EventId for event in pb.BoxEventList.FromString(answer.content).Events]


def source(sim: DiadocSimulator, limit: int, **settings: str) -> DiadocSource:
    session = http.session(retries=1, backoff=0.01, statuses=DIADOC_RETRYABLE_STATUSES)
    api = DiadocApi(sim.url, session, sim.token, read_diadoc_error, timeout=5)  # type: ignore[attr-defined]
    return DiadocSource(api, box_feed({"boxId": box_of(sim), "limit": limit, **settings}))


def drain(feed: DiadocSource, cursors: FakeCursorStore, publisher: FakePublisher) -> int:
    """The engine's page loop over the box until it has nothing more; the pages it read."""
    box = feed.feed
    pages = Pages(Feed(box.feed_id, "diadoc", f"urn:{box.box_id}"), feed, publisher, cursors, safety_margin=1)
    state: CursorState = cursors.load(box.feed_id)
    read = 0
    while True:
        progress = pages.drain(state, lambda: 1_000.0)
        read += progress.pages
        state = progress.state
        if progress.caught_up:
            return read


# -- the simulator shows each habit as integrators reported it ------------------------------------------


def test_two_events_under_one_index_key_hide_the_second_from_a_read_after_the_key(sim):
    box = box_of(sim)
    (first,) = sim.generate(box, 1)
    second = sim.add_sibling(box)
    (after,) = sim.generate(box, 1)
    key = sim.entries(box)[0].index_key
    assert sim.entries(box)[1].index_key == key
    assert sim.entries(box)[0].ticks == sim.entries(box)[1].ticks

    page = read(sim, limit="1")
    assert ids(page) == [first], "a page of one ends on the first of the two"
    assert ids(read(sim, afterIndexKey=key)) == [after], "read after the key, the second never comes"
    assert ids(read(sim, afterEventId=first)) == [after], "nor read after the first's EventId"
    # A read by time returns both, the one already seen too.
    assert ids(read(sim, timestampFromTicks=str(sim.entries(box)[0].ticks))) == [first, second, after]


def test_a_late_sibling_is_served_seconds_after_its_twin(sim, clock):
    box = box_of(sim)
    (first,) = sim.generate(box, 1)
    second = sim.add_sibling(box, delay=5)

    assert ids(read(sim)) == [first]
    clock.advance(5)
    assert ids(read(sim)) == [first, second]


def test_an_event_seen_before_comes_back_later_under_a_new_key(sim):
    box = box_of(sim)
    events = sim.generate(box, 3)
    sim.serve_again(box, events[0])

    served = ids(read(sim))
    assert served == [*events, events[0]]
    assert sim.entries(box)[3].index_key != sim.entries(box)[0].index_key
    assert sim.event_ids(box) == events, "what the relay owes is each event once"


def test_a_late_event_is_served_minutes_after_its_time_behind_newer_ones(sim, clock):
    box = box_of(sim)
    sim.habits = Habits(late=1.0, late_delay=(300, 300))
    (late,) = sim.generate(box, 1)
    sim.habits = Habits()
    (newer,) = sim.generate(box, 1)
    newer_key = sim.entries(box)[1].index_key

    first = read(sim)
    assert ids(first) == [newer]
    assert pb.BoxEventList.FromString(first.content).TotalCount == 1
    clock.advance(300)
    assert ids(read(sim, afterIndexKey=newer_key)) == [], "read after the newer event, it never comes"
    moment = str(sim.entries(box)[0].ticks)
    assert ids(read(sim, timestampFromTicks=moment)) == [late, newer], "read by its time, it is there"


def test_the_newest_event_is_the_newest_served(sim, clock):
    box = box_of(sim)
    assert read(sim, path="/V2/GetLastEvent").status_code == 204
    (served,) = sim.generate(box, 1)
    sim.habits = Habits(late=1.0, late_delay=(60, 60))
    sim.generate(box, 1)

    answer = read(sim, path="/V2/GetLastEvent")
    assert pb.BoxEvent.FromString(answer.content).EventId == served
    clock.advance(60)
    assert pb.BoxEvent.FromString(read(sim, path="/V2/GetLastEvent").content).EventId != served


def test_every_habit_is_seeded(clock):
    def feed(seed: int) -> list[tuple[str, float]]:
        with DiadocSimulator(seed=1, clock=clock, habits=Habits.every(seed=seed)) as simulator:
            box = simulator.add_box().id
            simulator.generate(box, 2_000)
            return [(entry.index_key, entry.visible_at) for entry in simulator.entries(box)]

    once, again, other = feed(3), feed(3), feed(4)
    assert once == again
    assert once != other
    keys = Counter(key for key, _ in once)
    assert 50 < sum(1 for count in keys.values() if count == 2) < 150, "about 5% of events have a sibling"
    assert sum(1 for _, at in once if at > clock()) > 2, "some are served late"
    assert len(once) > 2_000 + sum(1 for count in keys.values() if count == 2), "some are served again"


# -- a box's feed loses nothing to them --------------------------------------------------------------------


def feed_with_siblings(sim: DiadocSimulator, events: int, after: set[int]) -> list[str]:
    """``events`` events, and a sibling right after each one numbered in ``after`` (from 0)."""
    box = box_of(sim)
    for number in range(events):
        sim.generate(box, 1)
        if number in after:
            sim.add_sibling(box)
    return sim.event_ids(box)


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_a_sibling_at_every_page_boundary_position_is_published_once(sim, limit):
    # A sibling after every third event: with pages of 1, 2, 3 and 7, a page ends on every position
    # of a pair (before it, on its first event, on its second) somewhere in the feed.
    expected = feed_with_siblings(sim, 40, {n for n in range(40) if n % 3 == 1})
    cursors, publisher = FakeCursorStore(), FakePublisher()

    drain(source(sim, limit), cursors, publisher)

    assert publisher.ids == expected


@pytest.mark.parametrize("after", [{498}, {499}, {499, 998}], ids=["ends-on-second", "ends-on-first", "twice"])
def test_pages_of_500_around_a_sibling_at_the_boundary(sim, after):
    expected = feed_with_siblings(sim, 1_004, after)
    cursors, publisher = FakeCursorStore(), FakePublisher()

    pages = drain(source(sim, 500), cursors, publisher)

    assert publisher.ids == expected
    assert pages <= 4


def test_a_group_larger_than_a_page_of_one_is_read_through(sim):
    box = box_of(sim)
    sim.generate(box, 1)
    for _ in range(4):
        sim.add_sibling(box)
    sim.generate(box, 2)
    cursors, publisher = FakeCursorStore(), FakePublisher()

    drain(source(sim, 1), cursors, publisher)

    assert publisher.ids == sim.event_ids(box)


def test_a_box_started_from_a_point_in_time_keeps_its_siblings(sim, clock):
    box = box_of(sim)
    sim.generate(box, 5)
    clock.advance(60)
    moment = datetime.fromtimestamp(clock(), UTC)
    feed_with_siblings(sim, 30, {0, 4, 5, 9, 14})
    expected = sim.event_ids(box)[5:]
    cursors, publisher = FakeCursorStore(), FakePublisher()

    drain(source(sim, 2, start=moment.isoformat()), cursors, publisher)

    assert publisher.ids == expected


def test_an_operators_point_in_time_keeps_its_siblings(sim, clock):
    box = box_of(sim)
    sim.generate(box, 5)
    clock.advance(60)
    at = clock()
    feed_with_siblings(sim, 20, {0, 1, 6})
    cursors, publisher = FakeCursorStore(), FakePublisher()
    feed = source(sim, 3)
    cursors.set_cursor(feed.feed.feed_id, cursor_at(datetime.fromtimestamp(at, UTC)), expected_version=0, by="op")

    drain(feed, cursors, publisher)

    assert publisher.ids == sim.event_ids(box)[5:]


def test_an_idle_box_with_a_group_at_its_end_moves_no_cursor(sim):
    box = box_of(sim)
    feed_with_siblings(sim, 4, {3})
    cursors, publisher = FakeCursorStore(), FakePublisher()
    feed = source(sim, 2)
    drain(feed, cursors, publisher)
    writes = len(cursors.writes)

    for _ in range(3):
        drain(feed, cursors, publisher)

    assert len(cursors.writes) == writes, "a poll that finds only what it published writes nothing"
    assert publisher.ids == sim.event_ids(box)


def test_a_sibling_served_late_is_published_if_its_group_ended_the_page(sim, clock):
    box = box_of(sim)
    sim.generate(box, 3)
    late = sim.add_sibling(box, delay=5)
    cursors, publisher = FakeCursorStore(), FakePublisher()
    feed = source(sim, 10)
    drain(feed, cursors, publisher)
    assert late not in publisher.ids

    clock.advance(5)
    drain(feed, cursors, publisher)

    assert publisher.ids == sim.event_ids(box)
    assert Counter(publisher.ids).most_common(1)[0][1] == 1


def test_a_dated_simulator_dates_its_events_by_its_clock(sim, clock):
    box = box_of(sim)
    sim.generate(box, 1)
    clock.advance(7)
    sim.generate(box, 1)
    first, second = sim.entries(box)
    assert first.ticks == to_ticks(datetime.fromtimestamp(clock() - 7, UTC))
    assert second.ticks - first.ticks == 7 * TICKS_PER_SECOND
