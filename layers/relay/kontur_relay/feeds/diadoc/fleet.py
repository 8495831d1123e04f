"""Diadoc's boxes as the relay's many-feed loop sees them (``domain.fleet.ports.FeedRegistry``): the
registered boxes read in one scan, a source and a publisher per box, and a poll's one write.

Each box's source drops what its cursor saw at its base and what its memory knows it published (an
event served again); its publisher remembers what the sink accepted before the cursor moves. A poll
that read a box well also marks, in the same write, from when its memory is complete
(``reconciled_since``): reconciliation never reads back before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.fleet.model import Plug, Poll
from kontur_relay.domain.model import Feed
from kontur_relay.domain.ports import Publisher
from kontur_relay.feeds.diadoc.boxes import filters_key, report_stored_twice
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.memory import BoxMemory, MemoryStore, Remembering
from kontur_relay.feeds.diadoc.source import DiadocSource
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import logger


@dataclass
class BoxFeeds:
    api: KonturApi
    version: str
    publisher: Publisher
    registry: DynamoBoxRegistry
    memories: MemoryStore
    #: How long a box remembers what it published (``Reconciling.memory_seconds``).
    memory_seconds: float
    source_uri: Callable[[str], str]
    clock: Callable[[], float] = time.time
    _plugs: dict[tuple[str, str], Plug] = field(default_factory=dict)
    _memories: dict[str, BoxMemory] = field(default_factory=dict)

    def scheduled(self) -> Sequence[RegisteredBox]:
        """Every registered box: one scan. Boxes stored under both spellings are reported on each run,
        and what other containers wrote into the boxes' memories is read at first use."""
        boxes = self.registry.registered()
        report_stored_twice(box.feed for box in boxes)
        for memory in self._memories.values():
            memory.stale()
        return boxes

    def memory(self, box: RegisteredBox) -> BoxMemory:
        """The box's memory as its cursor allows: nothing from before an operator last set it."""
        if box.feed not in self._memories:
            self._memories[box.feed] = BoxMemory(box.feed, self.memories, keep=self.memory_seconds, clock=self.clock)
        memory = self._memories[box.feed]
        memory.rewound(box.cursor.rewound_at)
        return memory

    def plug(self, box: RegisteredBox) -> Plug:
        """The box's source and publisher, kept while its filters stay; its memory as this turn's cursor allows."""
        memory = self.memory(box)
        key = (box.feed, box.filters_key or "")
        if key not in self._plugs:
            feed = box_feed({**(box.settings or {}), "boxId": box.box_id})
            if filters_key(feed) != (box.filters_key or ""):
                # Settings written by hand, not by the admin API: their cursor may not match them.
                logger.warning("A box's stored filters key does not match its settings")
            self._plugs[key] = Plug(
                Feed(id=box.feed, kind="diadoc", source_uri=self.source_uri(box.box_id)),
                DiadocSource(self.api, feed, version=self.version, memory=memory),
                Remembering(self.publisher, memory),
            )
        return self._plugs[key]

    def polled(self, box: RegisteredBox, poll: Poll) -> RegisteredBox:
        # The box's memory holds everything it published from its first turn with one on (from the
        # start, if nothing was published before), once the item says so.
        since = None
        if poll.error is None and box.reconciled_since is None:
            since = 0.0 if box.cursor.version == 0 else poll.began
        self.registry.polled(
            box,
            next_poll_at=poll.next_poll_at,
            interval=poll.interval,
            had_events=poll.had_events,
            backlog=poll.backlog,
            backlog_capped=poll.backlog_capped,
            error=poll.error,
            stop_at=poll.stop_at,
            reconciled_since=since,
        )
        again = replace(box, cursor=poll.state or box.cursor, next_poll_at=poll.next_poll_at, interval=poll.interval)
        return again if since is None else replace(again, reconciled_since=since)

    def dropped(self, box: RegisteredBox) -> int:
        return self.memory(box).take_duplicates()
