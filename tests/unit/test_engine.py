"""The relay engine's delivery guarantee, proved against in-memory fakes that fail on command.

What a user of the topic must be able to rely on: every event of the feed is published at least
once; a duplicate comes only from the page a run was publishing when it died; the cursor never
passes an event SNS has not accepted and never goes back; two runs of one feed never lose an event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kontur_relay.domain import errors
from kontur_relay.domain.cadence import Cadence
from kontur_relay.domain.engine import Outcome, Relay, RunReport
from kontur_relay.domain.errors import (
    CursorConflict,
    FeedStopped,
    FeedUnavailable,
    MalformedPage,
    PublishError,
    RelayError,
)
from kontur_relay.domain.lease import LEASE_SECONDS
from kontur_relay.domain.model import Feed, FeedEvent, Success
from kontur_relay.observability import logger, metrics
from tests.conftest import Records
from tests.fakes import Crash, FakeClock, FakeCursorStore, FakePublisher, FakeSource, cursor_at, offset_of

FEED = Feed(id="extern", kind="extern", source_uri="https://extern-api.test/v1/events")
#: A Lambda invocation's time, as the poller is deployed (template.yaml's Timeout).
INVOCATION_SECONDS = 300.0


@dataclass
class Rig:
    """A feed, a topic and a cursor table in memory, with the invariants checked on every cursor write."""

    source: FakeSource
    publisher: FakePublisher
    store: FakeCursorStore
    clock: FakeClock
    pipelined: bool = True
    #: How far the witness has looked into publisher.published (it only ever grows).
    _seen: int = 0
    _published: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.store.witness = self._witness

    def _witness(self, feed: str, position: str | None) -> None:
        """Runs inside the store, just before a cursor write lands."""
        # Pipelined, this runs on the writer's thread while the next page is being published: what
        # is counted as seen is exactly what was read here, not the list's length a moment later.
        accepted = self.publisher.published[self._seen :]
        self._published.update(event.id for event in accepted)
        self._seen += len(accepted)
        passed = self.source.ids[: offset_of(position)]
        unpublished = [event_id for event_id in passed if event_id not in self._published]
        assert not unpublished, f"the cursor would move to {position} past unpublished {unpublished[:5]}"
        current = self.store.items[feed].position
        assert offset_of(position) >= offset_of(current), f"the cursor would go back from {current} to {position}"

    def relay(self, *, margin: float = 30.0) -> Relay:
        return Relay(
            FEED,
            self.source,
            self.publisher,
            self.store,
            safety_margin=margin,
            pipelined=self.pipelined,
            clock=self.clock,
        )

    def run(self, *, seconds: float = INVOCATION_SECONDS, margin: float = 30.0) -> RunReport:
        """One scheduled invocation with ``seconds`` of time, as Lambda's remaining time counts it."""
        deadline = self.clock() + seconds
        return self.relay(margin=margin).run(lambda: deadline - self.clock())

    @property
    def position(self) -> str | None:
        return self.store.load(FEED.id).position


def make_rig(count: int = 0, *, page_size: int = 10, batch_size: int = 10, bypass_lease: bool = False) -> Rig:
    clock = FakeClock()
    return Rig(
        source=FakeSource(count, page_size=page_size),
        publisher=FakePublisher(batch_size=batch_size),
        store=FakeCursorStore(clock=clock, bypass_lease=bypass_lease),
        clock=clock,
    )


@pytest.fixture(autouse=True)
def _fresh_observability() -> Iterator[None]:
    """The engine adds to process-wide Powertools objects; a handler would flush them per invocation."""
    yield
    metrics.clear_metrics()
    logger.remove_keys(["feed", "cursor"])


def emitted_errors(stdout: str) -> list[dict[str, Any]]:
    """The ``Errors`` datapoints among the CloudWatch EMF documents Powertools printed."""
    found = []
    for line in stdout.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        names = [metric["Name"] for block in document["_aws"]["CloudWatchMetrics"] for metric in block["Metrics"]]
        if "Errors" in names:
            value = document["Errors"]
            total = sum(value) if isinstance(value, list) else value
            found.append({"error": document.get("error"), "kind": document.get("kind"), "value": total})
    return found


# -- crashes at every step boundary ---------------------------------------------------------------

#: Where a run can die: between reading a page and publishing it, between two publish batches, after
#: SNS accepted the whole page but before the cursor write, and after the cursor write landed.
STEPS = ("after_read", "after_batches", "before_cursor_write", "after_cursor_write")


@dataclass
class CrashPlan:
    page: int
    step: str
    #: after_batches: how many batches SNS accepted before the crash.
    batches: int
    error: BaseException


def arm(rig: Rig, plan: CrashPlan) -> list[str]:
    """Make the run die as planned on page ``plan.page``; return the ids the crash will duplicate:
    what SNS accepted of the pages whose cursor write never landed. Pipelined, a failed cursor write
    is seen once the next page is published too, so that page is among them."""
    page_size = rig.source.page_size
    batch = rig.publisher.batch_size
    page_ids = rig.source.ids[plan.page * page_size : (plan.page + 1) * page_size]
    next_ids = rig.source.ids[(plan.page + 1) * page_size : (plan.page + 2) * page_size] if rig.pipelined else []
    end = cursor_at(plan.page * page_size + len(page_ids))
    if plan.step == "before_cursor_write":
        rig.store.fail_advance(plan.error, to=end)
        return page_ids + next_ids
    if plan.step == "after_cursor_write":
        rig.store.fail_advance(plan.error, after_write=True, to=end)
        return next_ids
    armed = False

    def on_publish(events: Sequence[FeedEvent]) -> None:
        nonlocal armed
        if armed or not page_ids or events[0].id != page_ids[0]:
            return
        armed = True
        rig.publisher.fail_after(0 if plan.step == "after_read" else plan.batches, plan.error)

    rig.publisher.before_publish = on_publish
    return page_ids[: plan.batches * batch] if plan.step == "after_batches" else []


