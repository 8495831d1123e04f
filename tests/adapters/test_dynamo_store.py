"""DynamoCursorStore against DynamoDB Local, on the table template.yaml declares.

The contract tests run against ``FakeCursorStore`` too: the engine's tests lean on the fake, so the
fake must keep the real store's promises (lease, versioned cursor, stop and resume).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import boto3
import pytest

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.domain.errors import CursorConflict
from kontur_relay.domain.model import CursorState, Success
from tests.fakes import FakeClock, FakeCursorStore

pytestmark = pytest.mark.slow


class Store(Protocol):
    """What the contract tests use: the CursorStore port plus the operators' set_cursor."""

    def acquire_lease(self, feed: str, owner: str, until: float) -> CursorState | None: ...
    def renew_lease(self, feed: str, owner: str, until: float) -> bool: ...
    def release_lease(self, feed: str, owner: str, *, success: Success | None = None) -> None: ...
    def load(self, feed: str) -> CursorState: ...
    def advance(self, state: CursorState, position: str | None, *, relayed: int) -> CursorState: ...
    def record_success(self, feed: str, *, backlog: int | None, backlog_capped: bool) -> None: ...
    def record_failure(self, feed: str, error: str, *, stop: bool = False) -> None: ...
    def set_cursor(self, feed: str, position: str | None, *, expected_version: int, by: str) -> CursorState: ...


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def dynamo_store(stack: Any, clock: Callable[[], float]) -> DynamoCursorStore:
    return DynamoCursorStore(boto3.resource("dynamodb").Table(stack.physical["CursorsTable"]), clock=clock)


@pytest.fixture
def dynamo(stack: Any, clock: FakeClock) -> DynamoCursorStore:
    return dynamo_store(stack, clock)


@pytest.fixture(params=["dynamodb-local", "fake"])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Store:
    if request.param == "fake":
        return FakeCursorStore(clock=clock)
    return dynamo_store(request.getfixturevalue("stack"), clock)


def count_writes(store: DynamoCursorStore) -> Callable[[], int]:
    """How many item writes ``store`` sends DynamoDB from now on."""
    writes: list[str] = []

    def seen(model: Any, **_: Any) -> None:
        if model.name in ("PutItem", "UpdateItem", "DeleteItem"):
            writes.append(model.name)

    store.table.meta.client.meta.events.register("before-call.dynamodb", seen)
    return lambda: len(writes)


# -- the contract both stores keep ----------------------------------------------------------------


def test_a_new_feed_starts_with_no_cursor_at_version_0(store: Store) -> None:
    assert store.load("extern") == CursorState(feed="extern", position=None, version=0)


def test_the_lease_is_exclusive_until_it_expires_then_another_run_takes_it_over(store: Store, clock: FakeClock) -> None:
    assert store.acquire_lease("extern", "run-a", clock() + 60)
    assert not store.acquire_lease("extern", "run-b", clock() + 60)
    assert store.acquire_lease("extern", "run-a", clock() + 60), "a run's own write, retried, finds its own lease"
    assert store.acquire_lease("diadoc-box-1", "run-b", clock() + 60), "leases are per feed"

    clock.advance(60)
    assert not store.acquire_lease("extern", "run-b", clock() + 60), "held up to its last second"
    clock.advance(1)
    assert store.acquire_lease("extern", "run-b", clock() + 60)


def test_taking_the_lease_returns_the_cursor_as_of_that_moment(store: Store, clock: FakeClock) -> None:
    # A run that looked at the cursor, then waited while the run before it moved it and handed over,
    # relays from where the lease finds the cursor.
    looked = store.load("extern")
    assert store.acquire_lease("extern", "run-a", clock() + 60)
    moved = store.advance(looked, "1_a", relayed=3)
    store.record_failure("extern", "FeedStopped: Diadoc answered 402", stop=True)
    store.release_lease("extern", "run-a")

    held = store.acquire_lease("extern", "run-b", clock() + 60)

    assert held is not None
    assert (held.position, held.version) == (moved.position, moved.version)
    assert held.stopped_reason == "FeedStopped: Diadoc answered 402"
    assert store.acquire_lease("extern", "run-c", clock() + 60) is None


def test_only_the_owner_releases_a_lease(store: Store, clock: FakeClock) -> None:
    assert store.acquire_lease("extern", "run-a", clock() + 60)
    clock.advance(61)
    assert store.acquire_lease("extern", "run-b", clock() + 60)

    store.release_lease("extern", "run-a")  # the run whose lease expired, finishing late
    assert not store.acquire_lease("extern", "run-c", clock() + 60)

    store.release_lease("extern", "run-b")
    assert store.acquire_lease("extern", "run-c", clock() + 60)


