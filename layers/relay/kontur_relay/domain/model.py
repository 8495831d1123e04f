"""What flows through the relay: events read from a feed, pages of them, and the feed's cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Values of SNS message attributes: a string, or a list of strings sent as ``String.Array``.
AttributeValue = str | Sequence[str]


@dataclass(frozen=True)
class Feed:
    """A feed the relay polls: its id (the cursor's key), its kind, and its CloudEvents source."""

    id: str
    #: ``extern`` or ``diadoc``: the ``source`` message attribute.
    kind: str
    #: The CloudEvents ``source`` URI of every event of this feed.
    source_uri: str


@dataclass(frozen=True)
class FeedEvent:
    """One event of a feed, already shaped for publishing.

    ``id`` is the feed's own event id: with the CloudEvents ``source`` it identifies the event, so a
    consumer drops a duplicate by remembering (source, id).
    """

    id: str
    type: str
    data: Any
    time: str | None = None
    subject: str | None = None
    #: Attributes for subscription filter policies; empty values are left out when publishing.
    attributes: Mapping[str, AttributeValue | None] = field(default_factory=dict)
    #: What must stay in order on a FIFO topic (a docflow, a Diadoc message); None: the feed's order.
    ordering_key: str | None = None
    #: CloudEvents extension attributes (lower-case names), e.g. ``protobuf`` for Diadoc's raw bytes.
    extensions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """A page read from a feed at a cursor."""

    events: Sequence[FeedEvent]
    #: Where the next read starts once every event of this page is published; None keeps the cursor.
    next_cursor: str | None
    #: The feed says more events are waiting right now (a full page); False ends the run.
    more: bool
    #: How many events are still waiting, where the feed tells (Diadoc's TotalCount).
    backlog: int | None = None
    #: The backlog figure is a lower bound (the feed caps its count).
    backlog_capped: bool = False


@dataclass(frozen=True)
class CursorState:
    """A feed's persisted position. ``version`` guards every change against a concurrent writer."""

    feed: str
    position: str | None
    version: int
    #: Why the feed is stopped until someone acts (Diadoc's 402/403); None when it runs.
    stopped_reason: str | None = None
    #: When a run last ended well (RFC 3339): idle ticks refresh it every few minutes only.
    last_success_at: str | None = None
    #: Kontur asked to be left alone until then (epoch seconds): runs before it do not call it.
    not_before: float | None = None
    #: When an operator last set the cursor (epoch seconds): a replay from there publishes again what
    #: the feed published before, whatever a memory of published events holds.
    rewound_at: float | None = None

    def succeeded_within(self, seconds: float, now: float) -> bool:
        """Whether a run ended well less than ``seconds`` before ``now``."""
        if self.last_success_at is None:
            return False
        ended = datetime.fromisoformat(self.last_success_at.replace("Z", "+00:00")).timestamp()
        return now - ended < seconds


@dataclass(frozen=True)
class Success:
    """What a run that relayed records for operators: when, and the backlog its last page reported."""

    backlog: int | None = None
    backlog_capped: bool = False
