"""The Diadoc feed kind: a feed per registered box (``diadoc:<boxId>``), its cursor rules, and the
one budgeted poller that serves every box."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import quote

from kontur_relay import wiring
from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.event_memory import DynamoEventMemory
from kontur_relay.domain.fleet.run import Fleet
from kontur_relay.domain.ports import Publisher
from kontur_relay.feeds import EnginePoller, PositionRefused
from kontur_relay.feeds.diadoc.auth import diadoc_authenticator
from kontur_relay.feeds.diadoc.background import Reconciliation
from kontur_relay.feeds.diadoc.config import api_version
from kontur_relay.feeds.diadoc.cursor import Position
from kontur_relay.feeds.diadoc.fleet import BoxFeeds
from kontur_relay.feeds.diadoc.polling import Reconciling, polling
from kontur_relay.feeds.diadoc.reconcile import Reconciler
from kontur_relay.feeds.diadoc.source import DIADOC_RETRYABLE_STATUSES, DiadocApi, cursor_at, read_diadoc_error
from kontur_relay.feeds.diadoc.ticks import to_ticks
from kontur_relay.kontur import session as http
from kontur_relay.kontur.budget import Budget
from kontur_relay.settings import Env, RelaySettings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


def source_uri(api_url: str, box_id: str) -> str:
    """The CloudEvents ``source`` of a box's events: the box, whichever API version reads it, so that
    (source, id) stays the event's identity across a switch from V7 to V8."""
    return f"{api_url.rstrip('/')}/boxes/{quote(box_id, safe='@')}"


@dataclass(frozen=True)
class DiadocSettings:
    """The Diadoc API a deployment speaks to, and how its client behaves."""

    api_url: str
    version: str
    http_timeout: float
    http_retries: int
    http_backoff: float
    credentials_secret: str
    #: Where the containers share the Diadoc token (the cursor table).
    cursors_table: str

    @classmethod
    def from_env(cls, env: Env) -> DiadocSettings:
        return cls(
            api_url=env.text("DIADOC_API_URL", "https://diadoc-api.kontur.ru").rstrip("/"),
            version=api_version(env.text("DIADOC_API_VERSION", "V8")),
            http_timeout=env.number("HTTP_TIMEOUT_SECONDS", 20),
            http_retries=env.whole("HTTP_RETRIES", 4, low=0),
            http_backoff=env.number("HTTP_BACKOFF_SECONDS", 0.5),
            credentials_secret=env.text("DIADOC_CREDENTIALS_SECRET"),
            cursors_table=env.text("CURSORS_TABLE"),
        )

    def api(self, budget: Budget | None = None, *, pool_size: int = 10, max_retry_after: float = 20.0) -> DiadocApi:
        """A Diadoc client whose every request, its token's included, goes through ``budget``."""
        session = http.session(
            retries=self.http_retries,
            backoff=self.http_backoff,
            statuses=DIADOC_RETRYABLE_STATUSES,
            budget=budget,
            pool_size=pool_size,
            max_retry_after=max_retry_after,
        )
        secret = wiring.credentials(self.credentials_secret, "diadoc", self.cursors_table)
        authenticator = diadoc_authenticator(secret, session, self.api_url, timeout=self.http_timeout)
        return DiadocApi(self.api_url, session, authenticator, read_diadoc_error, timeout=self.http_timeout)


class DiadocKind:
    name = "diadoc"

    def position(self, feed_id: str, cursor: str | None, timestamp: datetime | None) -> str | None:
        if ":" not in feed_id:
            raise PositionRefused("cursor", f"{feed_id} is the poller of every box: set a box's cursor, diadoc:<boxId>")
        if timestamp is not None:
            return cursor_at(timestamp.astimezone(UTC))
        try:
            position = Position.parse(cursor)
        except ValueError as error:
            raise PositionRefused("cursor", str(error)) from None
        if position.after is not None and not position.seen and position.floor is None:
            # A key alone skips or replays to it: reconciliation must not publish again what it skips.
            return replace(position, floor=to_ticks(datetime.now(UTC))).text()
        return position.text()

    def poller(self, env: Env) -> BoxPoller:
        return box_poller(env)


@dataclass(frozen=True)
class BoxPoller(EnginePoller[Fleet[RegisteredBox]]):
    """The poller of every box: the relay's many-feed loop over Diadoc's boxes, with the boxes and
    the budget at hand for what watches them (the tests, the benchmarks)."""

    boxes: BoxFeeds
    budget: Budget


def box_poller(
    env: Env,
    *,
    publisher: Publisher | None = None,
    clock: Callable[[], float] = time.time,
    tables: Callable[[str], Table] = wiring.table,
) -> BoxPoller:
    """The poller of every box, built from configuration: its budget, the box registry, the boxes'
    memories, their sources and reconciliation, in the relay's many-feed loop. ``publisher``,
    ``clock`` and ``tables`` replace the sink, the clock and the DynamoDB tables where the tests
    and the benchmarks measure them."""
    relay_settings = RelaySettings.from_env(env)
    settings = DiadocSettings.from_env(env)
    schedule = polling(env)
    reconciling = Reconciling.from_env(env)
    budget = Budget(max_in_flight=schedule.max_in_flight, per_second=schedule.per_second)
    api = settings.api(budget, pool_size=schedule.max_in_flight * 2)
    cursors_table = tables(relay_settings.cursors_table)
    cursors = DynamoCursorStore(cursors_table, clock=clock)
    registry = DynamoBoxRegistry(cursors_table, clock=clock)
    sink = publisher or wiring.publisher(env)
    uri = partial(source_uri, settings.api_url)
    memories = DynamoEventMemory(tables(env.text("EVENT_MEMORY_TABLE")), clock=clock)
    boxes = BoxFeeds(api, settings.version, sink, registry, memories, reconciling.memory_seconds, uri, clock)
    reconciler = Reconciler(api, sink, registry, reconciling, settings.version, uri, clock)
    fleet = Fleet(
        kind=KIND.name,
        feeds=boxes,
        background=Reconciliation(reconciler, boxes, reconciling),
        cursors=cursors,
        budget=budget,
        polling=schedule,
        safety_margin=relay_settings.safety_margin,
        lease_seconds=relay_settings.lease_seconds,
        noun=("box", "boxes"),
        clock=clock,
    )
    return BoxPoller(fleet, boxes, budget)


KIND = DiadocKind()