def crash_then_rerun(rig: Rig, plan: CrashPlan) -> list[str]:
    duplicates = arm(rig, plan)
    with pytest.raises(type(plan.error)):
        rig.run()
    rig.publisher.before_publish = None
    page_size = rig.source.page_size
    landed = plan.step == "after_cursor_write"
    expected_offset = min((plan.page + int(landed)) * page_size, len(rig.source.events))
    assert offset_of(rig.position) == expected_offset, "the cursor is not where the crash left it"

    # The next tick, after any lease the dead run may have left has expired.
    rig.clock.advance(LEASE_SECONDS + 1)
    report = rig.run()
    assert report.outcome is Outcome.CAUGHT_UP
    return duplicates


def assert_delivered(rig: Rig, duplicates: list[str]) -> None:
    published = Counter(rig.publisher.ids)
    assert set(published) == set(rig.source.ids), "an event of the feed was never published"
    assert published - Counter(rig.source.ids) == Counter(duplicates), "duplicates beyond the crash window"
    assert offset_of(rig.position) == len(rig.source.events)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_crash_at_any_step_then_a_rerun_publishes_everything_duplicating_only_the_crash_window(
    data: st.DataObject,
) -> None:
    count = data.draw(st.integers(1, 120), label="events")
    page_size = data.draw(st.integers(1, 35), label="page size")
    batch = data.draw(st.integers(1, 10), label="publish batch")
    rig = make_rig(count, page_size=page_size, batch_size=batch)
    rig.pipelined = data.draw(st.booleans(), label="pipelined")
    page = data.draw(st.integers(0, math.ceil(count / page_size) - 1), label="crash page")
    in_page = min(page_size, count - page * page_size)
    batches_in_page = math.ceil(in_page / batch)
    step = data.draw(st.sampled_from(STEPS), label="step")
    accepted = data.draw(st.integers(1, max(1, batches_in_page - 1)), label="batches accepted")
    if step == "after_batches" and batches_in_page == 1:
        step = "after_read"  # a single-batch page has no boundary between batches
    if step in ("after_read", "after_batches"):
        # SNS's refusal (the publisher gives up) or the process dying: the same for the cursor.
        error: BaseException = data.draw(st.sampled_from([Crash("killed"), PublishError("SNS did not accept")]))
    else:
        error = Crash("killed")  # a cursor store that fails is the process, or DynamoDB, going away
    plan = CrashPlan(page=page, step=step, batches=accepted, error=error)

    duplicates = crash_then_rerun(rig, plan)

    assert_delivered(rig, duplicates)


def ids(start: int, stop: int) -> list[str]:
    return [f"ev{i:06d}" for i in range(start, stop)]


# 70 events in pages of 25 and batches of 10: the second page is ev000025..ev000049, in three batches.
# Pipelined, the second page's cursor write is on its way while the third page (to ev000069) is
# published: a write that fails or dies is seen after that page, which is then published again too.
@pytest.mark.parametrize(
    ("step", "batches", "pipelined", "duplicated"),
    [
        ("after_read", 0, True, []),
        ("after_batches", 1, True, ids(25, 35)),
        ("after_batches", 2, True, ids(25, 45)),
        ("before_cursor_write", 0, True, ids(25, 70)),
        ("after_cursor_write", 0, True, ids(50, 70)),
        ("before_cursor_write", 0, False, ids(25, 50)),
        ("after_cursor_write", 0, False, []),
    ],
)
def test_a_crash_on_the_second_page_duplicates_exactly_what_sns_accepted_of_it(
    step: str, batches: int, pipelined: bool, duplicated: list[str]
) -> None:
    rig = make_rig(70, page_size=25, batch_size=10)
    rig.pipelined = pipelined

    assert crash_then_rerun(rig, CrashPlan(page=1, step=step, batches=batches, error=Crash("killed"))) == duplicated
    assert_delivered(rig, duplicated)


def test_a_page_that_keeps_failing_is_republished_each_tick_and_the_cursor_waits() -> None:
    rig = make_rig(30, page_size=30, batch_size=10)
    for _ in range(3):
        rig.publisher.fail_after(1, PublishError("SNS did not accept 10 of 10 messages"))
        with pytest.raises(PublishError):
            rig.run()
        assert rig.position is None

    assert rig.run().outcome is Outcome.CAUGHT_UP
    # Three failed ticks each got the first batch accepted before failing.
    assert_delivered(rig, rig.source.ids[:10] * 3)
    assert [error for _, error, _ in rig.store.failures] == ["PublishError: SNS did not accept 10 of 10 messages"] * 3


