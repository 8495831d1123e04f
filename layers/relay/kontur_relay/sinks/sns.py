"""The SNS sink: PublishBatch to one topic, 10 messages and 256 KiB a call; subscribers filter on
the message attributes. A FIFO topic (a name ending ``.fifo``) orders each group and drops a
republished event within its 5-minute window."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kontur_relay.aws.config import AWS_CONFIG
from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.observability import run_trace
from kontur_relay.settings import Env
from kontur_relay.sinks import sns_form
from kontur_relay.sinks.delivery import Delivery, Limits, Refused, refused_by_id
from kontur_relay.sinks.message import Message, messages
from kontur_relay.sinks.offload import PayloadOffloader, offloader

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_sns.type_defs import PublishBatchRequestEntryTypeDef

#: SNS limits: entries per PublishBatch, and bytes of one message and of a whole batch.
MAX_BATCH_ENTRIES = 10
MAX_PAYLOAD_BYTES = 262_144


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
        self.delivery = Delivery(
            "SNS",
            self._send,
            Limits(MAX_BATCH_ENTRIES, MAX_PAYLOAD_BYTES),
            ordered=self.fifo,
            parallel=parallel_batches,
            attempts=attempts,
            base_delay=base_delay,
            sleep=sleep,
        )
        events = getattr(getattr(client, "meta", None), "events", None)
        if events is not None:  # a stand-in without botocore's events (a test's) is called as it is
            sns_form.register(events)

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        trace = run_trace()
        batch = messages(feed, events, trace.traceparent if trace else None)
        if self.offloader is not None:
            # Before the first PublishBatch: a page whose large event cannot be stored publishes nothing.
            batch = self.offloader.fit(batch, MAX_PAYLOAD_BYTES, "SNS")
        self.publish_messages(batch)

    def publish_messages(self, batch: Sequence[Message]) -> None:
        self.delivery.deliver(batch)

    def _entry(self, key: str, message: Message) -> PublishBatchRequestEntryTypeDef:
        entry: PublishBatchRequestEntryTypeDef = {
            "Id": key,
            "Message": message.body,
            "MessageAttributes": message.message_attributes,
        }
        if self.fifo:
            entry["MessageGroupId"] = message.group_id
            entry["MessageDeduplicationId"] = message.deduplication_id
        return entry

    def _send(self, batch: list[Message]) -> list[Refused]:
        try:
            response = self.client.publish_batch(
                TopicArn=self.topic_arn,
                PublishBatchRequestEntries=[self._entry(str(index), message) for index, message in enumerate(batch)],
            )
        except (BotoCoreError, ClientError) as error:
            # boto3 has already retried throttling and transient errors; the port promises a PublishError.
            raise PublishError(
                f"PublishBatch of {len(batch)} messages failed (first: event {batch[0].event_id}): {error}"
            ) from error
        return refused_by_id(batch, response)


def from_env(env: Env) -> SnsPublisher:
    """The topic EVENTS_TOPIC_ARN names, offloading to PAYLOAD_BUCKET."""
    # Every PublishBatch is built here from messages already checked against SNS's rules, and SNS
    # checks them again: botocore's own validation (about 15% of the publish path's CPU in a profile)
    # would check them a third time.
    sns = boto3.client("sns", config=AWS_CONFIG.merge(Config(parameter_validation=False)))
    return SnsPublisher(sns, env.text("EVENTS_TOPIC_ARN"), offloader=offloader(env))
