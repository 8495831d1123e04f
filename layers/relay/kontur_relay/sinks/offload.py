"""Messages over their sink's limit go to S3 and travel as a pointer (the payload-offloading
convention of AWS's SNS/SQS extended client libraries), whatever the sink.

The body is written to the stack's payload bucket, then a pointer to it is sent in its place
(``Message.pointing_to``): consumers resolve it with the extended client libraries or by reading the
object themselves. The order is what makes a pointer safe: the object exists before any pointer to
it can reach the sink, and a failed write fails the page before anything of it is sent. Each sink
offloads above its own limit (SNS's and EventBridge's 256 KiB, the queue's own, the webhook's).

The key depends only on the feed and the event id, so a page published again (after a crash before
the cursor write) overwrites the same object instead of leaving a second copy; the bucket's
lifecycle rule (``OffloadedPayloadDays``) deletes payloads once consumers have had their time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from kontur_relay.aws.config import AWS_CONFIG
from kontur_relay.domain.errors import PublishError
from kontur_relay.observability import MetricUnit, logger, metrics
from kontur_relay.settings import Env
from kontur_relay.sinks.delivery import size_of
from kontur_relay.sinks.message import Message

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Offloaded payloads live under this prefix, the only one the pollers may write to.
KEY_PREFIX = "payloads/"


def payload_key(message: Message) -> str:
    # The deduplication id is a hash of feed and event id: stable across republishing, and free of
    # the ``:`` and ``@`` of Diadoc feed ids.
    return f"{KEY_PREFIX}{message.deduplication_id}.json"


class PayloadOffloader:
    """Writes bodies too large for a sink to ``bucket`` and hands back the pointers to send."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def fit(
        self,
        messages: Sequence[Message],
        limit: int,
        sink: str,
        measure: Callable[[Message], int] = size_of,
    ) -> list[Message]:
        """``messages`` with every one ``measure`` finds over ``limit`` replaced by a pointer to its
        stored body."""
        return [self._offload(m, limit, sink, measure) if measure(m) > limit else m for m in messages]

    def _offload(self, message: Message, limit: int, sink: str, measure: Callable[[Message], int]) -> Message:
        key = payload_key(message)
        size = measure(message)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=message.body.encode(),
                ContentType="application/cloudevents+json; charset=utf-8",
            )
        except (BotoCoreError, ClientError) as error:
            raise PublishError(
                f"event {message.event_id} is {size} bytes, over {sink}'s {limit}, and writing it "
                f"to s3://{self.bucket}/{key} failed: {error}"
            ) from error
        offloaded = message.pointing_to(self.bucket, key)
        if measure(offloaded) > limit:
            raise PublishError(f"event {message.event_id}: even its pointer is {measure(offloaded)} bytes")
        metrics.add_metric(name="PayloadsOffloaded", unit=MetricUnit.Count, value=1)
        logger.info(
            f"Offloaded an event too large for {sink} to S3",
            extra={"event_id": message.event_id, "bytes": size, "s3_key": key},
        )
        return offloaded


def offloader(env: Env) -> PayloadOffloader | None:
    """The payload bucket's offloader (PAYLOAD_BUCKET); None without one: an event over its sink's
    limit then fails its page, naming the setting."""
    bucket = env.variables.get("PAYLOAD_BUCKET")
    return PayloadOffloader(boto3.client("s3", config=AWS_CONFIG), bucket) if bucket else None