@pytest.mark.parametrize(("pipelined", "duplicated"), [(False, []), (True, ids(10, 20))])
def test_a_cursor_write_that_landed_but_whose_answer_was_a_conflict_is_read_again_and_loses_nothing(
    pipelined: bool, duplicated: list[str]
) -> None:
    # boto3 retries a write whose answer was lost; the retry then fails its own version check (the
    # store tells it from a conflict by its write id; this is the case it could not). The lease is
    # still the run's, so it reads the cursor again and goes on from there. Pipelined, it learns it
    # after publishing the next page, which it then publishes again.
    rig = make_rig(25, page_size=10)
    rig.pipelined = pipelined
    rig.store.fail_advance(CursorConflict("the cursor of feed extern is no longer at version 0"), after_write=True)

    report = rig.run()

    assert (report.outcome, report.cursor_after) == (Outcome.CAUGHT_UP, cursor_at(25))
    assert rig.store.items[FEED.id].lease_owner is None
    assert_delivered(rig, duplicated)


# -- two runs of one feed at once -----------------------------------------------------------------


def test_two_runs_that_read_the_same_page_one_wins_the_other_changes_nothing(logs: Records) -> None:
    rig = make_rig(45, page_size=10, bypass_lease=True)
    both_hold = threading.Barrier(2, timeout=10)
    lined_up: set[int] = set()

    def line_up(events: Sequence[FeedEvent]) -> None:
        # Both runs have read the first page and taken the lease before either publishes it.
        ident = threading.get_ident()
        if ident not in lined_up:
            lined_up.add(ident)
            both_hold.wait()

    rig.publisher.before_publish = line_up
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = [future.result(timeout=30) for future in [pool.submit(rig.run) for _ in range(2)]]

    outcomes = sorted(report.outcome for report in reports)
    assert outcomes == sorted([Outcome.CAUGHT_UP, Outcome.LOST_RACE])
    loser = next(report for report in reports if report.outcome is Outcome.LOST_RACE)
    assert (loser.events, loser.cursor_before, loser.cursor_after) == (0, None, None)
    assert rig.store.failures == [], "losing a race is not a failure"
    assert "Another run took the lease over; this run changed nothing more and stops" in logs.messages()
    # The loser's copies of the first page and of the second, published while its write was on its
    # way, are the only duplicates.
    assert_delivered(rig, rig.source.ids[:20])
    assert [offset_of(write.position) for write in rig.store.writes] == [10, 20, 30, 40, 45]


def test_a_run_whose_lease_expired_under_it_loses_to_the_run_that_took_the_lease_over() -> None:
    rig = make_rig(35, page_size=10)
    held = threading.Event()
    go_on = threading.Event()
    stalled_thread: list[int] = []

    def stall(batch: int) -> None:
        # The first run stalls inside its first publish (a long GC pause, a slow network).
        if not stalled_thread:
            stalled_thread.append(threading.get_ident())
        if threading.get_ident() == stalled_thread[0] and not go_on.is_set():
            held.set()
            assert go_on.wait(timeout=10)

    rig.publisher.before_batch = stall
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(rig.run)
        assert held.wait(timeout=10)
        assert rig.run().outcome is Outcome.LEASE_BUSY  # while the lease holds
        rig.clock.advance(LEASE_SECONDS + 1)
        second = rig.run()  # takes the expired lease over and drains the feed
        go_on.set()
        stalled_report = first.result(timeout=30)

    assert second.outcome is Outcome.CAUGHT_UP
    assert stalled_report.outcome is Outcome.LOST_RACE
    assert offset_of(rig.position) == 35, "the stalled run moved the cursor back"
    assert rig.store.items[FEED.id].lease_owner is None
    assert_delivered(rig, rig.source.ids[:10])


@settings(max_examples=15, deadline=None)
@given(page_size=st.integers(1, 13), runs=st.integers(2, 4), extra=st.integers(0, 40))
def test_runs_racing_without_a_lease_lose_nothing_and_never_move_the_cursor_back(
    page_size: int, runs: int, extra: int
) -> None:
    rig = make_rig(150, page_size=page_size, batch_size=3, bypass_lease=True)
    # Give up the GIL between batches so the runs interleave; the feed grows while they run.
    rig.publisher.before_batch = lambda batch: time.sleep(0)
    with ThreadPoolExecutor(max_workers=runs) as pool:
        futures = [pool.submit(rig.run) for _ in range(runs)]
        rig.source.append(extra)
        reports = [future.result(timeout=60) for future in futures]

    assert {report.outcome for report in reports} <= {Outcome.CAUGHT_UP, Outcome.LOST_RACE}
    rig.clock.advance(1)
    assert rig.run().outcome is Outcome.CAUGHT_UP  # picks up whatever the feed grew by
    published = Counter(rig.publisher.ids)
    assert set(published) == set(rig.source.ids)
    positions = [offset_of(write.position) for write in rig.store.writes]
    assert positions == sorted(positions), "the cursor went back"
    assert [write.version for write in rig.store.writes] == list(range(1, len(positions) + 1))


# -- the lease ------------------------------------------------------------------------------------


