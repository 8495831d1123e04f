"""The events topic, bus and queue and the payload bucket, as their resource policies decide, the
template evaluated with ARNs of its own making: only the pollers publish, only named consumers read
offloaded events, and none takes a request without TLS."""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.constants import ACCOUNT
from local_stack.template import Stack
from tests.template.iam import decide
from tests.template.test_rights import symbolic

POLLERS = [f"arn:aws:iam::{ACCOUNT}:role/{name}Role" for name in ("ExternPollerFunction", "DiadocPollerFunction")]
CONSUMER = f"arn:aws:iam::{ACCOUNT}:role/tax-demands-consumer"
OTHER = f"arn:aws:iam::{ACCOUNT}:role/anyone-with-broad-rights"
TLS = {"aws:SecureTransport": ["true"]}
CLEAR = {"aws:SecureTransport": ["false"]}


def _policy(stack: Stack, logical_id: str) -> list[dict[str, Any]]:
    document = stack.resolve(stack.doc["Resources"][logical_id]["Properties"]["PolicyDocument"])
    return list(document["Statement"])


def _context(principal: str, transport: dict[str, list[str]]) -> dict[str, list[str]]:
    return {"aws:PrincipalArn": [principal], **transport}


def test_only_the_pollers_publish_to_the_topic_and_only_over_tls():
    stack = symbolic()
    topic = stack.physical["EventsTopic"]
    statements = _policy(stack, "EventsTopicPolicy")
    assert stack.resolve(stack.doc["Resources"]["EventsTopicPolicy"]["Properties"]["Topics"]) == [topic]

    for poller in POLLERS:
        assert decide(statements, "sns:Publish", topic, _context(poller, TLS), poller) == "allowed"
        assert decide(statements, "sns:Publish", topic, _context(poller, CLEAR), poller) == "denied"
    for other in (OTHER, CONSUMER):
        assert decide(statements, "sns:Publish", topic, _context(other, TLS), other) == "denied", other
    # A service (no principal ARN) publishing forged events is refused too.
    assert decide(statements, "sns:Publish", topic, TLS) == "denied"
    # Subscribing is the account's own IAM's to decide, over TLS only.
    assert decide(statements, "sns:Subscribe", topic, _context(CONSUMER, TLS), CONSUMER) == "silent"
    assert decide(statements, "sns:Subscribe", topic, _context(CONSUMER, CLEAR), CONSUMER) == "denied"


def test_only_the_named_consumers_read_offloaded_events_and_only_over_tls():
    stack = symbolic()
    stack.parameters["ConsumerRoleArns"] = CONSUMER
    bucket = stack.attributes[("PayloadBucket", "Arn")]
    payload = f"{bucket}/payloads/0123abcd"
    statements = _policy(stack, "PayloadBucketPolicy")

    assert decide(statements, "s3:GetObject", payload, _context(CONSUMER, TLS), CONSUMER) == "allowed"
    assert decide(statements, "s3:GetObject", payload, _context(CONSUMER, CLEAR), CONSUMER) == "denied"
    assert decide(statements, "s3:GetObject", payload, _context(OTHER, TLS), OTHER) == "denied"
    # The pollers still write there, over TLS only.
    assert decide(statements, "s3:PutObject", payload, _context(POLLERS[0], TLS), POLLERS[0]) == "silent"
    assert decide(statements, "s3:PutObject", payload, _context(POLLERS[0], CLEAR), POLLERS[0]) == "denied"


def test_without_consumer_roles_nobody_outside_the_stack_reads_offloaded_events():
    stack = symbolic()
    assert stack.parameters["ConsumerRoleArns"] == ""
    payload = f"{stack.attributes[('PayloadBucket', 'Arn')]}/payloads/0123abcd"
    statements = _policy(stack, "PayloadBucketPolicy")

    assert not [s for s in statements if s["Effect"] == "Allow"], "no reader is named"
    for reader in (CONSUMER, OTHER):
        assert decide(statements, "s3:GetObject", payload, _context(reader, TLS), reader) == "denied"
    assert decide(statements, "s3:GetObject", payload, _context(POLLERS[1], TLS), POLLERS[1]) == "silent"


def test_several_consumer_roles_are_each_a_reader():
    stack = symbolic()
    second = f"{CONSUMER}-2"
    stack.parameters["ConsumerRoleArns"] = f"{CONSUMER},{second}"
    payload = f"{stack.attributes[('PayloadBucket', 'Arn')]}/payloads/0123abcd"
    statements = _policy(stack, "PayloadBucketPolicy")
    for reader in (CONSUMER, second):
        assert decide(statements, "s3:GetObject", payload, _context(reader, TLS), reader) == "allowed"


def test_only_the_pollers_put_events_on_the_stack_s_bus_and_only_over_tls():
    stack = symbolic({"Sink": "eventbridge"})
    bus = stack.attributes[("EventBus", "Arn")]
    statements = list(stack.resolve(stack.doc["Resources"]["EventBus"]["Properties"]["Policy"])["Statement"])

    for poller in POLLERS:
        assert decide(statements, "events:PutEvents", bus, _context(poller, TLS), poller) == "allowed"
        assert decide(statements, "events:PutEvents", bus, _context(poller, CLEAR), poller) == "denied"
    for other in (OTHER, CONSUMER):
        assert decide(statements, "events:PutEvents", bus, _context(other, TLS), other) == "denied", other
    assert decide(statements, "events:PutEvents", bus, TLS) == "denied"
    # Rules and targets are the account's own IAM's to decide.
    assert decide(statements, "events:PutRule", bus, _context(CONSUMER, TLS), CONSUMER) == "silent"


def test_only_the_pollers_send_to_the_stack_s_queue_and_nobody_reads_it_without_tls():
    stack = symbolic({"Sink": "sqs"})
    queue = stack.attributes[("EventsQueue", "Arn")]
    statements = _policy(stack, "EventsQueuePolicy")
    assert stack.resolve(stack.doc["Resources"]["EventsQueuePolicy"]["Properties"]["Queues"]) == [
        stack.physical["EventsQueue"]
    ]

    for poller in POLLERS:
        assert decide(statements, "sqs:SendMessage", queue, _context(poller, TLS), poller) == "allowed"
        assert decide(statements, "sqs:SendMessage", queue, _context(poller, CLEAR), poller) == "denied"
    for other in (OTHER, CONSUMER):
        assert decide(statements, "sqs:SendMessage", queue, _context(other, TLS), other) == "denied", other
    assert decide(statements, "sqs:ReceiveMessage", queue, _context(CONSUMER, TLS), CONSUMER) == "silent"
    assert decide(statements, "sqs:ReceiveMessage", queue, _context(CONSUMER, CLEAR), CONSUMER) == "denied"


#: What each sink brings into a deployment.
SINK_RESOURCES = {
    "sns": {"EventsTopic", "EventsTopicPolicy"},
    "eventbridge": {"EventBus"},
    "sqs": {"EventsQueue", "EventsQueuePolicy"},
    "webhook": {"WebhookSecret"},
}


@pytest.mark.parametrize("sink", SINK_RESOURCES)
def test_a_deployment_has_its_own_sink_s_resources_and_no_other_s(sink: str):
    stack = symbolic({"Sink": sink, "WebhookUrl": "https://erp.example/kontur"})
    kinds = {resource["Type"] for resource in stack.doc["Resources"].values()}
    present = {logical_id for kind in kinds for logical_id, _ in stack.resources(kind)}

    assert present & set().union(*SINK_RESOURCES.values()) == SINK_RESOURCES[sink]
