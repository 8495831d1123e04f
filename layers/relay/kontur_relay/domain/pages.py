"""The relay's inner loop and its guarantee: publish a page, and only then move the cursor.

``Pages.drain`` is the one place a cursor moves. A cursor write is made only after the publisher
returned, and the publisher returns only when the sink accepted every event of the page. A crash
anywhere before the write leaves the cursor where it was, so the page is read and published again
(a duplicate, never a loss). The version check on the write keeps two runs of one feed from moving
the cursor backwards.

Pipelined, a page's three steps overlap its neighbours' (the round trips, not the CPU, are most of
a page's time): while page N is published, page N+1 is read and page N-1's cursor is written.
Neither moves the cursor early: page N's write is made only once page N is published and page N-1's
write has landed, so the cursor still follows publishing page by page, in order. What changes is the
crash window: a run that dies may leave two pages to publish again, the one whose cursor write was
on its way and the one being published beside it.

A page is begun (read) only if it can end before the run's safety margin, at the pace the run has
seen (``pace.Pace``): a page that would end inside the margin is left for the next run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.domain.model import CursorState, Feed, Page
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.ports import CursorStore, Publisher, Source
from kontur_relay.observability import logger


@dataclass
class Progress:
    """Where a feed got to in one stretch of pages."""

    state: CursorState
    pages: int = 0
    events: int = 0
    #: The last page was empty or short: the feed has nothing more right now.
    caught_up: bool = False
    backlog: int | None = None
    backlog_capped: bool = False
    #: The feed's own time of the newest event published (for the lag figure).
    newest_event_time: str | None = None


@dataclass
class _Write:
    """A published page's cursor write, on its way."""

    page: Page
    state: Future[CursorState]


class Pages:
    """Relays a feed's pages from a cursor: the source, the publisher and the cursor store of one feed."""

    def __init__(
        self,
        feed: Feed,
        source: Source,
        publisher: Publisher,
        cursors: CursorStore,
        *,
        safety_margin: float,
        pipelined: bool = True,
        pace: Pace | None = None,
    ) -> None:
        self.feed = feed
        self.source = source
        self.publisher = publisher
        self.cursors = cursors
        self.safety_margin = safety_margin
        self.pace = pace if pace is not None else Pace()
        # A thread each, made on first use and kept: one page read ahead, one cursor write behind.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="read-ahead") if pipelined else None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="cursor-write") if pipelined else None

    def drain(
        self,
        state: CursorState,
        time_left: Callable[[], float],
        *,
        first: Page | None = None,
        max_pages: int | None = None,
        keep: Callable[[], None] | None = None,
        on_page: Callable[[Progress, Page], None] | None = None,
    ) -> Progress:
        """Relay pages from ``state`` (``first``: the page already read there) until the feed has
        nothing more, ``max_pages`` were read, or the next page would end inside the safety margin.
        Holds no lease: the caller makes sure no other run relays this feed. Raises CursorConflict
        when another writer moved the cursor; ``keep`` runs between pages (the caller's lease
        renewal, which may raise); ``on_page`` once a page's cursor write has landed."""
        progress = Progress(state=state)
        position = state.position
        page = first if first is not None else self.read(position)
        ahead: Future[Page] | None = None
        writing: _Write | None = None

        def land() -> None:
            nonlocal writing
            if writing is not None:
                landing, writing = writing, None
                self._landed(progress, landing, on_page)

        try:
            while True:
                logger.append_keys(cursor=position)
                progress.pages += 1
                moved = _moved(position, page)
                last = not page.events or not page.more
                follows = moved and not last and (max_pages is None or progress.pages < max_pages)
                # Pipelined, the next page is read now, and this one is still to publish beside it.
                if follows and self._reader is not None and self.pace.fits(time_left(), self.safety_margin, pages=2):
                    ahead = self._read_ahead(page.next_cursor)
                if page.events:
                    self.pace.timed("publish", self.publisher.publish, self.feed, page.events)
                land()  # the page before this one first: the cursor moves page after page, in order
                # Nothing is on its way to the cursor store now: it is never called from two threads
                # at once (a boto3 resource is not thread-safe).
                if keep is not None and follows:
                    keep()
                writing = self._write(progress.state, page, moved)
                position = page.next_cursor if moved else position
                if follows and self._reader is None:
                    land()
                    if self.pace.fits(time_left(), self.safety_margin):
                        # Read before it is the page ahead: a read that fails leaves nothing to wait for.
                        read = self.read(position)
                        ahead = Future()
                        ahead.set_result(read)
                if ahead is None:
                    land()
                    progress.caught_up = last
                    return progress
                page = ahead.result()
                ahead = None
        except BaseException:
            # No thread of this run outlives it: the page read ahead is read again by the next run,
            # and the cursor write on its way lands (or its own error goes on, chained to this one).
            if ahead is not None:
                wait([ahead])
            land()
            raise

    def _read_ahead(self, position: str | None) -> Future[Page]:
        """The page at ``position``, read on the reader's thread. This thread waits until the read
        has begun: publishing is CPU work that would otherwise keep the interpreter from the reader
        for a switch interval (5 ms) on every page, and the reads are what sets the relay's pace."""
        assert self._reader is not None
        begun = threading.Event()

        def read() -> Page:
            begun.set()
            return self.read(position)

        ahead = self._reader.submit(read)
        begun.wait(timeout=0.05)
        return ahead

    def read(self, position: str | None) -> Page:
        """The page at ``position``, its read timed."""
        return self.pace.timed("read", self.source.read_page, position)

    def _write(self, state: CursorState, page: Page, moved: bool) -> _Write:
        """Page's cursor write: on the writer's thread when pipelined, else here and now."""
        relayed = len(page.events)
        if moved and self._writer is not None:
            advance = self._writer.submit(
                self.pace.timed, "write", self.cursors.advance, state, page.next_cursor, relayed=relayed
            )
            return _Write(page, advance)
        written: Future[CursorState] = Future()
        if moved:
            written.set_result(self.pace.timed("write", self.cursors.advance, state, page.next_cursor, relayed=relayed))
        else:
            written.set_result(state)
        return _Write(page, written)

    @staticmethod
    def _landed(progress: Progress, write: _Write, on_page: Callable[[Progress, Page], None] | None) -> None:
        """Wait for a page's cursor write, then count the page as relayed."""
        progress.state = write.state.result()
        page = write.page
        progress.events += len(page.events)
        progress.backlog, progress.backlog_capped = page.backlog, page.backlog_capped
        if page.events:
            progress.newest_event_time = page.events[-1].time
        if on_page is not None:
            on_page(progress, page)


def _moved(position: str | None, page: Page) -> bool:
    """Whether the page leads on from ``position``. A page of events that does not is malformed:
    publishing it would succeed, and the next read would return the same page for ever."""
    moved = page.next_cursor is not None and page.next_cursor != position
    if page.events and not moved:
        raise MalformedPage(f"a page of {len(page.events)} events did not move the cursor")
    return moved