def test_a_run_while_another_holds_the_lease_looks_once_and_changes_nothing() -> None:
    rig = make_rig(20)
    rig.pipelined = False  # so that the reads counted are the second run's alone
    held = threading.Event()
    go_on = threading.Event()

    def hold(batch: int) -> None:
        held.set()
        assert go_on.wait(timeout=10)

    rig.publisher.before_batch = hold
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(rig.run)
        assert held.wait(timeout=10)
        rig.publisher.before_batch = None
        reads_before, writes_before = len(rig.source.reads), len(rig.store.writes)

        busy = rig.run()

        assert busy.outcome is Outcome.LEASE_BUSY
        assert busy.events == 0
        assert len(rig.source.reads) == reads_before + 1, "one look at the feed, before the lease"
        assert len(rig.store.writes) == writes_before
        go_on.set()
        assert first.result(timeout=30).outcome is Outcome.CAUGHT_UP
    assert rig.store.failures == []
    assert_delivered(rig, [])


def test_the_lease_is_short_renewed_while_the_run_goes_on_and_released_at_the_end() -> None:
    rig = make_rig(100, page_size=10)
    first_read: list[float | None] = []
    seen: list[tuple[float, float | None]] = []

    def slow_publish(events: Sequence[FeedEvent]) -> None:
        rig.clock.advance(20)  # each page takes 20 s: the run outlasts its first lease several times
        seen.append((rig.clock(), rig.store.items[FEED.id].lease_until))

    def look(cursor: str | None) -> None:
        item = rig.store.items.get(FEED.id)
        first_read.append(item.lease_until if item is not None else None)

    rig.source.before_read = look
    rig.publisher.before_publish = slow_publish
    started = rig.clock()

    assert rig.run(seconds=900).outcome is Outcome.CAUGHT_UP

    assert first_read[0] is None, "the first look at the feed comes before the lease"
    assert seen[0][1] == started + LEASE_SECONDS, "a lease of one schedule period, not the whole invocation"
    assert all(until is not None and until > now for now, until in seen), "the lease lapsed mid-run"
    assert max(until for _, until in seen if until is not None) > started + 3 * LEASE_SECONDS
    assert rig.store.items[FEED.id].lease_owner is None


def test_a_run_killed_mid_run_blocks_its_feed_for_one_lease_at_most_whatever_its_timeout() -> None:
    rig = make_rig(30, page_size=10)
    rig.publisher.fail_after(0, Crash("killed"))

    def releases_nothing(feed: str, owner: str, *, success: Success | None = None) -> None:
        """A killed run's last act is not to give its lease up."""

    rig.store.release_lease = releases_nothing  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rig.run(seconds=900)
    del rig.store.release_lease

    assert rig.run(seconds=900).outcome is Outcome.LEASE_BUSY
    rig.clock.advance(LEASE_SECONDS + 1)
    assert rig.run(seconds=900).outcome is Outcome.CAUGHT_UP
    assert_delivered(rig, [])


def test_a_lease_left_by_a_dead_run_blocks_until_it_expires_then_is_taken_over() -> None:
    rig = make_rig(15)
    rig.store.acquire_lease(FEED.id, "dead-run", rig.clock() + 60)

    assert rig.run().outcome is Outcome.LEASE_BUSY
    assert rig.source.reads == [None, cursor_at(10)], "one look and the page after it, nothing relayed"
    assert rig.publisher.published == []

    rig.clock.advance(61)
    assert rig.run().outcome is Outcome.CAUGHT_UP
    assert_delivered(rig, [])


# -- paging ---------------------------------------------------------------------------------------


def test_a_run_reads_full_pages_until_a_short_one() -> None:
    rig = make_rig(55, page_size=10)

    report = rig.run()

    assert (report.outcome, report.pages, report.events) == (Outcome.CAUGHT_UP, 6, 55)
    assert rig.source.reads == [None, *[cursor_at(n) for n in range(10, 60, 10)]]
    assert rig.store.items[FEED.id].last_success == {"backlog": 0, "backlog_capped": False}


def test_a_run_stops_on_an_empty_page_and_keeps_the_cursor() -> None:
    rig = make_rig(30, page_size=10)

    report = rig.run()

    assert (report.outcome, report.pages, report.events) == (Outcome.CAUGHT_UP, 4, 30)
    assert rig.position == cursor_at(30)
    assert len(rig.store.writes) == 3, "an empty page wrote the cursor"

    again = rig.run()
    assert (again.outcome, again.pages, again.events) == (Outcome.CAUGHT_UP, 1, 0)
    assert rig.publisher.calls == 3, "an empty page was published"


def test_a_run_stops_with_out_of_time_when_less_than_the_margin_is_left_and_the_next_continues() -> None:
    rig = make_rig(100, page_size=10)
    # Each page takes 20 s of the 300 to read. After the first, 280 s are left: the next page, read
    # while this one is published, would end with 240 s left, inside the 250 s margin.
    rig.source.before_read = lambda cursor: rig.clock.advance(20)

    report = rig.run(margin=250)

    assert (report.outcome, report.pages, report.events) == (Outcome.OUT_OF_TIME, 1, 10)
    assert rig.position == cursor_at(10)
    assert rig.store.items[FEED.id].last_success is not None, "running out of time is a success"

    rest = rig.run(margin=30)
    assert rest.outcome is Outcome.CAUGHT_UP
    assert rest.cursor_before == cursor_at(10)
    assert_delivered(rig, [])


