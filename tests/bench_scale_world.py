"""The measuring instruments of ``make bench-scale`` (``tests/bench_scale.py``): a population of boxes in
the Diadoc simulator with the traffic they make over simulated time, a clock for the schedule's ticks,
and counters on the way to DynamoDB and SNS. The two designs under test run inside the same world, so
their figures differ only by the design.

Everything is counted where the system under test cannot flatter it: requests at the simulator (its
``Load`` and journal), writes on the boto3 table the adapters hold, events at the publisher.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.model import CursorState, Feed, FeedEvent
from kontur_relay.feeds.diadoc.boxes import feed_id, filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from local_stack.simulators.diadoc import DiadocSimulator

EVENTS_PATH = "/V8/GetNewEvents"
TICK_SECONDS = 60.0
#: What the admin API stores for a box registered with the deployment's defaults.
DEFAULTS = {"start": "oldest", "limit": 500}
IDLE, ACTIVE, BACKLOG = "idle", "active", "backlog"
CLASSES = (IDLE, ACTIVE, BACKLOG)


@dataclass(frozen=True)
class Mix:
    """Who the boxes are: most idle, some with a trickle of events, a few with a backlog as well."""

    boxes: int
    active: int
    backlogs: int
    backlog_events: int
    #: Events a simulated minute per active (and backlogged) box, on average (a Poisson process).
    active_rate: float

    def scaled(self, boxes: int) -> Mix:
        """The same proportions over fewer boxes, keeping at least one box of each class there was."""
        share = boxes / self.boxes
        active = max(round(self.active * share), 1 if self.active else 0)
        backlogs = max(round(self.backlogs * share), 1 if self.backlogs else 0)
        return Mix(
            boxes, min(active, boxes), min(backlogs, max(boxes - active, 0)), self.backlog_events, self.active_rate
        )

    def describe(self) -> str:
        idle = self.boxes - self.active - self.backlogs
        return (
            f"{self.boxes:,} boxes: {idle:,} idle, {self.active:,} active ({self.active_rate:g} events/min each), "
            f"{self.backlogs:,} with a backlog of {self.backlog_events:,} (and the same trickle)"
        )


class TickClock:
    """Simulated epoch seconds for the poller, its registry and cursors, and the figures: time runs at
    real speed while a design runs (Kontur's budget is real requests in real seconds) and jumps to the
    next schedule tick between runs, where nothing happens. That skip is all the compression there is,
    so a run that takes 40 s takes 40 simulated seconds too."""

    def __init__(self, start: float) -> None:
        self._base = start
        self._real = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._base + (time.monotonic() - self._real)

    def simulated(self, monotonic: float) -> float:
        """The simulated moment of a ``time.monotonic`` reading taken since the last ``set``."""
        with self._lock:
            return self._base + (monotonic - self._real)

    def set(self, moment: float) -> None:
        with self._lock:
            self._base, self._real = moment, time.monotonic()


class CountingTable:
    """The boto3 Table the adapters hold, counting each write by item (lease, cursor, schedule) and
    what each scan read; everything else passes through."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._lock = threading.Lock()
        self.writes: Counter[str] = Counter()
        self.scans = 0
        self.scanned_items = 0
        self.read_units = 0.0
        self.scan_seconds = 0.0

    def update_item(self, **kwargs: Any) -> Any:
        self._count(str(kwargs["Key"]["feed"]))
        return self._table.update_item(**kwargs)

    def put_item(self, **kwargs: Any) -> Any:
        self._count(str(kwargs["Item"]["feed"]))
        return self._table.put_item(**kwargs)

    def scan(self, **kwargs: Any) -> Any:
        # What a page of the registry's scan costs: DynamoDB bills the items read, not those returned.
        started = time.monotonic()
        response = self._table.scan(**kwargs, ReturnConsumedCapacity="TOTAL")
        with self._lock:
            self.scan_seconds += time.monotonic() - started
            self.scans += 1
            self.scanned_items += int(response.get("ScannedCount", 0))
            self.read_units += float(response.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
        return response

    def take_writes(self) -> Counter[str]:
        """The writes since the last call, by item."""
        with self._lock:
            writes, self.writes = self.writes, Counter()
        return writes

    def _count(self, key: str) -> None:
        with self._lock:
            self.writes[key] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


class ArrivalPublisher:
    """The SNS topic in memory: when (simulated) each event first arrived, how many came twice, and
    how many each feed got since the last ``take_counts``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        now = self.clock()
        with self._lock:
            self._counts[feed.id] += len(events)
            for event in events:
                if event.id in self.arrived:
                    self.duplicates += 1
                else:
                    self.arrived[event.id] = now

    def take_counts(self) -> Counter[str]:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts


@dataclass
class Population:
    """The boxes in the simulator, their class, and each event's appearance (simulated time)."""

    sim: DiadocSimulator
    mix: Mix
    start: float
    classes: dict[str, str] = field(default_factory=dict)
    #: EventId → (when the simulator began serving it, its box's class).
    appeared: dict[str, tuple[float, str]] = field(default_factory=dict)
    #: Events still to appear: (when, box), soonest first.
    _due: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(cls, sim: DiadocSimulator, mix: Mix, start: float, minutes: float, seed: int) -> Population:
        """The boxes, visible whole to the relay's user, backlogs in place at ``start``, and the
        trickle drawn in advance over ``minutes``, so both designs can be given the same one."""
        rng = random.Random(seed)
        population = cls(sim, mix, start)
        for number in range(mix.boxes):
            box = sim.add_box().id
            sim.set_access("relay@example.ru", box, None)
            kind = BACKLOG if number < mix.backlogs else ACTIVE if number < mix.backlogs + mix.active else IDLE
            population.classes[box] = kind
            if kind == BACKLOG:
                for event in sim.generate(box, mix.backlog_events):
                    population.appeared[event] = (start, BACKLOG)
            if kind != IDLE and mix.active_rate > 0:
                # From a minute before the first tick: in a steady state an active box has news waiting.
                moment = start - TICK_SECONDS
                while True:
                    moment += rng.expovariate(mix.active_rate / TICK_SECONDS)
                    if moment >= start + minutes * TICK_SECONDS:
                        break
                    population._due.append((moment, box))
        heapq.heapify(population._due)
        return population

    def release(self, now: float) -> int:
        """Put every event due by ``now`` into the simulator, stamped with when it was due. Called
        often while a design runs and at each tick: between ticks no one reads, so an event that fell
        due in the gap is found exactly as if it had been there since."""
        added = 0
        with self._lock:
            while self._due and self._due[0][0] <= now:
                moment, box = heapq.heappop(self._due)
                # With Diadoc's habits an event may come with a sibling, or be served late: it is
                # there for the relay from when it is served.
                for event in self.sim.generate(box, 1):
                    self.appeared[event] = (max(moment, self.sim.served_at(box, event)), self.classes[box])
                    added += 1
        return added

    @contextmanager
    def flowing(self, clock: Callable[[], float], every: float = 0.05) -> Iterator[None]:
        """Events keep appearing, on simulated time, while the body runs."""
        stop = threading.Event()

        def feed() -> None:
            while not stop.wait(every):
                self.release(clock())

        thread = threading.Thread(target=feed, name="traffic", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(clock())

    def pending(self) -> int:
        with self._lock:
            return len(self._due)

    def register(self, registry: DynamoBoxRegistry, min_interval: float, max_interval: float) -> None:
        """Every box in the registry in a steady state: idle boxes backed off to the maximum interval,
        due at moments spread over it (they were registered long ago), active ones at the minimum;
        the backlogged ones are new, due at once.

        The non-idle boxes and one idle box go through the registry (``register``, then the write the
        poller's last poll would have made); thousands of idle boxes one write at a time take minutes
        on a small machine, so the rest are copies of that idle box's item, written in batches."""
        rng = random.Random(7)
        idle = [box for box, kind in self.classes.items() if kind == IDLE]
        template: dict[str, Any] | None = None
        for box, kind in self.classes.items():
            if kind == IDLE and template is not None:
                continue
            feed = box_feed({"boxId": box}, DEFAULTS)
            stored = feed.stored()
            key = filters_key(feed)
            registry.register(
                feed_id(box), stored, key, by="bench", expected_version=0, restart=False, first_poll_at=self.start - 1
            )
            if kind == BACKLOG:
                continue
            interval = max_interval if kind == IDLE else min_interval
            registry.polled(
                _registered(feed_id(box), stored, key),
                next_poll_at=self.start - min_interval + rng.random() * interval,
                interval=interval,
                had_events=False,
            )
            if kind == IDLE:
                template = registry.table.get_item(Key={"feed": feed_id(box)}, ConsistentRead=True)["Item"]
        if template is None:
            return
        with registry.table.batch_writer() as batch:
            for box in idle[1:]:
                due = self.start - min_interval + rng.random() * max_interval
                batch.put_item(Item={**template, "feed": feed_id(box), "next_poll_at": Decimal(str(round(due, 3)))})


def _registered(feed: str, settings: dict[str, Any], key: str) -> RegisteredBox:
    return RegisteredBox(
        feed=feed,
        settings=settings,
        filters_key=key,
        cursor=CursorState(feed=feed, position=None, version=0, stopped_reason=None),
        next_poll_at=0.0,
        interval=0.0,
        last_poll_at=None,
        last_events_at=None,
        last_error=None,
        registered_at=None,
        registered_by=None,
    )


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(int(-(-share * len(ordered) // 1)), 1)
    return ordered[min(rank, len(ordered)) - 1]
