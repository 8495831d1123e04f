"""From an event's appearance in the feed to its arrival in a queue subscribed to the topic.

Minutes of schedule pass in seconds on a clock that skips whatever the relay or the scheduler
sleeps, while every round trip (Kontur, SNS, DynamoDB, SQS) takes its real time: the figures are
the deployed ones, without the wait. Events appear at random moments (the feed's own pace does not
matter: latency is the wait for the next poll plus the relay's work). The scheduler's ticks run one
after another; with the sub-minute option a run hands over to the next at the minute, as deployed,
except that the next tick does not wait up to 0.5 s polling for the lease.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.rig import Kontur
from kontur_relay.domain.engine import Relay
from kontur_relay.observability import metrics

#: The Lambda function's Timeout, which bounds a run.
TIMEOUT_SECONDS = 300.0
SCHEDULE_SECONDS = 60.0


class SkippingClock:
    """Epoch seconds that run at the real pace, plus every second a sleeper skipped."""

    def __init__(self) -> None:
        self.origin = time.time() - time.monotonic()
        self.skipped = 0.0

    def __call__(self) -> float:
        return self.origin + time.monotonic() + self.skipped

    def skip_to(self, moment: float) -> None:
        self.skipped += max(moment - self(), 0.0)


def _time_left(clock: SkippingClock) -> Callable[[], float]:
    """Lambda's remaining time for an invocation starting now."""
    invoked = clock()
    return lambda: TIMEOUT_SECONDS - (clock() - invoked)


@dataclass(frozen=True)
class Latency:
    events: int
    mean: float
    worst: float
    median: float


def measure_latency(
    kontur: Kontur,
    relay_for: Callable[[SkippingClock, Callable[[float], None]], Relay],
    sqs: Any,
    queue_url: str,
    *,
    minutes: float,
    per_minute: float,
    seed: int,
) -> Latency:
    clock = SkippingClock()
    rng = random.Random(seed)
    start = clock()
    span = minutes * 60
    due = sorted(start + rng.uniform(0, span) for _ in range(max(1, round(minutes * per_minute))))
    appeared: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def collect() -> None:
        """What the last pages published is in the queue by now (moto delivers as it accepts)."""
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return
            now = clock()
            for message in messages:
                arrived.setdefault(json.loads(message["Body"])["id"], now)
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )

    def sleep(seconds: float) -> None:
        """The relay's and the scheduler's waits: skipped, with the events due meanwhile appearing."""
        collect()
        until = clock() + seconds
        while due and due[0] <= until:
            clock.skip_to(due.pop(0))
            for event_id in kontur.generate(1):
                appeared[event_id] = clock()
        clock.skip_to(until)

    relay = relay_for(clock, sleep)
    relay.cursors.set_cursor(relay.feed.id, kontur.end(), expected_version=0, by="bench")  # type: ignore[attr-defined]
    tick = start
    # Every event that appeared is given the ticks it needs to arrive (a schedule period at most).
    while (due or len(arrived) < len(appeared)) and tick < start + span + 3 * SCHEDULE_SECONDS:
        sleep(max(tick - clock(), 0.0))
        relay.run(time_left=_time_left(clock))
        metrics.clear_metrics()
        collect()
        tick += SCHEDULE_SECONDS
    missing = set(appeared) - set(arrived)
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(appeared)} events never arrived in the queue")
    waits = [arrived[event_id] - moment for event_id, moment in appeared.items()]
    return Latency(len(waits), statistics.fmean(waits), max(waits), statistics.median(waits))
