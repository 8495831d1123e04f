"""The many-feed loop (``domain.fleet``) with in-memory fakes and no Kontur in sight: what a new
many-feed kind gets by plugging in a registry of its feeds (and, if it has any, background work).
Diadoc's boxes are proved against the simulator in ``tests/e2e/test_diadoc_poller.py``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import pytest

from kontur_relay.domain.fleet.model import Found, Plug, Poll, Polling, Task, Turn
from kontur_relay.domain.fleet.run import Fleet
from kontur_relay.domain.model import CursorState, Feed
from kontur_relay.domain.report import Outcome
from kontur_relay.kontur.budget import Budget
from kontur_relay.observability import logger, metrics
from tests.fakes import FakeClock, FakeCursorStore, FakePublisher, FakeSource, cursor_at, offset_of

LONG = 10_000.0


@dataclass(frozen=True)
class Member:
    feed: str
    cursor: CursorState
    next_poll_at: float = 0.0
    interval: float = 0.0


@dataclass
class Feeds:
    """A registry of feeds in memory: each feed a FakeSource and a FakePublisher, every poll one write."""

    cursors: FakeCursorStore
    sources: dict[str, FakeSource] = field(default_factory=dict)
    publishers: dict[str, FakePublisher] = field(default_factory=dict)
    schedules: dict[str, tuple[float, float]] = field(default_factory=dict)
    polls: list[tuple[str, Poll]] = field(default_factory=list)
    _plugs: dict[str, Plug] = field(default_factory=dict)

    def add(self, feed: str, events: int, *, page_size: int = 10) -> FakeSource:
        self.sources[feed] = FakeSource(events, page_size=page_size)
        self.publishers[feed] = FakePublisher()
        self.schedules[feed] = (0.0, 0.0)
        return self.sources[feed]

    def scheduled(self) -> Sequence[Member]:
        return [Member(feed, self.cursors.load(feed), *self.schedules[feed]) for feed in self.sources]

    def plug(self, member: Member) -> Plug:
        if member.feed not in self._plugs:
            feed = Feed(id=member.feed, kind="fake", source_uri=f"urn:fake:{member.feed}")
            self._plugs[member.feed] = Plug(feed, self.sources[member.feed], self.publishers[member.feed])
        return self._plugs[member.feed]

    def polled(self, member: Member, poll: Poll) -> Member:
        self.polls.append((member.feed, poll))
        self.schedules[member.feed] = (poll.next_poll_at, poll.interval)
        return replace(
            member, cursor=poll.state or member.cursor, next_poll_at=poll.next_poll_at, interval=poll.interval
        )

    def dropped(self, member: Member) -> int:
        return 0


@dataclass
class Background:
    """Background work that notes what it did: a check of every feed as a run begins, a pass after
    each turn that read its feed to its end. ``work`` runs inside each piece (a request, a delay)."""

    done: list[str] = field(default_factory=list)
    left_undone: list[str] = field(default_factory=list)
    work: Callable[[], None] = lambda: None

    def begin(self, members: Sequence[Member], now: float) -> list[Task[Member]]:
        return [Task(member, "check", self._work(f"check {member.feed}", check=True)) for member in members]

    def urgent(self, member: Member, now: float) -> bool:
        return False

    def after(self, turn: Turn[Member]) -> list[Task[Member]]:
        assert turn.again is not None
        return [Task(turn.again, "pass", self._work(f"pass {turn.feed}"))]

    def left(self, tasks: Sequence[Task[Member]]) -> None:
        self.left_undone += [f"{task.kind} {task.member.feed}" for task in tasks]

    def _work(self, name: str, *, check: bool = False) -> Callable[[], Found]:
        def work() -> Found:
            self.done.append(name)
            self.work()
            return Found(name.split()[1], recovered=1, check=check)

        return work


@dataclass
class Rig:
    clock: Callable[[], float]
    feeds: Feeds
    background: Background
    budget: Budget
    fleet: Fleet[Member]


def make_rig(polling: Polling, *, clock: Callable[[], float], budget: Budget | None = None, margin: float = 1) -> Rig:
    cursors = FakeCursorStore(clock=clock)
    feeds, background = Feeds(cursors), Background()
    budget = budget or Budget()
    fleet = Fleet(
        kind="fake",
        feeds=feeds,
        background=background,
        cursors=cursors,
        budget=budget,
        polling=polling,
        safety_margin=margin,
        noun=("account", "accounts"),
        clock=clock,
    )
    return Rig(clock, feeds, background, budget, fleet)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    metrics.clear_metrics()
    logger.remove_keys(["feed", "cursor"])


@pytest.fixture
def rig() -> Rig:
    polling = Polling(max_in_flight=2, per_second=100, min_interval=60, max_interval=240, pages_per_turn=2)
    return make_rig(polling, clock=FakeClock())


def relayed_in_order(rig: Rig) -> None:
    """Every feed's published events are exactly those before its cursor: nothing lost, nothing ahead."""
    for feed, source in rig.feeds.sources.items():
        position = offset_of(rig.feeds.cursors.load(feed).position)
        assert rig.feeds.publishers[feed].ids == source.ids[:position], feed


