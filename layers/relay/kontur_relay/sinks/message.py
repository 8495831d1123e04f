"""An event as a sink carries it: the CloudEvents body, the attributes subscribers filter on, and
the ids that keep a FIFO queue or topic in order and free of a republished page's duplicates.

SNS and SQS carry the attributes as message attributes, with the same rules: at most 10, each
counted (name, data type, value) with the body against the message's size, characters outside
XML's refused (lone surrogates, U+FFFE, U+FFFF; control characters in attributes). EventBridge and
the webhook carry the same attributes and body in their own shapes (``eventbridge.detail``,
``webhook``). All of it lives here, not in the envelope.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING

from kontur_relay.domain.envelope import cloud_event, filter_attributes
from kontur_relay.domain.model import AttributeValue, Feed, FeedEvent

if TYPE_CHECKING:
    from mypy_boto3_sns.type_defs import MessageAttributeValueTypeDef

#: SNS and SQS carry at most 10 message attributes; ``source`` and ``feed`` take two of them, and one
#: is kept free for ``ExtendedPayloadSize``, so that any event can be offloaded (``offload.py``).
MAX_ATTRIBUTES = 10
MAX_OWN_ATTRIBUTES = MAX_ATTRIBUTES - 1
#: The reserved attribute of the payload-offloading convention: the offloaded body's size in bytes.
PAYLOAD_SIZE_ATTRIBUTE = "ExtendedPayloadSize"
#: The first element of the convention's pointer body; extended client libraries look for it.
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
#: The W3C trace context of the run that relayed the event, also as an attribute where one is left
#: (OpenTelemetry's SQS and SNS instrumentations read it there); the envelope always has it.
TRACEPARENT = "traceparent"

#: What an attribute value loses: what no message may hold (``fits_a_message``), and control characters,
#: which SNS refuses in attributes (and which no filter policy would match on).
_NOT_AN_ATTRIBUTE = re.compile("[\x00-\x1f\ud800-\udfff\ufffe\uffff]")


def attribute_data_type(value: AttributeValue) -> str:
    return "String" if isinstance(value, str) else "String.Array"


def attribute_text(value: AttributeValue) -> str:
    """The attribute's value as SNS receives it: a string, or a string array as a JSON array."""
    return value if isinstance(value, str) else json.dumps(list(value), ensure_ascii=False)


@dataclass(frozen=True)
class Message:
    """One event as a sink sends it, independent of boto3."""

    event_id: str
    #: The CloudEvent as JSON, or (offloaded) the pointer to it.
    body: str
    attributes: Mapping[str, AttributeValue]
    #: FIFO queues and topics only: the ordering group.
    group_id: str
    #: The feed, for the deduplication id.
    feed_id: str
    #: Set on a pointer to an offloaded body: that body's size in bytes (``ExtendedPayloadSize``).
    payload_size: int | None = None

    @cached_property
    def deduplication_id(self) -> str:
        """FIFO sinks (and offloaded payloads' keys) only: a hash, so made only when asked for."""
        return deduplication_id(self.feed_id, self.event_id)

    @cached_property  # batching asks several times per message; the body is up to 256 KiB
    def size(self) -> int:
        """Bytes SNS and SQS count against their limit: the body plus each attribute's name, data
        type and value ("all parts ... are included in the size restriction"), counted from the very
        attributes that are sent, so that a batch is exactly as large as measured."""
        total = utf8_length(self.body)
        for name, value in self.message_attributes.items():
            total += len(name.encode()) + len(value["DataType"]) + utf8_length(value["StringValue"])
        return total

    @cached_property
    def message_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        """The attributes as SNS's and SQS's APIs take them. Made once per message: batching, every
        retry of a batch and ``size`` read the same dicts."""
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            name: {"DataType": attribute_data_type(value), "StringValue": attribute_text(value)}
            for name, value in self.attributes.items()
        }
        if self.payload_size is not None:
            attributes[PAYLOAD_SIZE_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(self.payload_size)}
        return attributes

    def pointing_to(self, bucket: str, key: str) -> Message:
        """This message as the payload-offloading convention publishes it once its body is in S3: a
        pointer body and ``ExtendedPayloadSize``, with the attributes and FIFO ids unchanged, so that
        subscriptions match it and FIFO orders and deduplicates it as the message itself."""
        body = json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}], separators=(",", ":"))
        return replace(self, body=body, payload_size=utf8_length(self.body))


def fits_a_message(text: str) -> bool:
    """Whether an SNS or SQS message may hold ``text`` as it is. A JSON string may hold what they
    refuse: lone surrogates, which UTF-8 cannot encode, and U+FFFE/U+FFFF. Looked for by encoding
    and by ``in``, passes in C; a regex's character class took a third of building a message."""
    if text.isascii():
        return True
    if "\ufffe" in text or "\uffff" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def deduplication_id(feed: str, event_id: str) -> str:
    """Stable per (feed, event): a FIFO sink drops a republished event within its 5-minute window."""
    return hashlib.sha256(f"{feed}\n{event_id}".encode()).hexdigest()


def message(feed: Feed, event: FeedEvent, traceparent: str | None = None) -> Message:
    """``event`` of ``feed`` as a sink will carry it; ``traceparent``: the run's trace context."""
    attributes = cleaned(filter_attributes(feed, event))
    if len(attributes) > MAX_OWN_ATTRIBUTES:
        raise ValueError(
            f"{len(attributes)} message attributes for event {event.id}: SNS and SQS allow {MAX_ATTRIBUTES}, "
            f"one of them kept for {PAYLOAD_SIZE_ATTRIBUTE}"
        )
    if traceparent is not None and len(attributes) < MAX_OWN_ATTRIBUTES:
        attributes[TRACEPARENT] = traceparent
    envelope = cloud_event(feed, event, traceparent=traceparent)
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    if not fits_a_message(body):
        # Escaped, the same JSON value travels in ASCII; unescaped, a sink would refuse the page for ever.
        body = json.dumps(envelope, separators=(",", ":"))
    return Message(
        event_id=event.id,
        body=body,
        attributes=attributes,
        group_id=event.ordering_key or feed.id,
        feed_id=feed.id,
    )


def cleaned(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """``attributes`` without the characters SNS refuses in them, so that one odd field of an event
    never holds its feed up: SNS would refuse the page on every run. What is left empty is left out,
    as an empty value is. The body keeps the field as it came."""
    kept: dict[str, AttributeValue] = {}
    for name, value in attributes.items():
        if isinstance(value, str):
            text = _NOT_AN_ATTRIBUTE.sub("", value)
            if text:
                kept[name] = text
            continue
        items = sorted({text for text in (_NOT_AN_ATTRIBUTE.sub("", item) for item in value) if text})
        if items:
            kept[name] = items
    return kept


def messages(feed: Feed, events: Sequence[FeedEvent], traceparent: str | None = None) -> list[Message]:
    return [message(feed, event, traceparent) for event in events]
