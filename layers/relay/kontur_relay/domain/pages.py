"""The relay's inner loop and its guarantee: publish a page, and only then move the cursor.

``Pages.drain`` is the one place a cursor moves. A cursor write is made only after the publisher
returned, and the publisher returns only when the sink accepted every event of the page. A crash
anywhere before the write leaves the cursor where it was, so the page is read and published again
(a duplicate, never a loss). The version check on the write keeps two runs of one feed from moving
the cursor backwards.

Pipelined, a page's three steps overlap its neighbours' (the round trips, not the CPU, are most of
a page's time): while page N is published, page N-1's cursor is written, and the pages after it are
read on a thread of their own (``read_ahead``), up to ``READ_AHEAD`` pages waiting, so that a slow
cursor write never holds a read back. Neither moves the cursor early: page N's write is made only
once page N is published and page N-1's write has landed, so the cursor still follows publishing
page by page, in order. What changes is the crash window: a run that dies may leave two pages to
publish again, the one whose cursor write was on its way and the one being published beside it
(the pages read ahead and not yet published are read again, and cost nothing more).

A page is begun (read) only if it can end before the run's safety margin, at the pace the run has
seen (``pace.Pace``), and a page read ahead is published only if it still can: a page that would
end inside the margin is left for the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.domain.model import CursorState, Feed, Page
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.ports import CursorStore, Publisher, Source
from kontur_relay.domain.read_ahead import ReadAhead
from kontur_relay.observability import logger

#: Pages read ahead and waiting to be published, at most: enough that a cursor write answered
#: slowly (DynamoDB, now and then ~100 ms) holds no read back.
READ_AHEAD = 2


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
        # A thread each, made on first use and kept: the pages ahead read, one cursor write behind.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="read-ahead") if pipelined else None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="cursor-write") if pipelined else None

    def drain(
        self,
        state: CursorState,
        time_left: Callable[[], float],
        *,
        first: Page | None = None,
        ahead: ReadAhead | None = None,
        max_pages: int | None = None,
        keep: Callable[[], None] | None = None,
        on_page: Callable[[Progress, Page], None] | None = None,
    ) -> Progress:
        """Relay pages from ``state`` (``first``: the page already read there; ``ahead``: the pages
        after it, being read) until the feed has nothing more, ``max_pages`` were read, or the next
        page would end inside the safety margin. Holds no lease: the caller makes sure no other run
        relays this feed. Raises CursorConflict when another writer moved the cursor; ``keep`` runs
        between pages (the caller's lease renewal, which may raise); ``on_page`` once a page's cursor
        write has landed."""
        progress = Progress(state=state)
        position = state.position
        writing: _Write | None = None

        def land() -> None:
            nonlocal writing
            if writing is not None:
                landing, writing = writing, None
                self._landed(progress, landing, on_page)

        try:
            page = first if first is not None else self.read(position)
            if ahead is None:
                ahead = self.read_ahead(position, page, time_left, limit=None if max_pages is None else max_pages - 1)
            else:
                ahead.deepen(READ_AHEAD)
            while True:
                logger.append_keys(cursor=position)
                progress.pages += 1
                moved = _moved(position, page)
                last = not page.events or not page.more
                follows = moved and not last and (max_pages is None or progress.pages < max_pages)
                if page.events:
                    self.pace.timed("publish", self.publisher.publish, self.feed, page.events)
                land()  # the page before this one first: the cursor moves page after page, in order
                # Nothing is on its way to the cursor store now: it is never called from two threads
                # at once (a boto3 resource is not thread-safe).
                if keep is not None and follows:
                    keep()
                writing = self._write(progress.state, page, moved)
                position = page.next_cursor if moved else position
                following = self._following(position, ahead, time_left, land) if follows else None
                if following is None:
                    land()
                    progress.caught_up = last
                    return progress
                page = following
        except BaseException:
            # The cursor write on its way lands (or its own error goes on, chained to this one).
            land()
            raise
        finally:
            # No thread of this run outlives it: the pages read ahead are read again by the next run.
            if ahead is not None:
                ahead.close()

    def read_ahead(
        self,
        position: str | None,
        page: Page,
        time_left: Callable[[], float],
        *,
        depth: int = READ_AHEAD,
        limit: int | None = None,
    ) -> ReadAhead | None:
        """The pages after ``page`` (read at ``position``), read ahead while the run goes on (None when
        not pipelined): ``depth`` of them waiting at most, ``limit`` of them at most."""
        if self._reader is None:
            return None
        margin = self.safety_margin
        return ReadAhead(
            self.read,
            lambda pages: self.pace.fits(time_left(), margin, pages=pages),
            self._reader,
            position=position,
            page=page,
            depth=depth,
            limit=limit,
        )

    def _following(
        self, position: str | None, ahead: ReadAhead | None, time_left: Callable[[], float], land: Callable[[], None]
    ) -> Page | None:
        """The page at ``position``, None if it would not end in time. Not pipelined, the cursor
        write lands before it is read; pipelined, it was read ahead, and is left for the next run
        if the pace has slowed since."""
        if ahead is None:
            land()
            return self.read(position) if self.pace.fits(time_left(), self.safety_margin) else None
        page = ahead.take()
        return page if page is not None and self.pace.fits(time_left(), self.safety_margin) else None

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