def test_every_feed_is_relayed_to_its_end_a_few_pages_a_turn_each_cursor_its_own(rig: Rig) -> None:
    for feed, events in (("a", 55), ("b", 3), ("c", 0)):
        rig.feeds.add(feed, events)

    report = rig.fleet.run(lambda: LONG)

    assert report.outcome is Outcome.CAUGHT_UP
    assert rig.feeds.cursors.load("a").position == cursor_at(55)
    assert rig.feeds.cursors.load("b").position == cursor_at(3)
    assert [feed for feed, _ in rig.feeds.polls].count("a") == 3, "six pages, two a turn"
    shown = report.as_dict()
    assert (shown["accounts"], shown["polled"], shown["with_events"], shown["events"]) == (3, 3, 2, 58)
    relayed_in_order(rig)


def test_a_quiet_feed_waits_twice_as_long_each_poll_up_to_the_maximum(rig: Rig) -> None:
    rig.feeds.add("quiet", 0)
    clock = rig.clock
    assert isinstance(clock, FakeClock)
    intervals = []
    for _ in range(4):
        rig.fleet.run(lambda: LONG)
        next_poll_at, interval = rig.feeds.schedules["quiet"]
        intervals.append(interval)
        assert clock() + 0.9 * interval - 1 <= next_poll_at <= clock() + interval
        clock.advance(next_poll_at - clock())
    assert intervals == [60, 120, 240, 240]

    clock.advance(-100)  # not due yet
    polls = len(rig.feeds.polls)
    rig.fleet.run(lambda: LONG)
    assert len(rig.feeds.polls) == polls, "a feed that is not due costs nothing"


def test_background_work_follows_the_turns_and_what_a_run_leaves_undone_goes_back_to_the_kind(rig: Rig) -> None:
    for feed in ("a", "b"):
        rig.feeds.add(feed, 5)

    report = rig.fleet.run(lambda: LONG)

    # Both feeds are due at once: their turns go first, and each feed's pass ahead of its check due
    # at the start (a feed's check waits while its turn runs; its pass goes to the front of the line).
    done = rig.background.done
    assert sorted(done) == ["check a", "check b", "pass a", "pass b"]
    assert done[0].startswith("pass")
    assert done.index("pass a") < done.index("check a")
    assert done.index("pass b") < done.index("check b")
    assert report.fleet is not None
    assert (report.fleet.recovered, report.fleet.reconciled, report.fleet.checked) == (4, 2, 2)
    assert rig.background.left_undone == []

    assert isinstance(rig.clock, FakeClock)
    rig.clock.advance(3600)
    report = rig.fleet.run(lambda: 0.5)  # inside the safety margin: nothing begins
    assert report.outcome is Outcome.OUT_OF_TIME
    assert sorted(rig.background.left_undone) == ["check a", "check b"]


def test_while_feeds_wait_for_their_turn_no_background_work_begins() -> None:
    # One place in flight, so two turns at a time: six feeds due at once wait in line, and the checks
    # due at the start (and the passes after each turn) wait until every one has had its turn.
    polling = Polling(max_in_flight=1, per_second=100, min_interval=60, max_interval=240, pages_per_turn=5)
    rig = make_rig(polling, clock=FakeClock())
    log: list[str] = []

    def read(cursor: str | None) -> None:
        log.append("turn" if cursor is None else "page")
        time.sleep(0.005)  # a turn takes a moment: the others queue behind it

    for name in "abcdef":
        rig.feeds.add(name, 25).before_read = read
    rig.background.work = lambda: log.append("background")

    report = rig.fleet.run(lambda: LONG)

    assert report.outcome is Outcome.CAUGHT_UP
    assert log.count("turn") == 6
    assert log.count("background") == 6 + 6  # a check and a pass each
    last_turn = max(i for i, entry in enumerate(log) if entry == "turn")
    first_background = log.index("background")
    assert last_turn < first_background, "background work began while a feed was due for its turn"
    relayed_in_order(rig)


