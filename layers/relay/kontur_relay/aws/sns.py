"""Publishing to SNS with PublishBatch: 10 messages and 256 KiB a call, failed entries retried."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from kontur_relay.aws import sns_form
from kontur_relay.aws.offload import PayloadOffloader
from kontur_relay.aws.sns_message import SnsMessage, sns_messages
from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.observability import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sns.type_defs import PublishBatchRequestEntryTypeDef

#: SNS limits: entries per PublishBatch, and bytes of one message and of a whole batch.
MAX_BATCH_ENTRIES = 10
MAX_PAYLOAD_BYTES = 262_144


def batches(messages: Sequence[SnsMessage]) -> Iterator[list[SnsMessage]]:
    """Split into PublishBatch calls, in order, by count and by total size."""
    batch: list[SnsMessage] = []
    size = 0
    for message in messages:
        if message.size > MAX_PAYLOAD_BYTES:
            # Only without a payload bucket (PAYLOAD_BUCKET) to offload it to.
            raise PublishError(
                f"event {message.event_id} is {message.size} bytes as an SNS message; SNS accepts at most "
                f"{MAX_PAYLOAD_BYTES}, and no payload bucket (PAYLOAD_BUCKET) is configured to offload it to"
            )
        if len(batch) == MAX_BATCH_ENTRIES or size + message.size > MAX_PAYLOAD_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += message.size
    if batch:
        yield batch


class SnsPublisher:
    """Publishes to one topic. On a FIFO topic batches go one after another, to keep their order;
    on a standard topic they go in parallel, since SNS promises no order there anyway."""

    def __init__(
        self,
        client: SNSClient,
        topic_arn: str,
        *,
        attempts: int = 5,
        base_delay: float = 0.2,
        parallel_batches: int = 10,
        sleep: Callable[[float], None] = time.sleep,
        offloader: PayloadOffloader | None = None,
    ) -> None:
        self.client = client
        self.offloader = offloader
        self.topic_arn = topic_arn
        self.fifo = topic_arn.endswith(".fifo")
        self.attempts = attempts
        self.base_delay = base_delay
        self.parallel_batches = 1 if self.fifo else parallel_batches
        self.sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=self.parallel_batches) if self.parallel_batches > 1 else None
        events = getattr(getattr(client, "meta", None), "events", None)
        if events is not None:  # a stand-in without botocore's events (a test's) is called as it is
            sns_form.register(events)

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        messages = sns_messages(feed, events)
        if self.offloader is not None:
            # Before the first PublishBatch: a page whose large event cannot be stored publishes nothing.
            messages = self.offloader.fit(messages)
        self.publish_messages(messages)

    def publish_messages(self, messages: Sequence[SnsMessage]) -> None:
        chunks = list(batches(messages))
        if self._pool is None or len(chunks) == 1:
            for chunk in chunks:
                self._publish_batch(chunk)
            return
        # Every batch runs to its end before the first failure is raised: the page is republished
        # as a whole anyway, and an abandoned thread must not outlive the invocation.
        futures = [self._pool.submit(self._publish_batch, chunk) for chunk in chunks]
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error

    def _entry(self, key: str, message: SnsMessage) -> PublishBatchRequestEntryTypeDef:
        entry: PublishBatchRequestEntryTypeDef = {
            "Id": key,
            "Message": message.body,
            "MessageAttributes": message.sns_attributes,
        }
        if self.fifo:
            entry["MessageGroupId"] = message.group_id
            entry["MessageDeduplicationId"] = message.deduplication_id
        return entry

    def _publish_batch(self, batch: list[SnsMessage]) -> None:
        pending = {str(index): message for index, message in enumerate(batch)}
        # Made once: a retry sends the entries still pending as they were.
        entries = {key: self._entry(key, message) for key, message in pending.items()}
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.publish_batch(
                    TopicArn=self.topic_arn, PublishBatchRequestEntries=[entries[key] for key in pending]
                )
            except (BotoCoreError, ClientError) as error:
                # boto3 has already retried throttling and transient errors; the port promises a PublishError.
                raise PublishError(
                    f"PublishBatch of {len(pending)} messages failed (first: event "
                    f"{next(iter(pending.values())).event_id}): {error}"
                ) from error
            for accepted in response.get("Successful", []):
                pending.pop(accepted["Id"], None)
            failed = response.get("Failed", [])
            if not pending:
                return
            rejected = [entry for entry in failed if entry.get("SenderFault")]
            if rejected:
                first = rejected[0]
                raise PublishError(
                    f"SNS rejected event {pending[first['Id']].event_id}: {first.get('Code')}: "
                    f"{first.get('Message')} ({len(rejected)} of {len(batch)} in the batch)"
                )
            metrics.add_metric(name="PublishRetries", unit=MetricUnit.Count, value=len(pending))
            logger.warning(
                "SNS failed some entries; retrying them",
                extra={
                    "attempt": attempt,
                    "failed": len(pending),
                    "codes": sorted({str(entry.get("Code")) for entry in failed}),
                },
            )
            if attempt < self.attempts:
                self.sleep(random.uniform(0, self.base_delay * 2**attempt))
        raise PublishError(
            f"SNS did not accept {len(pending)} of {len(batch)} messages after {self.attempts} attempts "
            f"(first: event {next(iter(pending.values())).event_id})"
        )
