"""A Diadoc ``BoxEvent`` shaped for publishing: CloudEvents fields, filter attributes, and its bytes."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.domain.model import AttributeValue, FeedEvent
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.ticks import to_rfc3339

MESSAGE_EVENT_TYPE = "ru.kontur.diadoc.message"
PATCH_EVENT_TYPE = "ru.kontur.diadoc.patch"
#: A BoxEvent with neither Message nor Patch: a kind of event newer than this relay. It is still
#: published (its bytes hold everything), rather than stopping the feed at it.
OTHER_EVENT_TYPE = "ru.kontur.diadoc.event"


@dataclass(frozen=True)
class ReadEvent:
    """One event of a page: what gets published, the key it was served under, and its own time
    (ticks: what Diadoc's ``timestampFromTicks`` reads by)."""

    event: FeedEvent
    index_key: str
    ticks: int = 0


def parse_page(body: bytes) -> pb.BoxEventListFrame:
    """The page with each BoxEvent still as the bytes it arrived as (see BoxEventListFrame)."""
    try:
        return pb.BoxEventListFrame.FromString(body)
    except DecodeError as error:
        raise MalformedPage(f"Diadoc answered 200 with a body that is not a BoxEventList: {error}") from error


def parse_event(raw: bytes) -> pb.BoxEvent:
    try:
        return pb.BoxEvent.FromString(raw)
    except DecodeError as error:
        raise MalformedPage(f"a BoxEvent of {len(raw)} bytes does not parse: {error}") from error


def read_event(raw: bytes, box_id: str) -> ReadEvent:
    """``raw``: one BoxEvent exactly as received, published verbatim as the ``protobuf`` extension,
    so that fields and enum values this relay's schema does not know reach consumers intact."""
    event = parse_event(raw)
    if not event.EventId:
        raise MalformedPage(f"a BoxEvent without EventId (IndexKey {event.IndexKey or 'missing'})")

    if event.HasField("Message"):
        kind, message_id, ticks = MESSAGE_EVENT_TYPE, event.Message.MessageId, event.Message.TimestampTicks
        entities = list(event.Message.Entities)
        message_type = _message_type(event.Message)
        moved_to: list[str] = []
        parties = [event.Message.FromBoxId, event.Message.ToBoxId]
    elif event.HasField("Patch"):
        kind, message_id, ticks = PATCH_EVENT_TYPE, event.Patch.MessageId, event.Patch.TimestampTicks
        entities = list(event.Patch.Entities)
        message_type = _message_type(event.Patch)
        moved_to = [patch.MovedToDepartment for patch in event.Patch.EntityPatches]
        parties = []
    else:
        kind, message_id, ticks, entities, message_type, moved_to, parties = OTHER_EVENT_TYPE, "", 0, [], None, [], []

    documents = [entity.DocumentInfo for entity in entities if entity.HasField("DocumentInfo")]
    counterparties = [document.CounteragentBoxId for document in documents]
    if not any(counterparties):
        # Drafts and letters without documents still have a sender and a recipient.
        counterparties = [party for party in parties if party != box_id]
    directions = [
        pb.DocumentDirection.Name(document.DocumentDirection)
        for document in documents
        if document.HasField("DocumentDirection") and document.DocumentDirection
    ]
    attributes: dict[str, AttributeValue | None] = {
        "box_id": box_id,
        "message_type": message_type,
        "document_direction": _one_or_many(directions),
        "type_named_id": _one_or_many(document.TypeNamedId for document in documents),
        "counteragent_box_id": _one_or_many(counterparties),
        "department_id": _one_or_many([*(document.DepartmentId for document in documents), *moved_to]),
    }
    return ReadEvent(
        event=FeedEvent(
            id=event.EventId,
            type=kind,
            data=json_format.MessageToDict(event, preserving_proto_field_name=True),
            time=to_rfc3339(ticks),
            subject=message_id or None,
            attributes=attributes,
            ordering_key=message_id or None,
            extensions={"protobuf": base64.b64encode(raw).decode("ascii")},
        ),
        index_key=event.IndexKey,
        ticks=ticks,
    )


def _message_type(message: pb.Message | pb.MessagePatch) -> str | None:
    if not message.HasField("MessageType") or message.MessageType == pb.Unknown:
        return None
    return pb.MessageType.Name(message.MessageType)


def _one_or_many(values: Iterable[str]) -> AttributeValue | None:
    """A single value as a string, several as an array (SNS filter policies match either way)."""
    distinct = sorted({value for value in values if value})
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else distinct
