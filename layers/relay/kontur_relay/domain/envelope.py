"""The message contract: a CloudEvents 1.0 JSON envelope plus SNS attributes for filter policies.

The JSON Schema of the envelope is ``schemas/message.schema.json``; the README documents both.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from kontur_relay.domain.model import AttributeValue, FeedEvent

#: SNS carries at most 10 message attributes; ``source`` and ``feed`` take two of them.
MAX_ATTRIBUTES = 10

#: CloudEvents ``time`` is RFC 3339; the schema holds the envelope to this pattern.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
#: Characters a JSON string may hold but an SNS message may not: lone surrogates cannot be UTF-8
#: encoded at all, and U+FFFE/U+FFFF are outside the characters SNS and SQS accept.
_NOT_SENDABLE = re.compile("[\ud800-\udfff\ufffe\uffff]")


def attribute_data_type(value: AttributeValue) -> str:
    return "String" if isinstance(value, str) else "String.Array"


def attribute_text(value: AttributeValue) -> str:
    """The attribute's value as SNS receives it: a string, or a string array as a JSON array."""
    return value if isinstance(value, str) else json.dumps(list(value), ensure_ascii=False)


@dataclass(frozen=True)
class OutgoingMessage:
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


def deduplication_id(feed: str, event_id: str) -> str:
    """Stable per (feed, event): SNS FIFO drops a republished event within its 5-minute window."""
    return hashlib.sha256(f"{feed}\n{event_id}".encode()).hexdigest()


def to_message(feed: str, source: str, kind: str, event: FeedEvent) -> OutgoingMessage:
    """Wrap ``event`` of ``feed`` for SNS. ``source`` is the CloudEvents source URI, ``kind`` the
    ``source`` attribute (``extern`` or ``diadoc``)."""
    envelope: dict[str, object] = {
        "specversion": "1.0",
        "id": event.id,
        "source": source,
        "type": event.type,
        "datacontenttype": "application/json",
        "feed": feed,
    }
    if event.time and _RFC3339.fullmatch(event.time):
        # A time in another format stays in ``data`` as the feed sent it; the envelope's must be RFC 3339.
        envelope["time"] = event.time
    if event.subject:
        envelope["subject"] = event.subject
    envelope.update(event.extensions)
    envelope["data"] = event.data

    attributes: dict[str, AttributeValue] = {"source": kind, "feed": feed, "event_type": event.type}
    for name, value in event.attributes.items():
        if value is None or len(value) == 0:
            continue  # SNS rejects empty attribute values, and a filter cannot match on absence of one
        attributes[name] = value if isinstance(value, str) else sorted(set(value))
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"{len(attributes)} message attributes for event {event.id}: SNS allows 10")

    body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))
    if _NOT_SENDABLE.search(body):
        # Escaped, the same JSON value travels in ASCII; unescaped, SNS would refuse the page for ever.
        body = json.dumps(envelope, separators=(",", ":"))
    return OutgoingMessage(
        event_id=event.id,
        body=body,
        attributes=attributes,
        group_id=event.ordering_key or feed,
        deduplication_id=deduplication_id(feed, event.id),
    )
