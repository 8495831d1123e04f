"""The Kontur feeds the relay carries, one package each, all of one shape.

A feed id is ``<kind>`` or ``<kind>:<key>`` (``extern``, ``diadoc:<boxId>``); the kind is a
package here whose ``KIND`` says what it owns:

- ``name``: the ids' prefix and every message's ``source`` attribute;
- ``position(...)``: the feed's cursor rules for operators (the admin API's ``PUT /feeds/{id}/cursor``);
- ``poller(env)``: the poller its Lambda runs, built from configuration parsed once.

The pollers and the admin API hold no branch per feed: they look the kind up here. A kind's
package is imported only when asked for, so a poller loads its own feed and no other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from kontur_relay.domain.report import RunReport
from kontur_relay.settings import Env

#: Every kind, as its package under ``kontur_relay.feeds`` is named.
KINDS = ("extern", "diadoc")


class PositionRefused(ValueError):
    """An operator's cursor the feed would refuse; ``field`` is the request's field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Poller(Protocol):
    """What a feed's scheduled Lambda runs: built once per container, run on every tick."""

    def run(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, object]:
        """One tick: relay until caught up or ``time_left()`` runs short; a report for the logs."""
        ...


class Engine(Protocol):
    """A run of the relay: one feed's (``domain.engine.Relay``) or many's (``domain.fleet.run.Fleet``)."""

    def run(self, time_left: Callable[[], float]) -> RunReport: ...


E = TypeVar("E", bound=Engine)


@dataclass(frozen=True)
class EnginePoller(Generic[E]):
    """A kind's poller: its engine, one run a tick; a scheduled event carries nothing it needs."""

    engine: E

    def run(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, object]:
        return self.engine.run(time_left).as_dict()


class FeedKind(Protocol):
    name: str

    def position(self, feed_id: str, cursor: str | None, timestamp: datetime | None) -> str | None:
        """The cursor an operator's change stores: ``cursor`` as the feed gave it, or one that
        reads on from ``timestamp`` (aware). Raises PositionRefused for what the feed would refuse."""
        ...

    def poller(self, env: Env) -> Poller: ...


def kind_named(name: str) -> FeedKind:
    if name not in KINDS:
        raise KeyError(f"no feed kind {name!r}; known: {', '.join(KINDS)}")
    kind: FeedKind = importlib.import_module(f"{__name__}.{name}").KIND
    return kind


def kind_name(feed_id: str) -> str:
    return feed_id.partition(":")[0]
