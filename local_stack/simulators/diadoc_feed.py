"""A Diadoc box's feed as the simulator stores it: its events in order, found by IndexKey or
EventId, each with what GetNewEvents' filters look at; and those filters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from local_stack.simulators.diadoc_events import Message

MESSAGE_TYPES = {"Letter": pb.Letter, "Draft": pb.Draft, "Template": pb.Template}
DIRECTIONS = {"Inbound": pb.Inbound, "Outbound": pb.Outbound, "Internal": pb.Internal}


@dataclass(frozen=True)
class StoredEvent:
    """One event of a box's feed, with what the filters look at."""

    event_id: str
    index_key: str
    raw: bytes
    ticks: int
    message_id: str
    message_type: str
    type_named_ids: frozenset[str]
    directions: frozenset[str]
    counteragents: frozenset[str]
    #: Empty for drafts and events from before 2017-03-15.
    departments: frozenset[str]


class BoxFeed:
    """One box's events, append-only, as GetNewEvents pages through them."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        #: Positions in ``events``, by IndexKey and by EventId.
        self.by_index_key: dict[str, int] = {}
        self.by_event_id: dict[str, int] = {}

    def append(self, raw: bytes, index_key: str, message_id: str, message: Message | None) -> str:
        """Store a BoxEvent's bytes under its IndexKey; its EventId."""
        event = pb.BoxEvent.FromString(raw)
        raw = raw + pb.BoxEvent(IndexKey=index_key).SerializeToString()  # field 4 appended: the bytes stay as built
        stored = StoredEvent(
            event_id=event.EventId,
            index_key=index_key,
            raw=raw,
            ticks=event.Message.TimestampTicks if event.HasField("Message") else event.Patch.TimestampTicks,
            message_id=message_id,
            message_type=pb.MessageType.Name(message.message_type) if message else "Letter",
            type_named_ids=frozenset(t for _, t, _ in message.documents) if message else frozenset(),
            directions=frozenset({pb.DocumentDirection.Name(message.direction)}) if message else frozenset(),
            counteragents=frozenset({message.counteragent}) if message else frozenset(),
            departments=frozenset({message.department}) if message and message.department else frozenset(),
        )
        self.by_index_key[index_key] = len(self.events)
        self.by_event_id[stored.event_id] = len(self.events)
        self.events.append(stored)
        return stored.event_id


def matcher(query: Mapping[str, str]) -> Callable[[StoredEvent], bool]:
    """GetNewEvents' filters as a predicate; raises ValueError for a value Diadoc would reject (400)."""
    checks: list[Callable[[StoredEvent], bool]] = []

    def values(name: str, allowed: Iterable[str] | None = None) -> frozenset[str] | None:
        raw = query.get(name)
        if not raw:
            return None
        items = frozenset(item.strip() for item in raw.split(",") if item.strip())
        if allowed is not None and not items <= set(allowed):
            raise ValueError(f"{name} has unknown values: {', '.join(sorted(items - set(allowed)))}")
        return items

    message_types = values("messageType", MESSAGE_TYPES)
    if message_types is not None:
        checks.append(lambda e: e.message_type in message_types)
    type_named_ids = values("typeNamedId")
    if type_named_ids is not None:
        checks.append(lambda e: bool(e.type_named_ids & type_named_ids))
    directions = values("documentDirection", DIRECTIONS)
    if directions is not None:
        checks.append(lambda e: bool(e.directions & directions))
    department = query.get("departmentId")
    if department:
        checks.append(lambda e: department in e.departments)
    counteragent = query.get("counteragentBoxId")
    if counteragent:
        checks.append(lambda e: counteragent in e.counteragents)
    since, until = _ticks(query, "timestampFromTicks"), _ticks(query, "timestampToTicks")
    if since is not None:
        checks.append(lambda e: e.ticks >= since)
    if until is not None:
        checks.append(lambda e: e.ticks <= until)
    if query.get("orderBy") not in (None, "", "Ascending", "Descending"):
        raise ValueError("orderBy must be Ascending or Descending")
    return lambda event: all(check(event) for check in checks)


def _ticks(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} is not a number of ticks") from None
