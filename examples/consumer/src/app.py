"""Consumes the relay's events from SQS: each message is processed once however often it arrives,
and a message that fails is retried alone, not with its whole batch."""

from __future__ import annotations

import json
import os
from typing import Any

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


def process(event: dict[str, Any]) -> None:
    """Your business: here, a log line per event."""
    logger.info("event", extra={"type": event["type"], "subject": event.get("subject"), "event_id": event["id"]})


@idempotent_function(data_keyword_argument="event", config=config, persistence_store=persistence)
def handle_once(event: dict[str, Any]) -> dict[str, str]:
    process(event)
    return {"source": event["source"], "id": event["id"]}


def record_handler(record: SQSRecord) -> dict[str, str]:
    # Raw message delivery: the body is the CloudEvents envelope the relay published.
    result: dict[str, str] = handle_once(event=json.loads(record.body))
    return result


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    config.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
