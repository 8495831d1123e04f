"""The relay's inner loop and its guarantee: publish a page, and only then move the cursor.

``Pages.drain`` is the one place a cursor moves. A cursor write happens only after the publisher
returned, and the publisher returns only when the sink accepted every event of the page. A crash
anywhere before the write leaves the cursor where it was, so the page is read and published again
(a duplicate, never a loss). The version check on the write keeps two runs of one feed from moving
the cursor backwards.

The next page is read while the current one is published (the source's round trip is the larger
part of a page's time), from the cursor the current page leads to. Reading ahead moves nothing:
the cursor still moves only once its page is fully published, page after page, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.domain.model import CursorState, Feed, Page
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
        read_ahead: bool = True,
    ) -> None:
        self.feed = feed
        self.source = source
        self.publisher = publisher
        self.cursors = cursors
        self.safety_margin = safety_margin
        # One thread, made on first use and kept: a feed reads at most one page ahead.
        self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") if read_ahead else None

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
        nothing more, ``max_pages`` were read, or time runs short. Holds no lease: the caller makes
        sure no other run relays this feed. Raises CursorConflict when another writer moved the
        cursor; ``keep`` runs between pages (the caller's lease renewal, which may raise)."""
        progress = Progress(state=state)
        page = first if first is not None else self.source.read_page(state.position)
        while True:
            logger.append_keys(cursor=progress.state.position)
            progress.pages += 1
            last = not page.events or not page.more
            out = (max_pages is not None and progress.pages >= max_pages) or time_left() < self.safety_margin
            ahead = None if last or out else self._read_ahead(progress.state, page)
            try:
                progress.state = self._relay_page(progress.state, page)
            except BaseException:
                if ahead is not None:
                    wait([ahead])  # no thread of this run outlives it; its page is read again next run
                raise
            progress.events += len(page.events)
            progress.backlog, progress.backlog_capped = page.backlog, page.backlog_capped
            if page.events:
                progress.newest_event_time = page.events[-1].time
            if on_page is not None:
                on_page(progress, page)
            if last:
                progress.caught_up = True
                return progress
            if out:
                return progress
            if keep is not None:
                keep()
            page = ahead.result() if ahead is not None else self.source.read_page(progress.state.position)

    def _read_ahead(self, state: CursorState, page: Page) -> Future[Page] | None:
        if self._ahead is None or not self._moves(state, page):
            return None
        return self._ahead.submit(self.source.read_page, page.next_cursor)

    @staticmethod
    def _moves(state: CursorState, page: Page) -> bool:
        return page.next_cursor is not None and page.next_cursor != state.position

    def _relay_page(self, state: CursorState, page: Page) -> CursorState:
        """Publish the page, then move the cursor: the order that makes delivery at-least-once."""
        moved = self._moves(state, page)
        if page.events and not moved:
            # Publishing would succeed and the next read would return the same page for ever.
            raise MalformedPage(f"a page of {len(page.events)} events did not move the cursor")
        if page.events:
            self.publisher.publish(self.feed, page.events)
        if not moved:
            return state
        return self.cursors.advance(state, page.next_cursor, relayed=len(page.events))
