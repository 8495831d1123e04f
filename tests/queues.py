"""A queue subscribed to the events topic, read as a user's consumer would: shared by the end-to-end tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import boto3
import fastjsonschema

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.sinks.message import POINTER_CLASS
from local_stack.template import ROOT, Stack

validate_message = fastjsonschema.compile(json.loads((ROOT / "schemas" / "message.schema.json").read_text()))


def subscribe(aws: dict[str, Any], topic_arn: str, *, filter_policy: dict[str, Any] | None = None) -> str:
    """A queue subscribed to the topic with raw delivery: its bodies are the messages as published."""
    fifo = topic_arn.endswith(".fifo")
    name = f"sub-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    url = aws["sqs"].create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"RawMessageDelivery": "true"}
    if filter_policy:
        attributes["FilterPolicy"] = json.dumps(filter_policy)
    aws["sns"].subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return str(url)


def receive(aws: dict[str, Any], url: str) -> list[dict[str, Any]]:
    """Every message in the queue, each validated against the message schema, deleted as read
    (a FIFO group releases its next message only then)."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = (
            aws["sqs"]
            .receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            .get("Messages", [])
        )
        if not batch:
            return messages
        for message in batch:
            resolve(aws, message)
            validate_message(json.loads(message["Body"]))
        messages += batch
        aws["sqs"].delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )


def resolve(aws: dict[str, Any], message: dict[str, Any]) -> None:
    """A pointer to an offloaded payload replaced by the payload, as a consumer resolves it with plain
    boto3 (the README's snippet); the pointer is kept as ``Pointer``."""
    body = json.loads(message["Body"])
    if not (isinstance(body, list) and body and body[0] == POINTER_CLASS):
        return
    size = message.get("MessageAttributes", {}).get("ExtendedPayloadSize", {})
    assert size.get("DataType") == "Number", "the convention's reserved attribute marks every pointer"
    where = body[1]
    payload = aws["s3"].get_object(Bucket=where["s3BucketName"], Key=where["s3Key"])["Body"].read()
    assert len(payload) == int(size["StringValue"])
    message["Pointer"], message["Body"] = message["Body"], payload.decode()


def bodies(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in messages]


def cursors(stack: Stack) -> DynamoCursorStore:
    return DynamoCursorStore(boto3.resource("dynamodb").Table(stack.physical["CursorsTable"]))
