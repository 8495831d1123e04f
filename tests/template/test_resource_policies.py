"""The events topic and the payload bucket, as their resource policies decide, the template evaluated
with ARNs of its own making: only the pollers publish, only named consumers read offloaded events,
and neither takes a request without TLS."""

from __future__ import annotations

from typing import Any

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
