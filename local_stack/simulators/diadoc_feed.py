"""A Diadoc box's feed as the simulator stores it: its entries in order, found by IndexKey or
EventId, each with what GetNewEvents' filters look at and when it becomes visible; and those filters.

An entry is one BoxEvent at one place in the feed. Diadoc's habits (``diadoc_habits``) make the
feed less tidy than its documentation: two entries may share an IndexKey (a read after the key
skips both), an EventId may come back as a later entry, and an entry may stay invisible for a while
after newer ones are served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

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
    #: When (the simulator's clock) the entry starts being served; 0: at once.
    visible_at: float = 0.0

    @property
    def body(self) -> bytes:
        """The BoxEvent without its IndexKey, as it was built (to serve it again under another key)."""
        return self.raw[: len(self.raw) - len(_key_field(self.index_key))]


class BoxFeed:
    """One box's entries, append-only, as GetNewEvents pages through them."""

    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        #: Positions in ``events``: by IndexKey the last entry with that key (a read after a key starts
        #: after every entry that shares it), by EventId its latest entry.
        self.by_index_key: dict[str, int] = {}
        self.by_event_id: dict[str, int] = {}

    def append(
        self, raw: bytes, index_key: str, message_id: str, message: Message | None, *, visible_at: float = 0.0
    ) -> str:
        """Store a BoxEvent's bytes under its IndexKey; its EventId."""
        event = pb.BoxEvent.FromString(raw)
        raw = raw + _key_field(index_key)  # field 4 appended: the bytes stay as built
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
            visible_at=visible_at,
        )
        self.by_index_key[index_key] = len(self.events)
        self.by_event_id[stored.event_id] = len(self.events)
        self.events.append(stored)
        return stored.event_id

    def serve_again(self, position: int, index_key: str) -> str:
        """The entry at ``position`` served once more, later in the feed under a new IndexKey."""
        earlier = self.events[position]
        self.by_index_key[index_key] = self.by_event_id[earlier.event_id] = len(self.events)
        again = replace(earlier, index_key=index_key, raw=earlier.body + _key_field(index_key), visible_at=0.0)
        self.events.append(again)
        return earlier.event_id

    def start_after(self, index_key: str | None = None, event_id: str | None = None) -> int | None:
        """Where a read after a key (or after an event, which Diadoc reads as after its key) starts;
        None when the feed has no such key or event."""
        if event_id is not None:
            position = self.by_event_id.get(event_id)
            if position is None:
                return None
            index_key = self.events[position].index_key
        position = self.by_index_key.get(index_key or "")
        return None if position is None else position + 1

    def visible(self, now: float) -> list[StoredEvent]:
        return [event for event in self.events if event.visible_at <= now]


def _key_field(index_key: str) -> bytes:
    return pb.BoxEvent(IndexKey=index_key).SerializeToString()


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
