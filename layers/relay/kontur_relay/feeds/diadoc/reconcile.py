"""Reconciliation: the events no cursor can catch, found by reading a box again by time.

Diadoc serves some events late, behind newer ones a cursor has already read past, and the sibling
of an event under the same IndexKey can come seconds after its twin (diadocsdk-csharp#1107, #235,
#1083). Read by time (``timestampFromTicks``), they are there. So:

- **a pass**: after a turn that read a box to its end, a box that had events within the last window
  is read again over its trailing window, at most ``every`` seconds apart (``polling.Reconciling``).
  The window runs from where the box's last pass ended, less ``window``, to a little before the turn
  began (what the turn could not read then was late, not new), and never before the cursor's floor
  or what the box's memory holds (``reconciled_since``: a box that published before it had a memory
  is reconciled from its first turn with one). Diadoc's TotalCount for the window is compared with
  the entries the memory holds there: when they agree the pass is that one request; else the window
  is read like a feed, page by page, and what the memory does not know is published.
- **a check**: every ``check_every``, each box's newest event (``GET /V2/GetLastEvent``, 204 for an
  empty box) is looked up in its cursor and memory. One never published (and not skipped on purpose)
  makes the box polled at once, then the moment of that event read like a window of its own.

When each runs is ``background``'s to say: it is the relay's background work (``domain.fleet``),
whose every request goes through the budget's background lane: one at a time, only while no poll
waits, within its share of the per-second budget. A pass writes the box's item once, when it
ends; a crash at any step before leaves the box where its last pass left it, so the next pass reads
the same window again: nothing is lost, and what was published but not yet remembered is published
again (a duplicate, the consumer's (source, id) dedupe drops it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.errors import ConfigurationError, FeedError
from kontur_relay.domain.fleet.model import Found
from kontur_relay.domain.model import Feed
from kontur_relay.domain.ports import Publisher
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.cursor import FROM_OLDEST, Position
from kontur_relay.feeds.diadoc.memory import BoxMemory, Remembering
from kontur_relay.feeds.diadoc.polling import Reconciling
from kontur_relay.feeds.diadoc.source import MAX_LIMITS, DiadocSource, ticks_of
from kontur_relay.feeds.diadoc.ticks import MAX_TICKS, TICKS_PER_SECOND, to_ticks
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import logger

#: A pass reads up to this long before the turn it follows began: an event the turn did not read
#: because Diadoc committed it a moment late is left to the next pass rather than called recovered.
SETTLE_SECONDS = 10.0
#: The most pages one pass reads; a window larger than this is read on by the next pass.
MAX_PAGES = 20


@dataclass
class Reconciler:
    api: KonturApi
    publisher: Publisher
    registry: DynamoBoxRegistry
    settings: Reconciling
    version: str
    source_uri: Callable[[str], str]
    clock: Callable[[], float] = time.time

    def due(self, box: RegisteredBox, caught_up_at: float, had_events: bool) -> bool:
        """Whether a pass should follow the turn that read ``box`` to its end at ``caught_up_at``."""
        recent = had_events or _epoch(box.last_events_at) >= self.clock() - self.settings.window - self.settings.every
        previous = box.reconciled_to
        return recent and (previous is None or caught_up_at - SETTLE_SECONDS >= previous + self.settings.every)

    def reconcile(self, box: RegisteredBox, memory: BoxMemory, caught_up_at: float) -> Found:
        """A pass over the box's trailing window, up to a little before the turn it follows."""
        until = caught_up_at - SETTLE_SECONDS
        previous = box.reconciled_to if box.reconciled_to is not None else until
        # Never before what the memory holds: what the relay published before remembering (its
        # first turn with a memory) would go out again.
        complete = box.reconciled_since if box.reconciled_since is not None else until
        since = max(previous - self.settings.window, complete, memory.reach())
        return self._read(box, memory, since, until, window=True)

    def moment(self, box: RegisteredBox, memory: BoxMemory, ticks: int) -> Found:
        """The moment of an event a check found unpublished, read like a window of its own."""
        moment = (ticks - _EPOCH_TICKS) / TICKS_PER_SECOND
        return self._read(box, memory, moment, moment, window=False, exact=ticks)

    def check(self, box: RegisteredBox, memory: BoxMemory) -> tuple[Found, int | None]:
        """Whether the box's newest event went out; if it never did, the box to be polled at once,
        and the event's time (ticks), for a read of its own moment."""
        found = Found(box.feed, check=True)
        try:
            position = Position.parse(box.cursor.position)
        except ValueError:
            return found, None  # the box's polls fail on its cursor and say so
        try:
            event = self._source(box, None).last_event()
        except (FeedError, ConfigurationError) as error:
            logger.warning("A box's check failed", extra={"feed": box.feed, "error": str(error)})
            return replace(found, error=error.kind), None
        if event is None:
            return found, None
        floor = position.reconciles_from
        ticks = ticks_of(event)
        if event.EventId in position.seen or (floor is not None and ticks < floor) or memory.knows(event.EventId):
            return found, None
        logger.info("A box's newest event was never published", extra={"feed": box.feed, "event_id": event.EventId})
        return replace(found, poll=True), ticks

    def _read(
        self,
        box: RegisteredBox,
        memory: BoxMemory,
        since: float,
        until: float,
        *,
        window: bool,
        exact: int | None = None,
    ) -> Found:
        """Read the box between two moments (epoch seconds; ``exact``: one moment in ticks), publish
        what its memory does not know, and record the pass on the box."""
        bounds = self._bounds(box, (exact, exact) if exact is not None else (_ticks(since), _ticks(until)))
        recovered = 0
        if bounds is not None:
            try:
                recovered = self._window(box, memory, bounds)
            except (FeedError, ConfigurationError) as error:
                logger.warning("A box's reconciliation failed", extra={"feed": box.feed, "error": str(error)})
                return Found(box.feed, duplicates=memory.take_duplicates(), error=error.kind)
        duplicates = memory.take_duplicates()
        if recovered:
            logger.warning(
                "Reconciliation published events the box's feed had not served in order",
                extra={"feed": box.feed, "recovered": recovered, "since": since, "until": until},
            )
        self.registry.reconciled(
            box, since=since, until=until, recovered=recovered, duplicates=duplicates, window=window
        )
        return Found(box.feed, recovered=recovered, duplicates=duplicates)

    def _window(self, box: RegisteredBox, memory: BoxMemory, bounds: tuple[int, int]) -> int:
        """One request when Diadoc counts in the window what the memory holds there; else every page."""
        source = self._source(box, bounds)
        position = Position(FROM_OLDEST)
        frame, limit = source.fetch(position)
        if frame.TotalCountType != pb.GreaterThanOrEqual and frame.TotalCount == memory.count(*bounds):
            return 0
        feed = Feed(id=box.feed, kind="diadoc", source_uri=self.source_uri(box.box_id))
        publisher = Remembering(self.publisher, memory)
        recovered = 0
        for _ in range(MAX_PAGES):
            read = source.events(frame)
            fresh = memory.sort([item for item in read if item.event.id not in position.seen])
            if fresh:
                publisher.publish(feed, [item.event for item in fresh])
                recovered += len(fresh)
            position, _ = position.after_page([(item.event.id, item.index_key) for item in read])
            if len(read) < limit:
                break
            frame, limit = source.fetch(position)
        else:
            logger.warning("A reconciliation window holds more than a pass reads", extra={"feed": box.feed})
        memory.remember([])  # the entries served again it dropped: so that the next count agrees
        return recovered

    def _bounds(self, box: RegisteredBox, bounds: tuple[int, int]) -> tuple[int, int] | None:
        """The window in ticks, within the cursor's floor and the box's own time filters; None if empty."""
        try:
            floor = Position.parse(box.cursor.position).reconciles_from or 0
        except ValueError:
            return None  # the box's polls fail on it and say so; nothing to trust a window to
        filters = dict(box_feed({**(box.settings or {}), "boxId": box.box_id}).filters)
        since = max(bounds[0], floor, int(filters.get("timestampFromTicks", 0)))
        until = min(bounds[1], int(filters.get("timestampToTicks", MAX_TICKS)))
        return (since, until) if since <= until else None

    def _source(self, box: RegisteredBox, bounds: tuple[int, int] | None) -> DiadocSource:
        feed = box_feed({**(box.settings or {}), "boxId": box.box_id})
        if bounds is not None:
            filters = {**dict(feed.filters), "timestampFromTicks": str(bounds[0]), "timestampToTicks": str(bounds[1])}
            feed = replace(feed, filters=tuple(filters.items()), limit=MAX_LIMITS[self.version])
        return DiadocSource(self.api, feed, version=self.version)


_EPOCH_TICKS = to_ticks(datetime(1970, 1, 1, tzinfo=UTC))


def _ticks(epoch: float) -> int:
    return to_ticks(datetime.fromtimestamp(epoch, UTC))


def _epoch(moment: str | None) -> float:
    if not moment:
        return 0.0
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
