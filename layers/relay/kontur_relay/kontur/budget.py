"""Kontur's request budget, kept on the client side: at most so many requests in flight and so many
sent in any one second, across every thread of a container, token requests and retries included.

Kontur asks an integrator for at most 4 parallel requests and 100 requests/s with one token. A
429, or any answer with ``Retry-After``, pauses every request of the budget, not just the one
that got it: the next request of another box would be refused too.

The per-second limit is a sliding window (the send times of the last N requests) a quarter of a
second longer than a second: a request leaves a little after its place is taken and reaches Kontur
a little later still, and these delays vary, so a window of exactly one second here would let
more than N requests into some second as Kontur counts them.
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

    @contextmanager
    def request(self) -> Iterator[None]:
        """Hold a place in flight for one request (and whatever retries it takes)."""
        started = self.clock()
        if self._slots is not None:
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
        while True:
            with self._lock:
                now = self.clock()
                if self._closed_until > now:
                    left = self._closed_until - now
                    raise FeedUnavailable("a request was held back: Kontur asked to be left alone", retry_after=left)
                wait = self._paused_until - now
                if self.per_second is not None:
                    while self._sent and now - self._sent[0] >= WINDOW_SECONDS:
                        self._sent.popleft()
                    if len(self._sent) >= self.per_second:
                        wait = max(wait, self._sent[0] + WINDOW_SECONDS - now)
                if wait <= 0:
                    if self.per_second is not None:
                        self._sent.append(now)
                    self.counts.requests += 1
                    self.counts.waited += now - started
                    return
            self.sleep(wait)

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
