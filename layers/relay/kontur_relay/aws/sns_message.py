"""An event as one SNS message: SNS's own rules for the envelope and its attributes.

SNS carries at most 10 message attributes, counts the body and every attribute's name, type and
value against 256 KiB, refuses characters outside XML's (lone surrogates, U+FFFE, U+FFFF; control
characters in attributes), and on a FIFO topic needs a group and a deduplication id. All of it
lives here, not in the envelope.
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

#: SNS carries at most 10 message attributes; ``source`` and ``feed`` take two of them, and one is
#: kept free for ``ExtendedPayloadSize``, so that any event can be offloaded (``aws/offload.py``).
MAX_ATTRIBUTES = 10
MAX_OWN_ATTRIBUTES = MAX_ATTRIBUTES - 1
#: The reserved attribute of the payload-offloading convention: the offloaded body's size in bytes.
PAYLOAD_SIZE_ATTRIBUTE = "ExtendedPayloadSize"
#: The first element of the convention's pointer body; extended client libraries look for it.
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"

#: What an attribute value loses: besides those, control characters, which SNS refuses in attributes
#: (and which no filter policy would match on).
_NOT_AN_ATTRIBUTE = re.compile("[\x00-\x1f\ud800-\udfff\ufffe\uffff]")


def attribute_data_type(value: AttributeValue) -> str:
    return "String" if isinstance(value, str) else "String.Array"


def attribute_text(value: AttributeValue) -> str:
    """The attribute's value as SNS receives it: a string, or a string array as a JSON array."""
    return value if isinstance(value, str) else json.dumps(list(value), ensure_ascii=False)


@dataclass(frozen=True)
class SnsMessage:
    """One SNS message, independent of boto3."""

    event_id: str
    body: str
    attributes: Mapping[str, AttributeValue]
    #: FIFO topics only: the ordering group.
    group_id: str
    #: The feed, for the deduplication id.
    feed_id: str
    #: Set on a pointer to an offloaded body: that body's size in bytes (``ExtendedPayloadSize``).
    payload_size: int | None = None

    @cached_property
    def deduplication_id(self) -> str:
        """FIFO topics (and offloaded payloads' keys) only: a hash, so made only when asked for."""
        return deduplication_id(self.feed_id, self.event_id)

    @cached_property  # batching asks several times per message; the body is up to 256 KiB
    def size(self) -> int:
        """Bytes SNS counts against its 256 KiB limit: the body plus each attribute's name, data type
        and value (SNS's MessageAttributeValue: "all parts ... are included in the size restriction"),
        counted from the very attributes that are sent, so a batch is exactly as large as measured."""
        total = len(self.body) if self.body.isascii() else len(self.body.encode())
        for name, value in self.sns_attributes.items():
            text = value["StringValue"]
            total += len(name.encode()) + len(value["DataType"]) + (len(text) if text.isascii() else len(text.encode()))
        return total

    @cached_property
    def sns_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        # Made once per message: batching, every retry of a batch and ``size`` read the same dicts.
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            name: {"DataType": attribute_data_type(value), "StringValue": attribute_text(value)}
            for name, value in self.attributes.items()
        }
        if self.payload_size is not None:
            attributes[PAYLOAD_SIZE_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(self.payload_size)}
        return attributes


def pointer(message: SnsMessage, bucket: str, key: str) -> SnsMessage:
    """``message`` as the payload-offloading convention publishes it once its body is in S3: a pointer
    body and ``ExtendedPayloadSize``, with the filter attributes and FIFO ids unchanged, so that
    subscriptions match it and FIFO orders and deduplicates it as the message itself."""
    body = json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}], separators=(",", ":"))
    return replace(message, body=body, payload_size=len(message.body.encode()))


def deduplication_id(feed: str, event_id: str) -> str:
    """Stable per (feed, event): SNS FIFO drops a republished event within its 5-minute window."""
    return hashlib.sha256(f"{feed}\n{event_id}".encode()).hexdigest()


def sns_message(feed: Feed, event: FeedEvent) -> SnsMessage:
    """``event`` of ``feed`` as SNS will carry it."""
    attributes = cleaned(filter_attributes(feed, event))
    if len(attributes) > MAX_OWN_ATTRIBUTES:
        raise ValueError(
            f"{len(attributes)} message attributes for event {event.id}: SNS allows {MAX_ATTRIBUTES}, "
            f"one of them kept for {PAYLOAD_SIZE_ATTRIBUTE}"
        )
    envelope = cloud_event(feed, event)
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    if not _sendable(body):
        # Escaped, the same JSON value travels in ASCII; unescaped, SNS would refuse the page for ever.
        body = json.dumps(envelope, separators=(",", ":"))
    return SnsMessage(
        event_id=event.id,
        body=body,
        attributes=attributes,
        group_id=event.ordering_key or feed.id,
        feed_id=feed.id,
    )


def _sendable(body: str) -> bool:
    """Whether SNS takes ``body`` as it is: UTF-8 text (no lone surrogates, which cannot be encoded)
    without U+FFFE and U+FFFF, which SNS and SQS refuse. Checked in C: a regular expression over
    every character of a 2 KB body was a tenth of the publish path's CPU."""
    if body.isascii():
        return True
    if "\ufffe" in body or "\uffff" in body:
        return False
    try:
        body.encode()
    except UnicodeEncodeError:
        return False
    return True


def cleaned(attributes: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """``attributes`` without the characters SNS refuses in them, so that one odd field of an event
    never holds its feed up: SNS would refuse the page on every run. What is left empty is left out,
    as an empty value is. The body keeps the field as it came."""
    kept: dict[str, AttributeValue] = {}
    for name, value in attributes.items():
        if isinstance(value, str):
            # Printable text holds none of them: the usual case, without a regular expression.
            text = value if value.isprintable() else _NOT_AN_ATTRIBUTE.sub("", value)
            if text:
                kept[name] = text
            continue
        items = sorted({text for text in (_NOT_AN_ATTRIBUTE.sub("", item) for item in value) if text})
        if items:
            kept[name] = items
    return kept


def sns_messages(feed: Feed, events: Sequence[FeedEvent]) -> list[SnsMessage]:
    return [sns_message(feed, event) for event in events]
