"""Consumes the relay's events from SQS: each message is processed once however often it arrives,
and a message that fails is retried alone, not with its whole batch. An event too large for SNS
arrives as a pointer to the relay's payload bucket (the payload-offloading convention) and is read
from there: from that one bucket only, so that a pointer elsewhere is never followed. Each event's
log lines name the relay's run that published it (``relayed_by``, the CloudEvents ``traceparent``)."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)
# The relay's promise: (source, id) names an event; the same pair again is a duplicate.
config = IdempotencyConfig(event_key_jmespath="[source, id]", expires_after_seconds=24 * 3600)
persistence = DynamoDBPersistenceLayer(table_name=os.environ["IDEMPOTENCY_TABLE"])
#: The relay's payload bucket (its PayloadBucketName output): the only one pointers may name.
PAYLOAD_BUCKET = os.environ["PAYLOAD_BUCKET"]
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
s3 = boto3.client("s3")


def process(event: dict[str, Any]) -> None:
    """Your business: here, a log line per event."""
    logger.info("event", extra={"type": event["type"], "subject": event.get("subject"), "event_id": event["id"]})


@idempotent_function(data_keyword_argument="event", config=config, persistence_store=persistence)
def handle_once(event: dict[str, Any]) -> dict[str, str]:
    process(event)
    return {"source": event["source"], "id": event["id"]}


def envelope(body: str) -> dict[str, Any]:
    """The CloudEvents envelope a message carries: its body, or the object its pointer names."""
    value = json.loads(body)
    if not (isinstance(value, list) and len(value) == 2 and value[0] == POINTER_CLASS):
        return dict(value)
    bucket, key = value[1].get("s3BucketName"), value[1].get("s3Key")
    if bucket != PAYLOAD_BUCKET:
        # Only the relay writes there; a pointer to another bucket did not come from it.
        raise ValueError(f"a pointer to bucket {bucket!r}, not the relay's payload bucket")
    return dict(json.loads(s3.get_object(Bucket=PAYLOAD_BUCKET, Key=key)["Body"].read()))


def record_handler(record: SQSRecord) -> dict[str, str]:
    # Raw message delivery: the body is the CloudEvents envelope the relay published, or a pointer to it.
    event = envelope(record.body)
    # CloudEvents' distributed tracing extension: the W3C trace context of the relay's run that read
    # and published the event. With X-Ray on in the relay its trace id is that run's X-Ray trace, so
    # a search for it leads from here to the poll; an OpenTelemetry consumer would add it as a span link.
    logger.append_keys(relayed_by=event.get("traceparent"))
    try:
        result: dict[str, str] = handle_once(event=event)
    finally:
        logger.remove_keys(["relayed_by"])
    return result


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
