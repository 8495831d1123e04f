"""Messages over SNS's 256 KiB go to S3 and travel as a pointer (the payload-offloading convention).

The body is written to the stack's payload bucket, then a pointer to it is published in its place
(``sns_message.pointer``): consumers resolve it with AWS's SNS/SQS extended client libraries or by
reading the object themselves. The order is what makes a pointer safe: the object exists before any
pointer to it can reach SNS, and a failed write fails the page before anything of it is published.

The key depends only on the feed and the event id, so a page published again (after a crash before
the cursor write) overwrites the same object instead of leaving a second copy; the bucket's
lifecycle rule (``OffloadedPayloadDays``) deletes payloads once consumers have had their time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from kontur_relay.aws.sns_message import SnsMessage, pointer
from kontur_relay.domain.errors import PublishError
from kontur_relay.observability import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: What SNS accepts in one message, body and attributes together.
MAX_MESSAGE_BYTES = 262_144
#: Offloaded payloads live under this prefix, the only one the pollers may write to.
KEY_PREFIX = "payloads/"


def payload_key(message: SnsMessage) -> str:
    # The deduplication id is a hash of feed and event id: stable across republishing, and free of
    # the ``:`` and ``@`` of Diadoc feed ids.
    return f"{KEY_PREFIX}{message.deduplication_id}.json"


class PayloadOffloader:
    """Writes bodies too large for SNS to ``bucket`` and hands back the pointers to publish."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def fit(self, messages: Sequence[SnsMessage]) -> list[SnsMessage]:
        """``messages`` with every one over SNS's limit replaced by a pointer to its stored body."""
        return [self._offload(m) if m.size > MAX_MESSAGE_BYTES else m for m in messages]

    def _offload(self, message: SnsMessage) -> SnsMessage:
        key = payload_key(message)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=message.body.encode(),
                ContentType="application/cloudevents+json; charset=utf-8",
            )
        except (BotoCoreError, ClientError) as error:
            raise PublishError(
                f"event {message.event_id} is {message.size} bytes, over SNS's {MAX_MESSAGE_BYTES}, and writing it "
                f"to s3://{self.bucket}/{key} failed: {error}"
            ) from error
        offloaded = pointer(message, self.bucket, key)
        if offloaded.size > MAX_MESSAGE_BYTES:
            raise PublishError(f"event {message.event_id}: even its pointer is {offloaded.size} bytes")
        metrics.add_metric(name="PayloadsOffloaded", unit=MetricUnit.Count, value=1)
        logger.info(
            "Offloaded an event too large for SNS to S3",
            extra={"event_id": message.event_id, "bytes": message.size, "s3_key": key},
        )
        return offloaded
