"""An event as one SNS message: SNS's own rules for the envelope and its attributes.

SNS carries at most 10 message attributes, counts the body and every attribute's name, type and
value against 256 KiB, refuses characters outside XML's (lone surrogates, U+FFFE, U+FFFF), and on
a FIFO topic needs a group and a deduplication id. All of it lives here, not in the envelope.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from kontur_relay.domain.envelope import cloud_event, filter_attributes
from kontur_relay.domain.model import AttributeValue, Feed, FeedEvent

if TYPE_CHECKING:
    from mypy_boto3_sns.type_defs import MessageAttributeValueTypeDef

#: SNS carries at most 10 message attributes; ``source`` and ``feed`` take two of them.
MAX_ATTRIBUTES = 10

#: Characters a JSON string may hold but an SNS message may not: lone surrogates cannot be UTF-8
#: encoded at all, and U+FFFE/U+FFFF are outside the characters SNS and SQS accept.
_NOT_SENDABLE = re.compile("[\ud800-\udfff\ufffe\uffff]")


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
    #: FIFO topics only: the ordering group and the deduplication id.
    group_id: str
    deduplication_id: str

    @cached_property  # batching asks several times per message; the body is up to 256 KiB
    def size(self) -> int:
        """Bytes SNS counts against its 256 KiB limit: the body plus each attribute's name, data type
        and value (SNS's MessageAttributeValue: "all parts ... are included in the size restriction")."""
        total = len(self.body.encode())
        for name, value in self.attributes.items():
            total += len(name.encode()) + len(attribute_data_type(value)) + len(attribute_text(value).encode())
        return total

    @cached_property
    def sns_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        # The same type and text ``size`` counted, so a batch is exactly as large as measured.
        return {
            name: {"DataType": attribute_data_type(value), "StringValue": attribute_text(value)}
            for name, value in self.attributes.items()
        }


def deduplication_id(feed: str, event_id: str) -> str:
    """Stable per (feed, event): SNS FIFO drops a republished event within its 5-minute window."""
    return hashlib.sha256(f"{feed}\n{event_id}".encode()).hexdigest()


def sns_message(feed: Feed, event: FeedEvent) -> SnsMessage:
    """``event`` of ``feed`` as SNS will carry it."""
    attributes = filter_attributes(feed, event)
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"{len(attributes)} message attributes for event {event.id}: SNS allows 10")
    envelope = cloud_event(feed, event)
    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    if _NOT_SENDABLE.search(body):
        # Escaped, the same JSON value travels in ASCII; unescaped, SNS would refuse the page for ever.
        body = json.dumps(envelope, separators=(",", ":"))
    return SnsMessage(
        event_id=event.id,
        body=body,
        attributes=attributes,
        group_id=event.ordering_key or feed.id,
        deduplication_id=deduplication_id(feed.id, event.id),
    )


def sns_messages(feed: Feed, events: Sequence[FeedEvent]) -> list[SnsMessage]:
    return [sns_message(feed, event) for event in events]
