"""The fault campaign, as the project's own test: the Extern relay through its real adapters (the
simulator over HTTP answering with transient faults, moto's SNS delivering to an SQS queue,
DynamoDB Local), eight runs at a time, each killed at random and at every step boundary, with SNS
and DynamoDB faults injected. What must hold, whatever happens:

- no event lost: every event of the feed reaches the queue;
- duplicates only from a crash: at most the page a killed run was publishing;
- the cursor never goes back;
- a killed run (which releases nothing) holds its feed up for one lease at most: the schedule
  period, scaled down here to a couple of seconds.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.model import CursorState, Feed, FeedEvent, Success
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.source import ExternSource, read_extern_error
from kontur_relay.kontur import session as http
from kontur_relay.kontur.client import KonturApi
from kontur_relay.sinks.sns import SnsPublisher
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator
from tests.fakes import Crash
from tests.queues import bodies, receive, subscribe

pytestmark = pytest.mark.slow

PAGE = 20
LEASE = 2.0  # "one schedule period", scaled down
STEPS = ("before_publish", "mid_publish", "after_publish", "after_cursor_write")


class Chaos:
    """What one run meets: a kill at a step (the process dies: it releases nothing), and SNS and
    DynamoDB failing now and then as AWS does."""

    def __init__(self, rng: random.Random, kill: str | None) -> None:
        self.rng = rng
        self.kill = kill
        self.killed = False
        self.pages = 0
        self.kill_at_page = rng.randint(1, 2)

    def strikes(self, step: str) -> bool:
        if self.kill == step and self.pages == self.kill_at_page and not self.killed:
            self.killed = True
            return True
        return False


class ChaosPublisher:
    def __init__(self, real: SnsPublisher, chaos: Chaos) -> None:
        self.real, self.chaos = real, chaos

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        self.chaos.pages += 1
        if self.chaos.strikes("before_publish"):
            raise Crash("killed before publishing")
        if self.chaos.rng.random() < 0.1:
            raise PublishError("injected: SNS refused the batch")
        if self.chaos.strikes("mid_publish"):
            self.real.publish(feed, events[: len(events) // 2])
            raise Crash("killed between two PublishBatch calls")
        self.real.publish(feed, events)
        if self.chaos.strikes("after_publish"):
            raise Crash("killed after SNS took the page, before the cursor write")


class ChaosCursors:
    def __init__(self, real: DynamoCursorStore, chaos: Chaos, moves: list[tuple[float, str | None]]) -> None:
        self.real, self.chaos, self.moves = real, chaos, moves

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def advance(self, state: CursorState, position: str | None, *, relayed: int) -> CursorState:
        if self.chaos.rng.random() < 0.1:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")
        moved = self.real.advance(state, position, relayed=relayed)
        self.moves.append((time.monotonic(), position))
        if self.chaos.strikes("after_cursor_write"):
            raise Crash("killed after the cursor write")
        return moved

    def release_lease(self, feed: str, owner: str, *, success: Success | None = None) -> None:
        if not self.chaos.killed:  # a killed process releases nothing: its lease must lapse
            self.real.release_lease(feed, owner, success=success)


@pytest.fixture
def kontur() -> Iterator[tuple[IdentitySimulator, ExternSimulator]]:
    with IdentitySimulator(token_lifetime=600) as identity, ExternSimulator(identity, seed=21) as sim:
        yield identity, sim


def offset(position: str | None) -> int:
    """Where in the log an Extern cursor points: the offset before the ``_``, in hexadecimal."""
    return -1 if position is None else int(position.split("_", 1)[0], 16)


def test_a_fault_campaign_loses_nothing_and_never_moves_a_cursor_back(stack, aws, kontur) -> None:
    identity, extern = kontur
    extern.add_integrator("relay", "key", username="svc", password="pw")
    extern.setup("relay", accounts=3)
    extern.generate(400)
    expected = extern.events_visible_to("relay")
    extern.faults.randomly(0.05, seed=4, faults=(Fault.server_error(503), Fault.throttle(retry_after=0.05)))
    name = f"extern-{uuid.uuid4().hex}"
    secret = {"token_url": identity.token_url, "client_id": "relay", "client_secret": "key", "api_key": "key"}
    secret |= {"grant_type": "password", "username": "svc", "password": "pw", "scope": "extern.api"}
    aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(secret))
    queue = subscribe(aws, stack.physical["EventsTopic"])
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    feed = Feed(id="extern", kind="extern", source_uri=f"{extern.url}/v1/events")
    session = http.session(retries=3, backoff=0.01)
    api = KonturApi(
        extern.url,
        session,
        extern_authenticator(CredentialsSecret(name, aws["secretsmanager"]), session),
        read_extern_error,
        name="Extern",
    )
    sns = SnsPublisher(aws["sns"], stack.physical["EventsTopic"])
    moves: list[tuple[float, str | None]] = []
    kills: list[float] = []
    rng = random.Random(8)
    lock = threading.Lock()

    def one_run(kill: str | None, seed: int) -> None:
        chaos = Chaos(random.Random(seed), kill)
        cursors = ChaosCursors(DynamoCursorStore(table), chaos, moves)
        relay = Relay(feed, ExternSource(api, take=PAGE), ChaosPublisher(sns, chaos), cursors, lease_seconds=LEASE)
        try:
            relay.run(lambda: 300.0)
        except Crash:
            with lock:
                kills.append(time.monotonic())
        except (PublishError, ClientError):
            pass  # a failed run: recorded on the feed; the next one goes on from the cursor

    # Ten waves of eight runs at once, each run to be killed at a step of its page (the steps in
    # turn), then clean runs. One run of a wave holds the lease; the others find it busy. A killed
    # run's lease lapses after LEASE: the next wave but one takes the feed over.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for wave in range(10):
            kinds = [STEPS[(wave + i) % len(STEPS)] for i in range(8)]
            list(pool.map(one_run, kinds, [rng.randrange(1 << 30) for _ in kinds]))
            time.sleep(LEASE / 2)
        extern.faults.randomly(0, seed=0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(LEASE)  # any lease a killed run left lapses
            one_run(None, 0)
            if DynamoCursorStore(table).load("extern").position == extern.end_id:
                break

    delivered = Counter(body["id"] for body in bodies(receive(aws, queue)))
    assert set(delivered) == set(expected), f"{len(set(expected) - set(delivered))} events lost"
    duplicates = sum((delivered - Counter(expected)).values())
    assert duplicates <= (len(kills) + 1) * PAGE * 8, "duplicates beyond the pages killed runs published"
    positions = [offset(position) for _, position in sorted(moves)]
    # Each cursor write, in time order, is at or past the one before.
    assert all(b >= a for a, b in itertools.pairwise(positions)), "a cursor went back"
    assert kills, "the campaign killed no run"
    # After each kill, the feed moved again within one lease (one schedule period) and a wave.
    for killed_at in kills:
        later = [at for at, _ in moves if at > killed_at]
        if later:
            assert min(later) - killed_at <= LEASE + 30, "a killed run held its feed up for longer than a lease"