def test_background_work_goes_through_the_budgets_background_lane_and_the_budget_holds() -> None:
    per_second, in_flight = 20, 2
    budget = Budget(max_in_flight=in_flight, per_second=per_second)
    polling = Polling(max_in_flight=in_flight, per_second=per_second, pages_per_turn=2, share=0.25)
    rig = make_rig(polling, clock=FakeClock(), budget=budget)
    sent: list[float] = []
    flying = [0, 0]  # now, most
    lock = threading.Lock()

    def request(_: str | None = None) -> None:
        """Kontur as the budget's requests reach it: how many at once, and when each came."""
        with budget.request():
            with lock:
                sent.append(time.monotonic())
                flying[0] += 1
                flying[1] = max(flying)
            time.sleep(0.005)
            with lock:
                flying[0] -= 1

    for name in "abcdef":
        rig.feeds.add(name, 25).before_read = request
    rig.background.work = request

    report = rig.fleet.run(lambda: LONG)

    polls = sum(len(source.reads) for source in rig.feeds.sources.values())
    background = len(rig.background.done)
    assert (budget.counts.requests, budget.counts.background) == (polls + background, background)
    assert report.as_dict()["reconciliation_requests"] == background
    assert flying[1] <= in_flight
    # Thirty requests at 20/s: the window binds, and no second as Kontur counts it sees more.
    assert max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent) <= per_second
    relayed_in_order(rig)


def test_a_run_returns_inside_its_deadline_however_much_waits_and_loses_nothing() -> None:
    polling = Polling(max_in_flight=2, per_second=1000, pages_per_turn=3, period=5)
    margin = 0.4
    rig = make_rig(polling, clock=time.time, margin=margin)
    for name in "abcde":
        rig.feeds.add(name, 2000).before_read = lambda _: time.sleep(0.02)
    rig.background.work = lambda: time.sleep(0.02)
    deadline = time.monotonic() + 1.2

    def time_left() -> float:
        return deadline - time.monotonic()

    report = rig.fleet.run(time_left)

    assert report.outcome is Outcome.OUT_OF_TIME
    assert time_left() > margin / 2, "the run went on into its safety margin"
    assert 0 < report.events < 5 * 2000
    relayed_in_order(rig)
    assert sorted(rig.background.left_undone) == [f"check {name}" for name in "abcde"], "no feed caught up"


def test_a_run_ends_before_the_next_tick_and_what_falls_due_later_is_the_next_runs() -> None:
    # A run every second (the schedule's period), handing over 0.4 s before the next tick. A feed
    # with a long backlog keeps the run busy; "early" falls due inside the run, "late" after the
    # point where it hands over. Overrunning the tick would make the next tick find the lease busy
    # and every feed due in the minute after it wait for the tick after that.
    polling = Polling(max_in_flight=2, per_second=1000, pages_per_turn=1, period=1.0, handover=0.4)
    rig = make_rig(polling, clock=time.time, margin=0.1)
    rig.feeds.add("busy", 5000).before_read = lambda _: time.sleep(0.02)
    rig.feeds.add("early", 3)
    rig.feeds.add("late", 3)
    start = time.time()
    rig.feeds.schedules["early"] = (start + 0.3, 60.0)
    rig.feeds.schedules["late"] = (start + 0.8, 60.0)

    first = rig.fleet.run(lambda: LONG)

    assert time.time() - start < polling.period, "the run went on past the next tick"
    assert first.outcome is Outcome.OUT_OF_TIME, "the backlog is left for the next run"
    assert offset_of(rig.feeds.cursors.load("early").position) == 3
    assert rig.feeds.cursors.load("late").position is None, "polled by the run that was handing over"

    second = rig.fleet.run(lambda: LONG)

    assert second.events > 3
    assert offset_of(rig.feeds.cursors.load("late").position) == 3
    relayed_in_order(rig)
