"""What a client's load looks like from the server's side: requests in flight at once and requests
begun in any one second. Kontur counts an integrator's budget this way, so the tests do too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Load:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_flight = 0
        self.most_in_flight = 0
        #: When each request arrived, in order.
        self.arrivals: list[float] = []
        #: Seconds each answer is held back, so that requests overlap as they would on a real network.
        self.latency = 0.0
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.arrivals.append(self.clock())

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def most_per_second(self) -> int:
        """The most requests that arrived within any one second (a sliding window, not aligned)."""
        with self._lock:
            arrivals = list(self.arrivals)
        most, first = 0, 0
        for last, moment in enumerate(arrivals):
            while moment - arrivals[first] >= 1.0:
                first += 1
            most = max(most, last - first + 1)
        return most

    def reset(self) -> None:
        with self._lock:
            self.most_in_flight = 0
            self.arrivals.clear()