@pytest.mark.parametrize("pipelined", [True, False])
@pytest.mark.parametrize("seconds_a_page", [12.0, 40.0, 100.0])
def test_with_a_publisher_slowed_to_seconds_a_page_every_run_returns_before_its_deadline(
    pipelined: bool, seconds_a_page: float
) -> None:
    rig = make_rig(200, page_size=10)
    rig.pipelined = pipelined
    rig.publisher.before_publish = lambda events: rig.clock.advance(seconds_a_page)  # SNS answering slowly
    relay = rig.relay()  # one warm container, run after run

    outcomes: list[Outcome] = []
    while not outcomes or outcomes[-1] is not Outcome.CAUGHT_UP:
        deadline = rig.clock() + INVOCATION_SECONDS
        outcomes.append(relay.run(lambda: deadline - rig.clock()).outcome)  # noqa: B023 - called at once
        assert rig.clock() < deadline, f"a run ended {rig.clock() - deadline:.0f} s after its deadline"
        rig.clock.advance(60)
        assert len(outcomes) < 50, "the feed does not drain"

    assert_delivered(rig, [])


def test_a_backlog_of_50000_events_in_pages_of_100_drains_in_two_ticks() -> None:
    rig = make_rig(50_000, page_size=100, batch_size=10)
    # Unpipelined: the fake clock adds up steps that would overlap, and pipelined they time each other.
    rig.pipelined = False
    # A page costs 0.7 s of the invocation: a read of 0.5 s and ten PublishBatch calls of 20 ms.
    rig.source.before_read = lambda cursor: rig.clock.advance(0.5)
    rig.publisher.before_batch = lambda batch: rig.clock.advance(0.02)

    reports: list[RunReport] = []
    while not reports or reports[-1].outcome is not Outcome.CAUGHT_UP:
        reports.append(rig.run())
        rig.clock.advance(60)  # the next scheduled tick
        assert len(reports) < 10, "the backlog does not drain"

    # 300 s less a 30 s margin at 0.7 s a page. A page is read (begun) only if it ends before the
    # margin: the 385th is begun with 30.8 s left, the 386th would end with 29.3 s: 38,500 events.
    assert [(report.outcome, report.events) for report in reports] == [
        (Outcome.OUT_OF_TIME, 38_500),
        (Outcome.CAUGHT_UP, 11_500),
    ]
    assert_delivered(rig, [])


# -- stopped feeds and failures -------------------------------------------------------------------


def test_a_stopped_feed_is_not_read() -> None:
    rig = make_rig(10)
    rig.store.record_failure(FEED.id, "FeedStopped: Diadoc answered 402 (status=402)", stop=True)

    report = rig.run()

    assert report.outcome is Outcome.STOPPED
    assert rig.source.reads == []
    assert rig.publisher.published == []
    assert rig.store.items[FEED.id].lease_owner is None


def test_feed_stopped_records_its_reason_stops_the_feed_until_an_operator_resumes_it(capsys) -> None:
    rig = make_rig(10)
    rig.source.faults.append(FeedStopped("Diadoc answered 402: the box is not paid", status=402))

    with pytest.raises(FeedStopped):
        rig.run()

    reason = rig.store.load(FEED.id).stopped_reason
    assert reason == "FeedStopped: Diadoc answered 402: the box is not paid (status=402)"
    assert emitted_errors(capsys.readouterr().out) == [{"error": "feed_stopped", "kind": FEED.kind, "value": 1.0}]
    assert rig.run().outcome is Outcome.STOPPED
    assert len(rig.source.reads) == 1

    state = rig.store.load(FEED.id)
    rig.store.set_cursor(FEED.id, state.position, expected_version=state.version, by="operator@example.com")
    assert rig.run().outcome is Outcome.CAUGHT_UP
    assert_delivered(rig, [])


#: Every failure the relay names, except a lost race, which is an outcome and not a failure.
RELAY_ERRORS = sorted(
    (
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, RelayError) and value is not CursorConflict
    ),
    key=lambda error: error.__name__,
)


@pytest.mark.parametrize("error_class", RELAY_ERRORS, ids=lambda e: e.__name__)
def test_every_relay_error_is_recorded_for_operators_counted_by_kind_and_reraised(
    error_class: type[RelayError], capsys, logs: Records
) -> None:
    rig = make_rig(25, page_size=10)
    error = error_class("what went wrong")
    rig.run()  # the feed has moved on before the failure
    rig.source.append(10)
    if issubclass(error_class, PublishError):
        rig.publisher.fail_after(0, error)
    else:
        rig.source.faults.append(error)
    capsys.readouterr()

    with pytest.raises(error_class) as raised:
        rig.run()

    assert raised.value is error
    assert rig.store.failures == [
        (FEED.id, f"{error_class.__name__}: what went wrong", issubclass(error_class, FeedStopped))
    ]
    assert emitted_errors(capsys.readouterr().out) == [{"error": error.kind, "kind": FEED.kind, "value": 1.0}]
    assert "Run failed; the cursor stays at the last fully published page" in logs.messages(logging.ERROR)
    assert rig.position == cursor_at(25)
    assert rig.store.items[FEED.id].lease_owner is None, "a failed run kept its lease"


def test_an_unexpected_error_is_recorded_and_counted_as_unexpected(capsys) -> None:
    rig = make_rig(10)
    rig.store.fail_advance(RuntimeError("DynamoDB is unreachable"))

    with pytest.raises(RuntimeError):
        rig.run()

    assert rig.store.failures == [(FEED.id, "RuntimeError: DynamoDB is unreachable", False)]
    assert emitted_errors(capsys.readouterr().out) == [{"error": "unexpected", "kind": FEED.kind, "value": 1.0}]
    assert rig.position is None


