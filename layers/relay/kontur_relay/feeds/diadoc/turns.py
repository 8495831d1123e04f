"""A box's turn: a few pages of one box through the engine (``Pages.drain``: publish, then move that
box's cursor), then one write of its schedule. Each box's source drops what its cursor saw at its
base and what its memory knows it published (an event served again); its publisher remembers what
the sink accepted before the cursor moves.

A turn's log lines carry its own box and cursor: keys set for this thread only (the box threads
share one logger, and a key set on it would show on another box's lines).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.errors import ConfigurationError, CursorConflict, FeedError, FeedStopped, FeedUnavailable
from kontur_relay.domain.model import Feed, Page
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.pages import Pages, Progress
from kontur_relay.domain.ports import CursorStore, Publisher
from kontur_relay.feeds.diadoc.boxes import filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.memory import BoxMemory, MemoryStore, Remembering
from kontur_relay.feeds.diadoc.polling import Polling, Turn
from kontur_relay.feeds.diadoc.source import DiadocSource
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import logger


@dataclass
class BoxTurns:
    api: KonturApi
    version: str
    publisher: Publisher
    cursors: CursorStore
    registry: DynamoBoxRegistry
    memories: MemoryStore
    polling: Polling
    safety_margin: float
    source_uri: Callable[[str], str]
    clock: Callable[[], float] = time.time
    #: How long a page takes, learned from every box's pages: no turn begins that cannot end in time.
    pace: Pace = field(default_factory=Pace)
    _relays: dict[tuple[str, str], Pages] = field(default_factory=dict)
    _memories: dict[str, BoxMemory] = field(default_factory=dict)

    def memory(self, box: RegisteredBox) -> BoxMemory:
        """The box's memory as its cursor allows: nothing from before an operator last set it."""
        if box.feed not in self._memories:
            self._memories[box.feed] = BoxMemory(
                box.feed, self.memories, keep=self.polling.memory_seconds, clock=self.clock
            )
        memory = self._memories[box.feed]
        memory.rewound(box.cursor.rewound_at)
        return memory

    def stale(self) -> None:
        """A new run: what other containers wrote into the boxes' memories is read at first use."""
        for memory in self._memories.values():
            memory.stale()

    def turn(self, box: RegisteredBox, time_left: Callable[[], float], started: float) -> Turn:
        """A few pages of one box, and when it is polled next (``started``: the run's start)."""
        began = self.clock()
        state = box.cursor
        logger.thread_safe_append_keys(feed=box.feed, cursor=state.position)

        def landed(progress: Progress, page: Page) -> None:
            nonlocal state
            state = progress.state
            logger.thread_safe_append_keys(cursor=state.position)

        try:
            progress = self._relay(box).drain(
                box.cursor, time_left, max_pages=self.polling.pages_per_turn, on_page=landed
            )
        except CursorConflict:
            # An operator moved the cursor since the scan: the next run reads it afresh.
            logger.info("A box's cursor moved since the scan; it is polled next run")
            return Turn(box.feed)
        except (FeedError, ConfigurationError) as error:
            # This box's trouble (its answer, its access, its payment, its settings), not the others'.
            logger.warning("A box's poll failed", extra={"error": str(error), "error_kind": error.kind})
            # Kontur asked to be left alone for longer than a run (Retry-After): the box waits that long.
            asked = error.retry_after if isinstance(error, FeedUnavailable) else None
            self.registry.polled(
                box,
                next_poll_at=max(started + self.polling.min_interval, self.clock() + (asked or 0.0)),
                interval=self.polling.min_interval,
                had_events=False,
                error=f"{type(error).__name__}: {error}",
                # At the version this turn last wrote: an operator's resume since is not undone.
                stop_at=state.version if isinstance(error, FeedStopped) else None,
            )
            return Turn(box.feed, error=error.kind, duplicates=self.memory(box).take_duplicates())
        finally:
            # None hides the keys the engine sets on the shared logger, too.
            logger.thread_safe_append_keys(feed=None, cursor=None)
        return self._schedule(box, progress, started, began)

    def _schedule(self, read: RegisteredBox, progress: Progress, started: float, began: float) -> Turn:
        # The box's memory holds everything it published from its first turn with one on (from the
        # start, if nothing was published before), once the item says so.
        since = None if read.reconciled_since is not None else (0.0 if read.cursor.version == 0 else began)
        box = replace(read, cursor=progress.state)
        if not progress.caught_up:
            # More waits: the box stays due (a crash or the end of the run leaves it first in line
            # next time), and goes back in line behind the boxes already due in this run.
            next_poll_at, interval = self.clock(), box.interval or self.polling.min_interval
        else:
            interval = self.polling.next_interval(box.interval, progress.events > 0)
            # Counted from the run's start, not from this poll's end: a box polled late in a run is
            # due again at the tick an interval later, not one tick after that. A little jitter
            # (early, never late) keeps boxes registered together from staying in lockstep for ever.
            next_poll_at = started + interval * random.uniform(0.9, 1.0)
        self.registry.polled(
            box,
            next_poll_at=next_poll_at,
            interval=interval,
            had_events=progress.events > 0,
            backlog=progress.backlog,
            backlog_capped=progress.backlog_capped,
            reconciled_since=since,
        )
        again = replace(box, next_poll_at=next_poll_at, interval=interval)
        if since is not None:
            again = replace(again, reconciled_since=since)
        return Turn(
            box.feed,
            progress.events,
            again=again,
            backlog=progress.backlog,
            duplicates=self.memory(box).take_duplicates(),
            caught_up_at=began if progress.caught_up else None,
        )

    def _relay(self, box: RegisteredBox) -> Pages:
        """The box's pages, kept for the container's life; its memory as this turn's cursor allows."""
        memory = self.memory(box)
        key = (box.feed, box.filters_key or "")
        if key not in self._relays:
            feed = box_feed({**(box.settings or {}), "boxId": box.box_id})
            if filters_key(feed) != (box.filters_key or ""):
                # Settings written by hand, not by the admin API: their cursor may not match them.
                logger.warning("A box's stored filters key does not match its settings")
            # Not pipelined: the boxes' turns already overlap each other within the budget, and a
            # page read ahead would spend budget on a page the turn may end before.
            self._relays[key] = Pages(
                Feed(id=box.feed, kind="diadoc", source_uri=self.source_uri(box.box_id)),
                DiadocSource(self.api, feed, version=self.version, memory=memory),
                Remembering(self.publisher, memory),
                self.cursors,
                safety_margin=self.safety_margin,
                pipelined=False,
                pace=self.pace,
            )
        return self._relays[key]
