"""Kontur's request budget, kept on the client side: at most so many requests in flight and so many
sent in any one second, across every thread of a container, token requests and retries included.

Kontur asks an integrator for at most 4 parallel requests and 100 requests/s with one token. A
429, or any answer with ``Retry-After``, pauses every request of the budget, not just the one
that got it: the next request of another box would be refused too.

The per-second limit is a sliding window (the send times of the last N requests) a quarter of a
second longer than a second: a request leaves a little after its place is taken and reaches Kontur
a little later still, and these delays vary, so a window of exactly one second here would let
more than N requests into some second as Kontur counts them.

A thread may make its requests **background** work (``background(share)``: Diadoc's
reconciliation): they go one at a time, only while no ordinary request waits for a place, never
take the last place in flight, and take at most ``share`` of the per-second budget. Ordinary
requests never wait for them longer than one background request already on its way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from kontur_relay.domain.errors import FeedUnavailable

#: The per-second window, with room for requests delayed on their way (see above).
WINDOW_SECONDS = 1.25


@dataclass
class RequestCounts:
    """What a budget saw: for the run's metrics and the logs."""

    requests: int = 0
    throttled: int = 0
    most_in_flight: int = 0
    #: Seconds requests spent waiting for a place in the budget (its pauses included).
    waited: float = 0.0
    #: Of ``requests``, those sent as background work.
    background: int = 0


class Budget:
    """Counts every request; limits them when ``max_in_flight``/``per_second`` are given."""

    def __init__(
        self,
        *,
        max_in_flight: int | None = None,
        per_second: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.per_second = per_second
        self.clock = clock
        self.sleep = sleep
        self.counts = RequestCounts()
        self._slots = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._closed_until = 0.0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        #: Ordinary requests waiting for a place in flight or in the window: background work waits.
        self._queued = 0
        self._background_sent: deque[float] = deque()
        self._background_slot = threading.Lock()

    @contextmanager
    def background(self, share: float) -> Iterator[None]:
        """Make this thread's requests background work, within ``share`` (0..1) of the per-second budget."""
        self._local.share = share
        try:
            yield
        finally:
            self._local.share = None

    @contextmanager
    def request(self) -> Iterator[None]:
        """Hold a place in flight for one request (and whatever retries it takes)."""
        started = self.clock()
        share = self._share()
        if share is not None:
            with self._background_slot:
                self._yield_place()
                with self._place(started):
                    yield
            return
        with self._lock:
            self._queued += 1
        try:
            if self._slots is not None:
                self._slots.acquire()
        finally:
            with self._lock:
                self._queued -= 1
        with self._place(started, taken=True):
            yield

    @contextmanager
    def _place(self, started: float, *, taken: bool = False) -> Iterator[None]:
        """A place in flight (``taken``: its slot is held already), then the request's send."""
        if not taken and self._slots is not None:
            self._slots.acquire()
        try:
            with self._lock:
                self._in_flight += 1
                self.counts.most_in_flight = max(self.counts.most_in_flight, self._in_flight)
                self.counts.waited += self.clock() - started
            self.send()
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
            if self._slots is not None:
                self._slots.release()

    def send(self) -> None:
        """Wait until one more send fits the per-second window and no pause holds; count it.
        A retry calls this again before going out: it is a request like any other."""
        started = self.clock()
        share = self._share()
        queued = False
        try:
            while True:
                with self._lock:
                    now = self.clock()
                    if self._closed_until > now:
                        left = self._closed_until - now
                        raise FeedUnavailable(
                            "a request was held back: Kontur asked to be left alone", retry_after=left
                        )
                    wait = self._paused_until - now
                    if self.per_second is not None:
                        while self._sent and now - self._sent[0] >= WINDOW_SECONDS:
                            self._sent.popleft()
                        if len(self._sent) >= self.per_second:
                            wait = max(wait, self._sent[0] + WINDOW_SECONDS - now)
                    if share is not None:
                        wait = max(wait, self._background_wait(now, share))
                    if wait <= 0:
                        if self.per_second is not None:
                            self._sent.append(now)
                        if share is not None:
                            self._background_sent.append(now)
                            self.counts.background += 1
                        self.counts.requests += 1
                        self.counts.waited += now - started
                        return
                    if share is None and not queued:
                        queued, self._queued = True, self._queued + 1
                self.sleep(wait)
        finally:
            if queued:
                with self._lock:
                    self._queued -= 1

    def _share(self) -> float | None:
        return getattr(self._local, "share", None)

    def _background_wait(self, now: float, share: float) -> float:
        """Seconds a background send waits (under the lock): while ordinary requests wait, and
        until its own share of the window has room."""
        if self._queued:
            return 0.05
        if self.per_second is None:
            return 0.0
        while self._background_sent and now - self._background_sent[0] >= WINDOW_SECONDS:
            self._background_sent.popleft()
        allowed = max(int(self.per_second * share), 1)
        if len(self._background_sent) >= allowed:
            return self._background_sent[0] + WINDOW_SECONDS - now
        return 0.0

    def _yield_place(self) -> None:
        """Wait until a background request may take a place in flight: nothing ordinary waits for
        one, and one is left free for the ordinary requests that come next."""
        while True:
            with self._lock:
                # With a single place in flight, background work takes it only when it is free.
                spare = self.max_in_flight is None or self._in_flight < max(self.max_in_flight - 1, 1)
                if spare and not self._queued:
                    return
            self.sleep(0.05)

    def close(self, seconds: float) -> None:
        """Kontur asked to be left alone for longer than a run can wait: every request of the budget
        fails at once (FeedUnavailable) instead of waiting."""
        with self._lock:
            self.counts.throttled += 1
            self._closed_until = max(self._closed_until, self.clock() + seconds)

    def pause(self, seconds: float) -> None:
        """Kontur said to slow down: no request of this budget goes out for ``seconds``."""
        with self._lock:
            self.counts.throttled += 1
            self._paused_until = max(self._paused_until, self.clock() + seconds)