def test_the_cursor_moves_only_at_the_version_it_was_read_at(store: Store, clock: FakeClock) -> None:
    assert store.acquire_lease("extern", "run-a", clock() + 60)  # the engine's order: lease, then load
    read = store.load("extern")

    moved = store.advance(read, "1_a", relayed=3)

    assert moved == CursorState("extern", "1_a", 1)
    assert store.load("extern") == moved
    with pytest.raises(CursorConflict, match="no longer at version 0"):
        store.advance(read, "0_5", relayed=1)  # a run that read before the move: it cannot go back
    assert store.load("extern") == moved
    assert store.advance(moved, "2_b", relayed=2) == CursorState("extern", "2_b", 2)


def test_a_cursor_write_keeps_the_lease(store: Store, clock: FakeClock) -> None:
    assert store.acquire_lease("extern", "run-a", clock() + 60)
    store.advance(store.load("extern"), "1_a", relayed=1)
    store.record_success("extern", backlog=5, backlog_capped=False)

    assert not store.acquire_lease("extern", "run-b", clock() + 60)


def test_a_stop_halts_the_feed_until_an_operator_moves_the_cursor(store: Store) -> None:
    store.advance(store.load("extern"), "1_a", relayed=1)
    store.record_failure("extern", "FeedError: a transient failure")
    assert store.load("extern").stopped_reason is None

    store.record_failure("extern", "FeedStopped: Diadoc answered 402 (status=402)", stop=True)
    state = store.load("extern")
    assert (state.position, state.stopped_reason) == ("1_a", "FeedStopped: Diadoc answered 402 (status=402)")

    # Resuming at the same place is a cursor write "to where it is", with who asked.
    resumed = store.set_cursor("extern", state.position, expected_version=state.version, by="ops@example.com")
    assert resumed == CursorState("extern", "1_a", state.version + 1)
    assert store.load("extern").stopped_reason is None


def test_an_operators_cursor_write_is_guarded_by_the_version_too(store: Store) -> None:
    seen = store.load("extern")
    store.advance(seen, "1_a", relayed=1)  # the relay moved on while the operator looked

    with pytest.raises(CursorConflict):
        store.set_cursor("extern", "0_0", expected_version=seen.version, by="ops@example.com")
    assert store.load("extern").position == "1_a"


# -- DynamoDB Local only --------------------------------------------------------------------------


def test_of_many_writers_at_one_version_exactly_one_moves_the_cursor(dynamo: DynamoCursorStore) -> None:
    read = dynamo.load("extern")

    def write(position: str) -> str:
        try:
            dynamo.advance(read, position, relayed=1)
        except CursorConflict:
            return "conflict"
        return "moved"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(write, [f"{n}_x" for n in range(8)]))

    assert sorted(results) == ["conflict"] * 7 + ["moved"]
    winner = f"{results.index('moved')}_x"
    assert dynamo.load("extern") == CursorState("extern", winner, 1)


def test_a_run_gives_its_lease_up_and_records_its_success_in_one_write(
    dynamo: DynamoCursorStore, clock: FakeClock
) -> None:
    assert dynamo.acquire_lease("extern", "run-a", clock() + 60)
    dynamo.mark_not_configured("extern", "an earlier tick found no credentials")
    writes = count_writes(dynamo)

    dynamo.release_lease("extern", "run-a", success=Success(backlog=40, backlog_capped=False))

    status = dynamo.status("extern")
    assert status is not None
    assert (status.running, status.backlog, status.last_success_at, status.not_configured) == (
        False,
        40,
        "2027-01-15T08:00:00Z",
        None,
    )
    assert writes() == 1


def test_a_run_whose_lease_lapsed_still_records_its_success_and_leaves_the_new_owners_lease(
    dynamo: DynamoCursorStore, clock: FakeClock
) -> None:
    assert dynamo.acquire_lease("extern", "run-a", clock() + 60)
    clock.advance(61)
    assert dynamo.acquire_lease("extern", "run-b", clock() + 60)

    dynamo.release_lease("extern", "run-a", success=Success(backlog=None))

    status = dynamo.status("extern")
    assert status is not None
    assert (status.running, status.last_success_at) == (True, "2027-01-15T08:01:01Z")
    assert not dynamo.acquire_lease("extern", "run-c", clock() + 60), "run-b's lease stays"