@pytest.mark.parametrize("cursor", [None, cursor_at(10)])
def test_a_page_that_does_not_move_the_cursor_is_malformed_and_nothing_of_it_is_published(
    cursor: str | None, capsys
) -> None:
    rig = make_rig(30)
    if cursor is not None:
        rig.run(margin=INVOCATION_SECONDS + 1)  # one page, then out of time
        assert rig.position == cursor
    published_before = len(rig.publisher.published)
    rig.source.stuck = True
    capsys.readouterr()

    with pytest.raises(MalformedPage, match="a page of 10 events did not move the cursor"):
        rig.run()

    assert len(rig.publisher.published) == published_before
    assert rig.position == cursor
    assert emitted_errors(capsys.readouterr().out) == [{"error": "malformed_page", "kind": FEED.kind, "value": 1.0}]


def test_an_empty_page_that_does_not_move_the_cursor_is_normal() -> None:
    rig = make_rig(0)
    rig.source.stuck = True

    report = rig.run()

    assert (report.outcome, report.pages, report.events) == (Outcome.CAUGHT_UP, 1, 0)
    assert rig.store.writes == []
    assert rig.store.failures == []


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "unpipelined"])
def test_a_failure_in_a_later_page_keeps_the_pages_before_it(pipelined: bool) -> None:
    """Unpipelined (as the Diadoc poller's box turns run) a failed read once left a page ahead that
    never completed, and the run waited for it for ever."""
    rig = make_rig(50, page_size=10)
    rig.pipelined = pipelined

    def fail_third(cursor: str | None) -> None:
        if cursor == cursor_at(20):
            rig.source.before_read = None
            raise FeedUnavailable("Extern answered 503 on every try", status=503)

    rig.source.before_read = fail_third
    with pytest.raises(FeedUnavailable):
        rig.run()
    assert rig.position == cursor_at(20)

    assert rig.run().outcome is Outcome.CAUGHT_UP
    assert_delivered(rig, [])


# -- idle ticks, reading ahead, sub-minute polling ------------------------------------------------


def test_an_idle_tick_reads_once_and_writes_nothing_but_a_last_checked_time_every_few_minutes() -> None:
    rig = make_rig(0)
    assert rig.run().outcome is Outcome.CAUGHT_UP
    assert rig.store.successes == 1, "a feed never checked is marked checked at once"
    assert rig.store.items[FEED.id].lease_owner is None

    for _ in range(4):  # four more ticks within five minutes: nothing written
        rig.clock.advance(60)
        assert rig.run().outcome is Outcome.CAUGHT_UP
    assert rig.store.successes == 1
    assert rig.store.writes == []
    assert len(rig.source.reads) == 5, "one request a tick"

    rig.clock.advance(60)
    rig.run()
    assert rig.store.successes == 2, "refreshed after five minutes"


def test_the_next_page_is_read_while_the_current_one_is_published_and_the_cursor_still_follows_publishing() -> None:
    rig = make_rig(50, page_size=10)
    read_begun = {offset: threading.Event() for offset in range(0, 60, 10)}
    order: list[str] = []
    inner = rig.store.witness

    def on_read(cursor: str | None) -> None:
        order.append(f"read {offset_of(cursor)}")
        read_begun[offset_of(cursor)].set()

    def on_publish(events: Sequence[FeedEvent]) -> None:
        # A page's publishing waits until the next page's read has begun: proof that the two overlap.
        start = int(events[0].id.removeprefix("ev"))
        assert read_begun[start + 10].wait(timeout=10), f"page {start} was published before the next was read"

    def witness(feed: str, position: str | None) -> None:
        if inner is not None:
            inner(feed, position)  # never past an event SNS has not accepted, never back
        order.append(f"cursor {offset_of(position)}")

    rig.source.before_read = on_read
    rig.publisher.before_publish = on_publish
    rig.store.witness = witness

    assert rig.run().events == 50
    for page in range(1, 6):
        assert order.index(f"read {page * 10}") < order.index(f"cursor {page * 10}"), order
    assert_delivered(rig, [])


def test_a_pages_cursor_write_lands_while_the_next_page_is_published_and_never_before_its_own() -> None:
    rig = make_rig(50, page_size=10)
    publishing = {offset: threading.Event() for offset in range(0, 50, 10)}
    landed: list[int] = []
    inner = rig.store.witness

    def on_publish(events: Sequence[FeedEvent]) -> None:
        publishing[int(events[0].id.removeprefix("ev"))].set()

    def witness(feed: str, position: str | None) -> None:
        if inner is not None:
            inner(feed, position)  # never past an event SNS has not accepted, never back
        end = offset_of(position)
        if end < 50:
            # The write holds until the next page's publishing has begun: proof that the two overlap.
            assert publishing[end].wait(timeout=10), f"the write to {end} did not overlap the next page"
        landed.append(end)

    rig.publisher.before_publish = on_publish
    rig.store.witness = witness

    assert rig.run().events == 50
    assert landed == [10, 20, 30, 40, 50], "one write a page, in order"
    assert_delivered(rig, [])


