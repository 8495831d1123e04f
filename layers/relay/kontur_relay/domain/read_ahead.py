"""Reading a feed ahead of publishing it: the pages after a given one, read in order on a thread of
their own while the run publishes and writes the cursor of the pages before them.

A run's pace is set by its reads (a round trip to Kontur each), so a read waits for nothing but the
read before it and room in the queue: not for a cursor write that DynamoDB answers slowly, not for
the lease. Reading moves nothing (the cursor moves only in ``pages.Pages.drain``), so a page read
ahead and never published costs one request: the next run reads it again.

At most ``depth`` pages wait to be published, and a page is begun only if it, the pages waiting and
the page being published beside them can end before the run's safety margin at the pace it has seen
(``pace.Pace``); the queue is only as deep as the run's remaining time allows.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future

from kontur_relay.domain.model import Page


def leads_on(position: str | None, page: Page) -> bool:
    """Whether a page read at ``position`` has a next page to read: a full page that moved the cursor."""
    return bool(page.events) and page.more and page.next_cursor not in (None, position)


class ReadAhead:
    """The pages after ``page`` (read at ``position``), read by ``read`` on ``executor``'s thread.
    ``fits(pages)`` says whether that many pages, begun now, end before the run's safety margin;
    ``limit`` caps the pages read (None: until the feed has nothing more)."""

    def __init__(
        self,
        read: Callable[[str | None], Page],
        fits: Callable[[int], bool],
        executor: Executor,
        *,
        position: str | None,
        page: Page,
        depth: int,
        limit: int | None = None,
    ) -> None:
        self._read = read
        self._fits = fits
        self.depth = depth
        self._limit = limit
        self._waiting: deque[Page | BaseException] = deque()
        self._changed = threading.Condition()
        self._closed = self._done = False
        self._begun = threading.Event()
        self._reading: Future[None] | None = None
        if leads_on(position, page) and limit != 0:
            self._reading = executor.submit(self._read_on, position, page)
            # Publishing is CPU work that would otherwise keep the interpreter from the reader for
            # a switch interval (5 ms): the reads are what sets the relay's pace.
            self._begun.wait(timeout=0.05)
        else:
            self._done = True

    def deepen(self, depth: int) -> None:
        """Let ``depth`` pages wait (a run reads one page ahead until it holds its lease)."""
        with self._changed:
            self.depth = depth
            self._changed.notify_all()

    def take(self) -> Page | None:
        """The next page, once read; None when there is none to come (the feed has nothing more, the
        limit was reached, or the next page would not end in time). Raises what its read raised."""
        with self._changed:
            while not self._waiting and not self._done:
                self._changed.wait()
            if not self._waiting:
                return None
            taken = self._waiting.popleft()
            self._changed.notify_all()
        if isinstance(taken, BaseException):
            raise taken
        return taken

    def close(self) -> None:
        """Read nothing more, and return once the read on its way has ended: no thread of a run
        outlives it."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._reading is not None:
            self._reading.result()

    def _read_on(self, position: str | None, page: Page) -> None:
        read = 0
        try:
            while leads_on(position, page) and (self._limit is None or read < self._limit):
                with self._changed:
                    while len(self._waiting) >= self.depth and not self._closed:
                        self._changed.wait()
                    # The page itself, those waiting, and the one published beside them.
                    if self._closed or not self._fits(len(self._waiting) + 2):
                        return
                self._begun.set()
                position = page.next_cursor
                try:
                    page = self._read(position)
                except BaseException as error:  # noqa: BLE001 - the run raises it, in its own thread
                    self._put(error)
                    return
                read += 1
                self._put(page)
        finally:
            self._begun.set()
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _put(self, item: Page | BaseException) -> None:
        with self._changed:
            self._waiting.append(item)
            self._changed.notify_all()