def test_status_shows_operators_what_the_relay_did(dynamo: DynamoCursorStore, clock: FakeClock) -> None:
    assert dynamo.status("extern") is None

    assert dynamo.acquire_lease("extern", "run-a", clock() + 60)
    state = dynamo.advance(dynamo.load("extern"), "1_a", relayed=10)
    state = dynamo.advance(state, "2_b", relayed=15)
    dynamo.record_success("extern", backlog=1_000, backlog_capped=True)
    running = dynamo.status("extern")

    assert running is not None
    assert running.as_dict() == {
        "feed": "extern",
        "cursor": "2_b",
        "version": 2,
        "events_relayed": 25,
        "last_success_at": "2027-01-15T08:00:00Z",
        "last_error": None,
        "last_error_at": None,
        "backlog": 1_000,
        "backlog_capped": True,
        "stopped_reason": None,
        "not_configured": None,
        "running": True,
        "updated_by": None,
    }

    dynamo.release_lease("extern", "run-a")
    clock.advance(90)
    dynamo.record_failure("extern", "FeedUnavailable: " + "x" * 5_000)
    dynamo.record_success("extern", backlog=None, backlog_capped=False)
    after = dynamo.status("extern")
    assert after is not None
    assert (after.running, after.backlog, after.backlog_capped) == (False, None, False)
    assert after.last_error is not None
    assert len(after.last_error) == 2_000, "an error is kept, cut to a size an item can hold"
    assert after.last_error_at == "2027-01-15T08:01:30Z"


def test_a_lease_past_its_time_does_not_show_as_running(dynamo: DynamoCursorStore, clock: FakeClock) -> None:
    assert dynamo.acquire_lease("extern", "dead-run", clock() + 60)
    clock.advance(61)

    status = dynamo.status("extern")
    assert status is not None
    assert not status.running


def test_set_cursor_records_who_asked_and_resumes_a_stopped_feed(dynamo: DynamoCursorStore) -> None:
    state = dynamo.advance(dynamo.load("diadoc-box-1"), "idx-10", relayed=10)
    dynamo.record_failure("diadoc-box-1", "FeedStopped: Diadoc answered 403 (status=403)", stop=True)

    dynamo.set_cursor("diadoc-box-1", "idx-5", expected_version=state.version, by="ops@example.com")

    status = dynamo.status("diadoc-box-1")
    assert status is not None
    assert (status.cursor, status.stopped_reason, status.updated_by) == ("idx-5", None, "ops@example.com")
    assert status.events_relayed == 10, "replaying is not relaying"
    assert status.last_error == "FeedStopped: Diadoc answered 403 (status=403)", "the history stays"


class CountingScans:
    """The real table, counting the Scan calls made on it."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.scans = 0

    def scan(self, **kwargs: Any) -> Any:
        self.scans += 1
        return self.table.scan(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)


def test_statuses_pages_through_every_feed(stack: Any, clock: FakeClock) -> None:
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    writer = DynamoCursorStore(table, clock=clock)
    # A Scan page ends at 1 MB: 600 feeds with a long last error make several pages.
    feeds = [f"diadoc-box-{n:03d}" for n in range(600)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda feed: writer.record_failure(feed, f"FeedUnavailable: {feed} " + "x" * 2_000), feeds))
    counting = CountingScans(table)

    statuses = list(DynamoCursorStore(counting, clock=clock).statuses())  # type: ignore[arg-type]

    assert counting.scans > 1, "the test did not make DynamoDB page"
    assert sorted(status.feed for status in statuses) == feeds


# -- writes whose answer was lost -----------------------------------------------------------------


class LostAnswer:
    """The table, except that the next update lands and its answer is lost: boto3 then sends the
    same request again, and the caller sees what that retry gets."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.lose_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def update_item(self, **request: Any) -> Any:
        if self.lose_next:
            self.lose_next = False
            self.table.update_item(**request)
        return self.table.update_item(**request)


def test_a_lease_write_retried_after_its_answer_was_lost_is_the_runs_own(dynamo: DynamoCursorStore, clock) -> None:
    lossy = LostAnswer(dynamo.table)
    store = DynamoCursorStore(lossy, clock=clock)  # type: ignore[arg-type]
    lossy.lose_next = True

    assert store.acquire_lease("extern", "run-1", clock() + 60), "the retry found the run's own lease"
    assert not store.acquire_lease("extern", "run-2", clock() + 60)
    assert store.renew_lease("extern", "run-1", clock() + 120)
    assert not store.renew_lease("extern", "run-2", clock() + 120)


def test_a_cursor_write_that_landed_but_whose_answer_was_lost_is_not_a_conflict(
    dynamo: DynamoCursorStore, clock
) -> None:
    lossy = LostAnswer(dynamo.table)
    store = DynamoCursorStore(lossy, clock=clock)  # type: ignore[arg-type]
    state = store.load("extern")
    lossy.lose_next = True

    moved = store.advance(state, "10_a", relayed=10)

    assert (moved.position, moved.version) == ("10_a", 1)
    assert store.load("extern").version == 1, "written once"
    with pytest.raises(CursorConflict):  # a real conflict still is one
        store.advance(state, "20_b", relayed=10)