def test_a_slow_cursor_write_never_holds_the_next_reads_back_and_the_cursor_still_follows_publishing() -> None:
    rig = make_rig(60, page_size=10)
    read_begun = {offset: threading.Event() for offset in range(0, 70, 10)}
    landed: list[int] = []
    inner = rig.store.witness

    def on_read(cursor: str | None) -> None:
        read_begun[offset_of(cursor)].set()

    def witness(feed: str, position: str | None) -> None:
        if inner is not None:
            inner(feed, position)  # never past an event SNS has not accepted, never back
        end = offset_of(position)
        # DynamoDB answering slowly: the write to the end of page N holds until page N+3 is being
        # read, which reading one page ahead only begins once this write has landed.
        if end + 20 < 60:
            assert read_begun[end + 20].wait(timeout=3), f"the read at {end + 20} waited for the write to {end}"
        landed.append(end)

    rig.source.before_read = on_read
    rig.store.witness = witness

    assert rig.run().events == 60
    assert landed == [10, 20, 30, 40, 50, 60], "one write a page, in order"
    assert_delivered(rig, [])


def test_the_page_after_the_first_is_read_while_the_lease_is_taken() -> None:
    rig = make_rig(30, page_size=10)
    second_read = threading.Event()
    acquire = rig.store.acquire_lease

    def on_read(cursor: str | None) -> None:
        if offset_of(cursor) == 10:
            second_read.set()

    def slow_lease(feed: str, owner: str, until: float) -> Any:
        # The lease's round trip lasts until the next page's read has begun: proof that they overlap.
        assert second_read.wait(timeout=3), "the second page was read only once the lease was taken"
        return acquire(feed, owner, until)

    rig.source.before_read = on_read
    rig.store.acquire_lease = slow_lease  # type: ignore[method-assign]

    report = rig.run()

    assert (report.outcome, report.events) == (Outcome.CAUGHT_UP, 30)
    assert rig.source.reads == [None, cursor_at(10), cursor_at(20), cursor_at(30)], "a page read twice"
    assert_delivered(rig, [])


def test_a_run_that_finds_the_lease_taken_reads_ahead_no_further_than_the_second_page() -> None:
    rig = make_rig(50, page_size=10)
    rig.store.acquire_lease(FEED.id, "another-run", rig.clock() + 60)

    assert rig.run().outcome is Outcome.LEASE_BUSY
    assert rig.source.reads == [None, cursor_at(10)], "the first page, and the next read while the lease was asked"
    assert rig.publisher.published == []
    assert rig.store.writes == []


def cadence_rig(count: int, every: float, *, pipelined: bool = True, bypass_lease: bool = False) -> tuple[Rig, Relay]:
    rig = make_rig(count, page_size=10, bypass_lease=bypass_lease)
    relay = Relay(
        FEED,
        rig.source,
        rig.publisher,
        rig.store,
        safety_margin=30,
        cadence=Cadence(every=every, period=60, handover=5),
        pipelined=pipelined,
        clock=rig.clock,
        sleep=rig.clock.advance,
    )
    return rig, relay


def test_with_a_sub_minute_cadence_a_run_polls_until_the_next_tick_and_writes_nothing_while_idle() -> None:
    rig, relay = cadence_rig(25, every=5)
    arrivals = {20.0: 3, 40.0: 4}  # events that appear while the run polls
    started = rig.clock()

    def on_read(cursor: str | None) -> None:
        for at, count in list(arrivals.items()):
            if rig.clock() - started >= at:
                rig.source.append(count)
                del arrivals[at]

    rig.source.before_read = on_read
    report = relay.run(lambda: 300.0)

    assert report.outcome is Outcome.CAUGHT_UP
    assert report.events == 32
    assert 60 <= rig.clock() - started <= 66, "the run lasts one period and a handover"
    polls = len(rig.source.reads)
    assert 12 <= polls <= 15, f"a poll every 5 s ({polls})"
    assert len(rig.store.writes) == 3 + 1 + 1, "cursor writes only for pages with events"
    assert rig.store.items[FEED.id].lease_owner is None
    assert_delivered(rig, [])


def test_the_next_tick_waits_for_the_handover_and_never_overlaps() -> None:
    rig, relay = cadence_rig(5, every=5)
    relay.run(lambda: 300.0)
    # A tick that comes while a run holds the lease waits for it, as long as its own minute lasts,
    # then takes over and polls for the rest of that minute.
    rig.store.acquire_lease(FEED.id, "ending-run", rig.clock() + 20)
    started = rig.clock()
    report = relay.run(lambda: 300.0)
    assert report.outcome is Outcome.CAUGHT_UP
    assert 60 <= rig.clock() - started <= 66, "the run polled until the next tick's handover"
    # One that could not poll at all in its minute steps aside.
    rig.store.acquire_lease(FEED.id, "stuck-run", rig.clock() + 70)
    assert relay.run(lambda: 300.0).outcome is Outcome.LEASE_BUSY


