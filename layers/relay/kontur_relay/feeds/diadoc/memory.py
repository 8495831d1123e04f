"""A box's memory of the events it published lately: what makes a re-served event a duplicate to drop
and a reconciliation's re-read publish only what is new.

Diadoc serves an event it served before again, later in the feed under a new IndexKey
(diadocsdk-java#229), and a re-read by time returns everything in its window. The memory holds a
digest of each entry published (or dropped as served again) within ``keep`` seconds:

- the EventId's digest: an event whose EventId is known is never published again;
- the entry's digest, EventId and IndexKey together: reconciliation compares how many entries
  Diadoc counts in a window with how many the memory knows there, and reads the window only when
  they differ;
- the event's own time (ticks), for that count.

It is written only when a page is published, as one small chunk of 24 bytes an entry, never on an
idle poll; it is read once per run and box, then only the chunks written since. Digests are 64 bits:
the chance that a new event's digest matches one of a box's remembered events is one in 10^16 per
event. What it cannot catch: an event served again after ``keep`` (the consumer's (source, id)
dedupe is the backstop), and a memory written by a run that raced this one (a duplicate, never a loss).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from kontur_relay.aws.event_memory import Chunk, chunk_key
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.domain.ports import Publisher
from kontur_relay.feeds.diadoc.events import ReadEvent
from kontur_relay.observability import logger

#: One remembered entry: the EventId's digest, the entry's digest, the event's ticks.
RECORD = struct.Struct("<8s8sq")


class MemoryStore(Protocol):
    """Where the boxes' memories are kept (``aws.event_memory``: a DynamoDB table)."""

    def chunks(self, feed: str, after: str) -> Iterable[Chunk]:
        """The box's chunks whose key sorts after ``after``, oldest first."""
        ...

    def write(self, feed: str, records: bytes, *, keep: float) -> Chunk:
        """Add a chunk to the box's memory, kept at least ``keep`` seconds."""
        ...


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def record(item: ReadEvent) -> bytes:
    return RECORD.pack(digest(item.event.id), digest(f"{item.event.id}\n{item.index_key}"), item.ticks)


class BoxMemory:
    """One box's memory, as this container knows it. Only one run polls the boxes at a time, so within
    a run this container's copy is the whole memory; ``stale`` at a run's start makes the next use
    read what another container added meanwhile."""

    def __init__(self, feed: str, store: MemoryStore, *, keep: float, clock: Callable[[], float] = time.time) -> None:
        self.feed = feed
        self.store = store
        self.keep = keep
        self.clock = clock
        self._chunks: deque[tuple[str, float, list[tuple[bytes, bytes, int]]]] = deque()
        self._events: Counter[bytes] = Counter()
        self._entries: Counter[bytes] = Counter()
        self._ticks: dict[bytes, int] = {}
        self._fresh = False
        self._rewound_at = 0.0
        #: Events sorted as new and not yet published, by EventId: what ``remember`` writes.
        self._outgoing: dict[str, ReadEvent] = {}
        #: Entries served again and dropped, written with the next chunk (so that counts agree).
        self._noted: dict[bytes, bytes] = {}
        #: Entries served again and dropped since the last ``take_duplicates``.
        self._duplicates = 0

    def stale(self) -> None:
        self._fresh = False

    def sort(self, read: Sequence[ReadEvent]) -> list[ReadEvent]:
        """Of the events a page brought, those never published. An event published before is dropped;
        if it came under a new key (served again) it counts as a duplicate suppressed."""
        if not read:
            return []
        self._load()
        fresh: dict[str, ReadEvent] = {}
        for item in read:
            entry = record(item)
            event_digest, entry_digest = entry[:8], entry[8:16]
            if self._events[event_digest] or item.event.id in fresh:
                if not self._entries[entry_digest] and entry_digest not in self._noted:
                    self._noted[entry_digest] = entry
                    self._duplicates += 1
                continue
            fresh[item.event.id] = self._outgoing[item.event.id] = item
        return list(fresh.values())

    def remember(self, events: Sequence[FeedEvent]) -> None:
        """Write the entries of ``events`` (just published) and those noted as served again: one chunk."""
        records = [record(self._outgoing.pop(event.id)) for event in events if event.id in self._outgoing]
        records += self._noted.values()
        if not records:
            return
        self._load()
        chunk = self.store.write(self.feed, b"".join(records), keep=self.keep)
        self._noted.clear()
        self._add(chunk)

    def knows(self, event_id: str) -> bool:
        self._load()
        return bool(self._events[digest(event_id)])

    def count(self, since: int, until: int) -> int:
        """How many distinct entries the memory holds with ticks in [since, until]."""
        self._load()
        return sum(1 for ticks in self._ticks.values() if since <= ticks <= until)

    def reach(self) -> float:
        """The earliest moment (epoch seconds) from which everything published is remembered."""
        return self.clock() - self.keep

    def rewound(self, at: float | None) -> None:
        """An operator set the box's cursor at ``at``: what was published before is forgotten, so that
        the replay they asked for publishes it again (only the events it re-serves twice are dropped).
        ``reach`` stays: a pass still reads back over the rewind, for events Diadoc serves late, and
        publishes what the replay has not published yet (which the replay then drops as known)."""
        if at is not None and at > self._rewound_at:
            self._rewound_at = at
            self._expire()

    def take_duplicates(self) -> int:
        taken, self._duplicates = self._duplicates, 0
        return taken

    def forget_outgoing(self) -> None:
        """Events sorted but never published (their page failed): read again, they are sorted again."""
        self._outgoing.clear()

    def _load(self) -> None:
        if self._fresh:
            self._expire()
            return
        after = max(self._chunks[-1][0] if self._chunks else "", chunk_key(self._forgets_before()))
        for chunk in self.store.chunks(self.feed, after):
            self._add(chunk)
        self._fresh = True
        self._expire()

    def _add(self, chunk: Chunk) -> None:
        records = [RECORD.unpack_from(chunk.records, at) for at in range(0, len(chunk.records), RECORD.size)]
        self._chunks.append((chunk.key, chunk.written_at, records))
        for event_digest, entry_digest, ticks in records:
            self._events[event_digest] += 1
            self._entries[entry_digest] += 1
            self._ticks[entry_digest] = ticks

    def _forgets_before(self) -> float:
        return max(self.reach(), self._rewound_at)

    def _expire(self) -> None:
        reach = self._forgets_before()
        while self._chunks and self._chunks[0][1] < reach:
            _, _, records = self._chunks.popleft()
            for event_digest, entry_digest, _ in records:
                self._events[event_digest] -= 1
                if self._events[event_digest] <= 0:
                    del self._events[event_digest]
                self._entries[entry_digest] -= 1
                if self._entries[entry_digest] <= 0:
                    del self._entries[entry_digest]
                    self._ticks.pop(entry_digest, None)


class Remembering:
    """A publisher that remembers, in the box's memory, what its sink accepted: after the sink
    returned, before the cursor moves (a crash between the two leaves events the next read drops
    as published, never loses)."""

    def __init__(self, sink: Publisher, memory: BoxMemory) -> None:
        self.sink = sink
        self.memory = memory

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        try:
            self.sink.publish(feed, events)
        except BaseException:
            self.memory.forget_outgoing()
            raise
        self.memory.remember(events)
        logger.debug("Remembered a page's events", extra={"feed": feed.id, "events": len(events)})
