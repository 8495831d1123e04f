"""The SQS sink: SendMessageBatch to one queue, 10 messages a call, each message and the whole call
within the queue's MaximumMessageSize (read from the queue once; 256 KiB on an SQS-compatible
service, such as Yandex Message Queue, reached through its endpoint URL with keys of its own).

The message is the SNS sink's: the CloudEvent as the body, the filter fields as message attributes
(SQS allows 10, one kept for ``ExtendedPayloadSize``), and on a FIFO queue (a URL ending ``.fifo``)
the FIFO topic's group and deduplication ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kontur_relay.aws.config import AWS_CONFIG
from kontur_relay.domain.errors import ConfigurationError, PublishError
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.observability import run_trace
from kontur_relay.settings import Env
from kontur_relay.sinks.delivery import Delivery, Limits, Refused, refused_by_id
from kontur_relay.sinks.message import Message, messages
from kontur_relay.sinks.offload import PayloadOffloader, offloader

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

MAX_BATCH_ENTRIES = 10
#: What SQS-compatible services accept (and SQS did for years): a message, and a whole call.
COMPATIBLE_MAX_BYTES = 262_144


class SqsPublisher:
    """Sends to one queue: in parallel calls to a standard queue, one call after another to a FIFO
    queue. ``max_bytes``: the queue's limit (None: read from its MaximumMessageSize before the first
    call)."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        max_bytes: int | None = None,
        offloader: PayloadOffloader | None = None,
        attempts: int = 5,
        base_delay: float = 0.2,
        parallel_batches: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.queue_url = queue_url
        self.fifo = queue_url.endswith(".fifo")
        self.offloader = offloader
        self.max_bytes = max_bytes
        self.delivery = Delivery(
            "SQS",
            self._send,
            Limits(MAX_BATCH_ENTRIES, max_bytes or COMPATIBLE_MAX_BYTES),
            ordered=self.fifo,
            parallel=parallel_batches,
            attempts=attempts,
            base_delay=base_delay,
            sleep=sleep,
        )

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        if self.max_bytes is None:
            # Once a container, on its first page (two boxes' pages at once both read it: no harm).
            self.max_bytes = self._queue_limit()
            self.delivery.limits = Limits(MAX_BATCH_ENTRIES, self.max_bytes)
        trace = run_trace()
        batch = messages(feed, events, trace.traceparent if trace else None)
        if self.offloader is not None:
            batch = self.offloader.fit(batch, self.max_bytes, "SQS")
        self.delivery.deliver(batch)

    def _queue_limit(self) -> int:
        try:
            answer = self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["MaximumMessageSize"])
        except (BotoCoreError, ClientError) as error:
            raise PublishError(f"could not read the MaximumMessageSize of queue {self.queue_url}: {error}") from error
        return int(answer["Attributes"]["MaximumMessageSize"])

    def _entry(self, key: str, message: Message) -> SendMessageBatchRequestEntryTypeDef:
        entry: SendMessageBatchRequestEntryTypeDef = {
            "Id": key,
            "MessageBody": message.body,
            "MessageAttributes": message.message_attributes,  # type: ignore[typeddict-item]
        }
        if self.fifo:
            entry["MessageGroupId"] = message.group_id
            entry["MessageDeduplicationId"] = message.deduplication_id
        return entry

    def _send(self, batch: list[Message]) -> list[Refused]:
        try:
            response = self.client.send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[self._entry(str(index), message) for index, message in enumerate(batch)],
            )
        except (BotoCoreError, ClientError) as error:
            raise PublishError(
                f"SendMessageBatch of {len(batch)} messages failed (first: event {batch[0].event_id}): {error}"
            ) from error
        return refused_by_id(batch, response)


def from_env(env: Env) -> SqsPublisher:
    """The queue EVENTS_QUEUE_URL names: in SQS with the function's role, or, with
    EVENTS_QUEUE_ENDPOINT_URL, at an SQS-compatible service with the keys the secret
    EVENTS_QUEUE_CREDENTIALS_SECRET holds (``{"aws_access_key_id", "aws_secret_access_key",
    "region_name"}``)."""
    url = env.text("EVENTS_QUEUE_URL")
    endpoint = env.variables.get("EVENTS_QUEUE_ENDPOINT_URL")
    config = AWS_CONFIG.merge(Config(parameter_validation=False))
    if not endpoint:
        return SqsPublisher(boto3.client("sqs", config=config), url, offloader=offloader(env))
    keys = _keys(env.text("EVENTS_QUEUE_CREDENTIALS_SECRET"))
    # A session of its own: these keys are the other service's, never the function's AWS credentials.
    session = boto3.session.Session(
        aws_access_key_id=keys["aws_access_key_id"],
        aws_secret_access_key=keys["aws_secret_access_key"],
        region_name=keys.get("region_name") or env.text("AWS_REGION", "us-east-1"),
    )
    client = session.client("sqs", endpoint_url=endpoint, config=config)
    return SqsPublisher(client, url, max_bytes=COMPATIBLE_MAX_BYTES, offloader=offloader(env))


def _keys(secret_id: str) -> dict[str, str]:
    secrets = boto3.client("secretsmanager", config=AWS_CONFIG)
    try:
        keys = json.loads(secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    except ValueError as error:
        raise ConfigurationError(f"the queue's credentials secret {secret_id} is not a JSON object") from error
    missing = {"aws_access_key_id", "aws_secret_access_key"} - set(keys if isinstance(keys, dict) else {})
    if missing:
        raise ConfigurationError(f"the queue's credentials secret {secret_id} lacks {', '.join(sorted(missing))}")
    return dict(keys)