def test_a_run_that_waited_for_the_handover_relays_from_where_the_previous_run_left_the_cursor() -> None:
    rig, relay = cadence_rig(25, every=5)
    previous = "previous-run"
    rig.store.acquire_lease(FEED.id, previous, rig.clock() + 3)
    waits = 0

    def previous_run_goes_on(seconds: float) -> None:
        """While the next run waits for the lease, the previous one relays a page and hands over."""
        nonlocal waits
        waits += 1
        if waits == 1:
            state = rig.store.load(FEED.id)
            rig.publisher.publish(FEED, rig.source.events[:10])
            rig.store.advance(state, cursor_at(10), relayed=10)
            rig.store.release_lease(FEED.id, previous)
        rig.clock.advance(seconds)

    relay.sleep = previous_run_goes_on
    report = relay.run(lambda: 300.0)

    assert report.outcome is Outcome.CAUGHT_UP
    assert report.cursor_before == cursor_at(10), "the cursor as of taking the lease, not as of the tick"
    assert report.events == 15
    assert_delivered(rig, [])  # no page relayed twice


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_run_whose_cursor_another_writer_moved_reads_it_again_and_polls_on_while_the_lease_is_its_own(
    pipelined: bool, logs: Records
) -> None:
    rig, relay = cadence_rig(0, every=5, pipelined=pipelined)
    started = rig.clock()
    arrivals = [10.0, 20.0, 40.0]  # ten events each, seconds into the run

    def arrive(cursor: str | None) -> None:
        while arrivals and rig.clock() - started >= arrivals[0]:
            at = arrivals.pop(0)
            rig.source.append(10)
            if at == 20.0:
                # Another writer (a run that outlived its lease) relays these first and moves the cursor.
                state = rig.store.load(FEED.id)
                rig.publisher.publish(FEED, rig.source.events[10:20])
                rig.store.advance(state, cursor_at(20), relayed=10)

    rig.source.before_read = arrive
    report = relay.run(lambda: 300.0)

    assert report.outcome is Outcome.CAUGHT_UP
    assert 60 <= rig.clock() - started <= 66, "the run polled on for the rest of its minute"
    assert offset_of(rig.position) == 30
    assert set(rig.publisher.ids) == set(rig.source.ids), "an event was never published"
    assert "The cursor moved under this run; it goes on from there" in logs.messages()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_crash_anywhere_in_the_sub_minute_loop_loses_nothing_and_duplicates_only_past_the_cursor_it_left(
    data: st.DataObject,
) -> None:
    rig, relay = cadence_rig(
        data.draw(st.integers(0, 25), label="backlog"), every=5, pipelined=data.draw(st.booleans(), label="pipelined")
    )
    # Events that appear while the run polls: (seconds into the run, how many).
    arrivals = sorted(
        data.draw(st.lists(st.tuples(st.integers(1, 58), st.integers(1, 25)), max_size=4), label="arrivals")
    )
    started = rig.clock()

    def on_read(cursor: str | None) -> None:
        while arrivals and rig.clock() - started >= arrivals[0][0]:
            rig.source.append(arrivals.pop(0)[1])

    step = data.draw(st.sampled_from(["mid_publish", "before_cursor_write", "after_cursor_write"]), label="step")
    nth = data.draw(st.integers(0, 5), label="crash on publish call")
    batches = data.draw(st.integers(0, 1), label="batches accepted")

    def on_publish(events: Sequence[FeedEvent]) -> None:
        if rig.publisher.calls != nth:
            return
        if step == "mid_publish":
            rig.publisher.fail_after(batches, Crash("killed"))
        else:
            rig.store.fail_advance(Crash("killed"), after_write=step == "after_cursor_write")

    rig.source.before_read = on_read
    rig.publisher.before_publish = on_publish
    with contextlib.suppress(Crash):  # the run may end before the planned crash
        relay.run(lambda: 300.0)
    rig.publisher.before_publish = None
    left_at = offset_of(rig.position)
    past_cursor = Counter(event.id for event in rig.publisher.published[:] if int(event.id[2:]) >= left_at)

    # The next tick, once a dead run's lease has lapsed, with every event that was still to come.
    rig.clock.advance(LEASE_SECONDS + 1)
    for _, count in arrivals:
        rig.source.append(count)
    arrivals.clear()
    assert relay.run(lambda: 300.0).outcome is Outcome.CAUGHT_UP

    published = Counter(rig.publisher.ids)
    assert set(published) == set(rig.source.ids), "an event of the feed was never published"
    assert published - Counter(rig.source.ids) == past_cursor, "duplicates beyond what was published past the cursor"
    assert sum(past_cursor.values()) <= 2 * rig.source.page_size, "a crash window of more than two pages"
    assert offset_of(rig.position) == len(rig.source.events)


@pytest.mark.parametrize("pipelined", [True, False])
def test_sub_minute_runs_racing_without_a_lease_lose_nothing_and_never_move_the_cursor_back(pipelined: bool) -> None:
    rig, relay = cadence_rig(40, every=5, pipelined=pipelined, bypass_lease=True)
    rig.publisher.before_batch = lambda batch: time.sleep(0)  # the runs interleave between batches
    grown = threading.Event()

    def grow(cursor: str | None) -> None:
        if not grown.is_set() and rig.clock() - started >= 20:
            grown.set()
            rig.source.append(33)

    started = rig.clock()
    rig.source.before_read = grow
    with ThreadPoolExecutor(max_workers=3) as pool:
        reports = [future.result(timeout=60) for future in [pool.submit(relay.run, lambda: 300.0) for _ in range(3)]]

    assert {report.outcome for report in reports} <= {Outcome.CAUGHT_UP, Outcome.LOST_RACE}
    rig.clock.advance(LEASE_SECONDS + 1)
    assert relay.run(lambda: 300.0).outcome is Outcome.CAUGHT_UP  # whatever the last racer left
    assert set(rig.publisher.ids) == set(rig.source.ids), "an event of the feed was never published"
    positions = [offset_of(write.position) for write in rig.store.writes]
    assert positions == sorted(positions), "the cursor went back"
    assert offset_of(rig.position) == 73
