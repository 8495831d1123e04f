"""What every sink shares: a page's messages sent in batches, and what the sink refused sent again.

A page is split into calls by the sink's count and byte limits, in the page's order, and sent: in
parallel where the sink promises no order, one call after another where it does (FIFO queues and
topics, the webhook). Where an ordered sink may take part of a call (FIFO), a call holds at most one
message of each group, so that an entry it refused is sent again before any later message of its
group goes out; a webhook request is taken or refused whole, so it needs no such split. Refused
entries are retried with growing, jittered pauses until the sink takes them; an entry refused as
the sender's fault, or still refused when the attempts are spent, ends the page in a PublishError,
and the cursor stays. A sink adapter supplies only what differs: its limits, how it measures a
message, and ``send``, one call that reports what it refused.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kontur_relay.domain.errors import PublishError
from kontur_relay.observability import MetricUnit, logger, metrics
from kontur_relay.sinks.message import Message


@dataclass(frozen=True)
class Limits:
    """What one call of the sink may carry."""

    entries: int
    #: Bytes of one call, as ``measure`` counts them; also the most one message may be.
    call_bytes: int


@dataclass(frozen=True)
class Refused:
    """A message the sink did not take in a call."""

    message: Message
    code: str
    reason: str
    #: False: the message itself is at fault (the sender's fault); sending it again cannot help.
    retryable: bool = True
    #: Seconds the sink asked to be left alone (a webhook's Retry-After).
    retry_after: float | None = None


#: One call of a sink with a batch; what it refused, in the batch's order. Raises PublishError when
#: the call failed as a whole (boto3's own retries spent).
Send = Callable[[list[Message]], list[Refused]]


def refused_by_id(batch: Sequence[Message], response: Mapping[str, Any]) -> list[Refused]:
    """What a call answering ``Successful`` and ``Failed`` entries by ``Id`` (the batch's index: SNS's
    PublishBatch, SQS's SendMessageBatch) refused. An entry it reports neither way is sent again, as a
    failed one is; one failed as the sender's fault is not."""
    accepted = {entry["Id"] for entry in response.get("Successful", [])}
    failed: dict[str, Mapping[str, Any]] = {entry["Id"]: entry for entry in response.get("Failed", [])}
    refused = []
    for index, message in enumerate(batch):
        if str(index) in accepted:
            continue
        entry = failed.get(str(index), {})
        code, reason = str(entry.get("Code")), str(entry.get("Message"))
        refused.append(Refused(message, code, reason, retryable=not entry.get("SenderFault")))
    return refused


def size_of(message: Message) -> int:
    return message.size


def batches(
    messages: Sequence[Message],
    limits: Limits,
    *,
    sink: str,
    measure: Callable[[Message], int] = size_of,
    distinct_groups: bool = False,
) -> Iterator[list[Message]]:
    """``messages`` in calls, in order, by count and by size; ``distinct_groups``: a group at most
    once a call."""
    batch: list[Message] = []
    size = 0
    groups: set[str] = set()
    for message in messages:
        measured = measure(message)
        if measured > limits.call_bytes:
            # Only without a payload bucket (PAYLOAD_BUCKET) to offload it to.
            raise PublishError(
                f"event {message.event_id} is {measured} bytes as a message of {sink}; {sink} accepts at most "
                f"{limits.call_bytes}, and no payload bucket (PAYLOAD_BUCKET) is configured to offload it to"
            )
        full = len(batch) == limits.entries or size + measured > limits.call_bytes
        if full or (distinct_groups and message.group_id in groups):
            yield batch
            batch, size, groups = [], 0, set()
        batch.append(message)
        size += measured
        groups.add(message.group_id)
    if batch:
        yield batch


class Delivery:
    """Sends a page's messages through ``send`` and returns once the sink took every one."""

    def __init__(
        self,
        sink: str,
        send: Send,
        limits: Limits,
        *,
        ordered: bool,
        #: The sink may take part of a call: an ordered one then gets one message of a group a call.
        partial: bool = True,
        measure: Callable[[Message], int] = size_of,
        parallel: int = 10,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sink = sink
        self.send = send
        self.limits = limits
        self.ordered = ordered
        self.one_per_group = ordered and partial
        self.measure = measure
        self.parallel = 1 if ordered else parallel
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=self.parallel) if self.parallel > 1 else None

    def deliver(self, messages: Sequence[Message]) -> None:
        chunks = list(
            batches(messages, self.limits, sink=self.sink, measure=self.measure, distinct_groups=self.one_per_group)
        )
        if self._pool is None or len(chunks) == 1:
            for chunk in chunks:
                self._deliver_batch(chunk)
            return
        # Every batch runs to its end before the first failure is raised: the page is republished
        # as a whole anyway, and an abandoned thread must not outlive the invocation.
        futures = [self._pool.submit(self._deliver_batch, chunk) for chunk in chunks]
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error

    def _deliver_batch(self, batch: list[Message]) -> None:
        pending = batch
        for attempt in range(1, self.attempts + 1):
            refused = self.send(pending)
            if not refused:
                return
            final = [entry for entry in refused if not entry.retryable]
            if final:
                first = final[0]
                raise PublishError(
                    f"{self.sink} rejected event {first.message.event_id}: {first.code}: {first.reason} "
                    f"({len(final)} of {len(batch)} in the batch)"
                )
            metrics.add_metric(name="PublishRetries", unit=MetricUnit.Count, value=len(refused))
            logger.warning(
                f"{self.sink} failed some entries; retrying them",
                extra={"attempt": attempt, "failed": len(refused), "codes": sorted({entry.code for entry in refused})},
            )
            pending = [entry.message for entry in refused]
            if attempt < self.attempts:
                asked = max((entry.retry_after or 0.0 for entry in refused), default=0.0)
                self.sleep(max(random.uniform(0, self.base_delay * 2**attempt), min(asked, self.max_delay)))
        raise PublishError(
            f"{self.sink} did not accept {len(pending)} of {len(batch)} messages after {self.attempts} attempts "
            f"(first: event {pending[0].event_id})"
        )
