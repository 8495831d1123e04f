"""From an event's appearance in the feed to SNS accepting it, minute by minute, across handovers.

Events appear without pause (at random moments, two a second by default) for several minutes. A
scheduler starts a run every minute in a warm container of its own, as EventBridge and Lambda do,
so with ``PollIntervalSeconds`` below 60 the run of one minute hands over to the next as deployed:
both alive at once, the next one waiting for the lease. Time is virtual where nothing happens: when
every actor (the scheduler, the arrivals, each run) is asleep, the clock skips to the earliest of
their wake-ups; every round trip (Kontur, SNS, DynamoDB) takes its real time. The figures are the
deployed ones, without the wait, and a minute whose run polled late shows in its own row.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.rig import Kontur
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.domain.ports import Publisher
from kontur_relay.observability import metrics

#: The Lambda function's Timeout, which bounds a run.
TIMEOUT_SECONDS = 300.0
SCHEDULE_SECONDS = 60.0


class VirtualClock:
    """Epoch seconds that run at the real pace, and skip ahead whenever every actor sleeps."""

    def __init__(self) -> None:
        self._origin = time.time() - time.monotonic()
        self._skipped = 0.0
        self._actors = 0
        self._asleep: dict[int, float] = {}
        self._changed = threading.Condition()

    def __call__(self) -> float:
        return self._origin + time.monotonic() + self._skipped

    def enlist(self) -> None:
        """One more actor (before its thread starts, so that the clock never skips past it)."""
        with self._changed:
            self._actors += 1

    def discharge(self) -> None:
        with self._changed:
            self._actors -= 1
            self._skip_if_all_asleep()

    def sleep(self, seconds: float) -> None:
        """An actor's wait: real while another actor works, skipped once all of them sleep."""
        me = threading.get_ident()
        with self._changed:
            wake = self() + seconds
            self._asleep[me] = wake
            self._skip_if_all_asleep()
            while (left := wake - self()) > 0:
                self._changed.wait(timeout=left)
            del self._asleep[me]

    def _skip_if_all_asleep(self) -> None:
        if self._asleep and len(self._asleep) >= self._actors:
            self._skipped += max(min(self._asleep.values()) - self(), 0.0)
            self._changed.notify_all()


class Stamped:
    """A container's publisher, noting (on the virtual clock) when the sink accepted each event."""

    def __init__(self, inner: Publisher, clock: VirtualClock, accepted: dict[str, float]) -> None:
        self.inner, self.clock, self.accepted = inner, clock, accepted

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        self.inner.publish(feed, events)
        now = self.clock()
        for event in events:
            self.accepted.setdefault(event.id, now)


@dataclass(frozen=True)
class Minute:
    events: int
    mean: float
    p95: float
    worst: float


@dataclass(frozen=True)
class Latency:
    minutes: list[Minute]
    runs: dict[str, int]

    @property
    def worst(self) -> float:
        return max(minute.worst for minute in self.minutes)

    @property
    def mean(self) -> float:
        return statistics.fmean(minute.mean for minute in self.minutes)


def _minute(waits: list[float]) -> Minute:
    ordered = sorted(waits)
    return Minute(len(ordered), statistics.fmean(ordered), ordered[math.ceil(0.95 * len(ordered)) - 1], ordered[-1])


class Schedule:
    """The scheduler, the arrivals and the runs of one measurement, as actors on one virtual clock."""

    def __init__(self, kontur: Kontur, relay_for: Callable[[VirtualClock, Callable[[Publisher], Publisher]], Relay]):
        self.kontur = kontur
        self.relay_for = relay_for
        self.clock = VirtualClock()
        self.accepted: dict[str, float] = {}
        self.appeared: dict[str, float] = {}
        self.outcomes: dict[str, int] = {}
        self._containers: list[Relay] = []
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def container(self) -> Relay:
        """A warm container no run is using, as Lambda gives a concurrent invocation its own."""
        with self._lock:
            relay = next((relay for relay in self._containers if id(relay) not in self._busy), None)
            if relay is None:
                relay = self.relay_for(self.clock, lambda inner: Stamped(inner, self.clock, self.accepted))
                self._containers.append(relay)
            self._busy.add(id(relay))
            return relay

    def run(self, relay: Relay) -> None:
        try:
            invoked = self.clock()
            report = relay.run(time_left=lambda: TIMEOUT_SECONDS - (self.clock() - invoked))
            with self._lock:
                self.outcomes[report.outcome.value] = self.outcomes.get(report.outcome.value, 0) + 1
                self._busy.discard(id(relay))
        finally:
            self.clock.discharge()

    def arrive(self, until: float, per_second: float, seed: int) -> None:
        rng = random.Random(seed)
        try:
            while True:
                self.clock.sleep(rng.expovariate(per_second))
                if self.clock() >= until:
                    return
                for event_id in self.kontur.generate(1):
                    self.appeared[event_id] = self.clock()
        finally:
            self.clock.discharge()

    def measure(self, minutes: float, per_second: float, seed: int) -> Latency:
        start = self.clock()
        end = start + minutes * SCHEDULE_SECONDS
        first = self.container()
        first.cursors.set_cursor(first.feed.id, self.kontur.end(), expected_version=0, by="bench")  # type: ignore[attr-defined]
        self._busy.clear()
        self.clock.enlist()  # this thread, the scheduler
        self.clock.enlist()  # the arrivals
        arrivals = threading.Thread(target=self.arrive, args=(end, per_second, seed), name="arrivals")
        arrivals.start()
        runs: list[threading.Thread] = []
        try:
            tick = start
            while True:
                self.clock.sleep(max(tick - self.clock(), 0.0))
                # Every event that appeared is given the ticks it needs to be published (a period at most).
                if tick >= end and (len(self.accepted) >= len(self.appeared) or tick >= end + 3 * SCHEDULE_SECONDS):
                    break
                self.clock.enlist()
                runs.append(threading.Thread(target=self.run, args=(self.container(),), name=f"run-{len(runs)}"))
                runs[-1].start()
                tick += SCHEDULE_SECONDS
        finally:
            self.clock.discharge()
            arrivals.join()
            for thread in runs:
                thread.join()
            metrics.clear_metrics()
        missing = set(self.appeared) - set(self.accepted)
        if missing:
            raise RuntimeError(f"{len(missing)} of {len(self.appeared)} events were never published")
        by_minute: dict[int, list[float]] = {}
        last = math.ceil(minutes) - 1  # an event whose appearance was acknowledged just after the end
        for event_id, at in self.appeared.items():
            minute = min(int((at - start) // SCHEDULE_SECONDS), last)
            by_minute.setdefault(minute, []).append(self.accepted[event_id] - at)
        return Latency([_minute(by_minute[minute]) for minute in sorted(by_minute)], dict(self.outcomes))


def measure_latency(
    kontur: Kontur,
    relay_for: Callable[[VirtualClock, Callable[[Publisher], Publisher]], Relay],
    *,
    minutes: float,
    per_second: float,
    seed: int,
) -> Latency:
    """``relay_for(clock, stamped)`` builds a warm container's relay, its publisher wrapped by ``stamped``."""
    return Schedule(kontur, relay_for).measure(minutes, per_second, seed)
