"""Diadoc's box events, generated: real protobuf encoded with the relay's generated classes, from a
seeded RNG. Letters, drafts and templates with their documents and signatures, then patches (a
signature, a move to another department, a deletion, a buyer's title); events from before
2017-03-15 have no department. ``future_event`` writes what a newer schema than the relay's would:
a field and an enum value it does not know.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb

#: The department of a box's head organisation, as Diadoc names it.
HEAD_DEPARTMENT = "00000000-0000-0000-0000-000000000000"
#: Events from before this moment have no department: only users who see the whole box get them.
DEPARTMENTS_SINCE = datetime(2017, 3, 15, tzinfo=UTC)
#: The value of AttachmentType that is newer than the relay's schema (Diadoc added 90 in 2026).
FUTURE_ATTACHMENT_TYPE = 90
#: A Message field the relay's schema leaves out (TemplateToLetterTransformationInfo).
FUTURE_MESSAGE_FIELD = 23
#: A BoxEvent field no schema has yet.
FUTURE_EVENT_FIELD = 15

_TICKS_AT_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)

#: (TypeNamedId, AttachmentType, weight) of the documents the generator sends.
DOCUMENT_TYPES: tuple[tuple[str, pb.AttachmentType.ValueType, int], ...] = (
    ("UniversalTransferDocument", pb.UniversalTransferDocument, 40),
    ("Nonformalized", pb.Nonformalized, 20),
    ("Invoice", pb.Invoice, 10),
    ("XmlAcceptanceCertificate", pb.XmlAcceptanceCertificate, 10),
    ("UniversalCorrectionDocument", pb.UniversalCorrectionDocument, 8),
    ("Contract", pb.Contract, 7),
    ("XmlTorg12", pb.XmlTorg12, 5),
)

# Cyrillic on purpose: Diadoc's titles are Russian, and so must be what the relay publishes.
ORGANISATIONS = (
    "ООО «Ромашка»",  # noqa: RUF001
    "АО «Уральский завод»",  # noqa: RUF001
    "ИП Соколова Анна Петровна",
    "ООО «Северный ветер»",  # noqa: RUF001
    "ПАО «Трансгрузсервис»",
    "ООО «Лаборатория качества»",  # noqa: RUF001
)


def ticks(moment: datetime) -> int:
    delta = moment - _TICKS_AT_YEAR_ONE
    return (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


@dataclass
class Box:
    id: str
    title: str
    departments: tuple[str, ...]
    paid: bool = True


@dataclass
class Message:
    """A message of a box, as the generator remembers it to send its patches later."""

    box: Box
    id: str
    message_type: pb.MessageType.ValueType
    direction: pb.DocumentDirection.ValueType
    counteragent: str
    counteragent_title: str
    department: str | None
    documents: list[tuple[str, str, pb.AttachmentType.ValueType]]  # (entity id, TypeNamedId, AttachmentType)
    patches: int = 0


class DiadocEventGenerator:
    """The next events of each box. It shares the simulator's RNG, so that one seed fixes both the
    boxes and their traffic; the simulator calls it under its lock."""

    def __init__(
        self, rng: random.Random, *, realtime_dates: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.rng = rng
        #: The trickle happens now (by ``clock``); without this, events are dated from a moment that moves on.
        self.realtime_dates = realtime_dates
        self.clock = clock
        self._messages: dict[str, dict[str, Message]] = {}
        #: Messages of each box that may still get patches.
        self._open: dict[str, list[Message]] = {}
        # A few days before departments: a backlog holds events with and without one.
        self._moment = datetime(2017, 3, 12, 9, 0, tzinfo=UTC)

    def new_box(self, box_id: str | None, departments: int, title: str | None) -> Box:
        box = Box(
            id=box_id or f"{self.guid().replace('-', '')}@diadoc.ru",
            title=title or self.rng.choice(ORGANISATIONS),
            departments=(HEAD_DEPARTMENT, *(self.guid() for _ in range(departments))),
        )
        self._messages[box.id] = {}
        self._open[box.id] = []
        return box

    def message(self, box_id: str, message_id: str) -> Message | None:
        return self._messages[box_id].get(message_id)

    def future_event(self, box: Box) -> tuple[bytes, str]:
        """An event as a newer Diadoc schema writes it: a Message field, a BoxEvent field and an
        AttachmentType value the relay's schema does not know. Every byte must reach consumers."""
        event = self._next_message_event(box, kind=pb.Letter)
        entity = pb.Entity(
            EntityType=pb.Attachment,
            EntityId=self.guid(),
            FileName="Доверенность.xml",
            Content=pb.Content(Size=2048),
        ).SerializeToString() + _varint_field(5, FUTURE_ATTACHMENT_TYPE)
        transformation = _bytes_field(1, self.guid().encode())  # TemplateToLetterTransformationInfo
        message = (
            event.Message.SerializeToString()
            + _bytes_field(8, entity)
            + _bytes_field(FUTURE_MESSAGE_FIELD, transformation)
        )
        raw = (
            pb.BoxEvent(EventId=event.EventId).SerializeToString()
            + _bytes_field(2, message)
            + _bytes_field(FUTURE_EVENT_FIELD, "из будущей схемы".encode())
        )
        return raw, event.Message.MessageId

    def next_event(self, box: Box) -> pb.BoxEvent:
        open_messages = self._open[box.id]
        if open_messages and self.rng.random() < 0.45:
            message = self.rng.choice(open_messages)
            event = self._next_patch_event(box, message)
            if message.patches >= 4:
                open_messages.remove(message)
            return event
        kind = self.rng.choices((pb.Letter, pb.Draft, pb.Template), weights=(85, 10, 5))[0]
        return self._next_message_event(box, kind=kind)

    def _tick(self) -> datetime:
        step = timedelta(minutes=self.rng.uniform(20, 180))
        # Dated by the clock, an event's time is when it happened: what Diadoc's timestampFromTicks reads.
        self._moment = datetime.fromtimestamp(self.clock(), UTC) if self.realtime_dates else self._moment + step
        return self._moment

    def _next_message_event(self, box: Box, *, kind: pb.MessageType.ValueType) -> pb.BoxEvent:
        rng = self.rng
        moment = self._tick()
        direction = rng.choices((pb.Inbound, pb.Outbound, pb.Internal), weights=(50, 40, 10))[0]
        if kind == pb.Draft:
            direction = pb.Outbound
        counteragent = box.id if direction == pb.Internal else f"{self.guid().replace('-', '')}@diadoc.ru"
        counteragent_title = box.title if direction == pb.Internal else rng.choice(ORGANISATIONS)
        department = None if kind == pb.Draft or moment < DEPARTMENTS_SINCE else rng.choice(box.departments)
        message = Message(
            box=box,
            id=self.guid(),
            message_type=kind,
            direction=direction,
            counteragent=counteragent,
            counteragent_title=counteragent_title,
            department=department,
            documents=[],
        )
        sender, recipient = (counteragent, box.id) if direction == pb.Inbound else (box.id, counteragent)
        titles = (counteragent_title, box.title) if direction == pb.Inbound else (box.title, counteragent_title)
        entities = []
        for _ in range(rng.choices((1, 2, 3), weights=(70, 20, 10))[0]):
            type_named_id, attachment_type, _ = rng.choices(DOCUMENT_TYPES, weights=[w for *_, w in DOCUMENT_TYPES])[0]
            entity_id = self.guid()
            message.documents.append((entity_id, type_named_id, attachment_type))
            document = pb.Document(
                IndexKey=self.index_key(),
                MessageId=message.id,
                EntityId=entity_id,
                CreationTimestampTicks=ticks(moment),
                CounteragentBoxId=counteragent,
                FileName=f"{type_named_id}_{rng.randrange(10**6):06d}.xml",
                DocumentDate=moment.strftime("%d.%m.%Y"),
                DocumentNumber=str(rng.randrange(1, 99999)),
                DocumentDirection=direction,
                LastModificationTimestampTicks=ticks(moment),
                TypeNamedId=type_named_id,
                Function="СЧФДОП" if type_named_id == "UniversalTransferDocument" else "default",
                WorkflowId=1,
                Title=f"{type_named_id} № {rng.randrange(1, 9999)}",
                Version="utd820_05_01_01_hyphen" if type_named_id == "UniversalTransferDocument" else "v1",
                IsTest=False,
            )
            if department is not None:
                document.DepartmentId = department
            entities.append(
                pb.Entity(
                    EntityType=pb.Attachment,
                    EntityId=entity_id,
                    Content=pb.Content(Size=rng.randrange(2_000, 90_000)),
                    AttachmentType=attachment_type,
                    FileName=document.FileName,
                    NeedRecipientSignature=rng.random() < 0.6,
                    DocumentInfo=document,
                    RawCreationDate=ticks(moment),
                    ContentTypeId=self.guid(),
                    Labels=[f"label-{rng.randrange(3)}"] if rng.random() < 0.2 else [],
                )
            )
            if kind != pb.Draft:
                entities.append(
                    pb.Entity(
                        EntityType=pb.Signature,
                        EntityId=self.guid(),
                        ParentEntityId=entity_id,
                        Content=pb.Content(Size=rng.randrange(3_000, 6_000)),
                        SignerBoxId=sender,
                        RawCreationDate=ticks(moment),
                    )
                )
        self._messages[box.id][message.id] = message
        self._open[box.id].append(message)
        del self._open[box.id][:-200]  # old messages stop changing
        return pb.BoxEvent(
            EventId=self.guid(),
            Message=pb.Message(
                MessageId=message.id,
                TimestampTicks=ticks(moment),
                LastPatchTimestampTicks=ticks(moment),
                FromBoxId=sender,
                FromTitle=titles[0],
                ToBoxId=recipient,
                ToTitle=titles[1],
                Entities=entities,
                IsDraft=kind == pb.Draft,
                IsInternal=direction == pb.Internal,
                LockMode=pb.LockModes.LockMode.Value("None"),
                MessageType=kind,
            ),
        )

    def _next_patch_event(self, box: Box, message: Message) -> pb.BoxEvent:
        rng = self.rng
        moment = self._tick()
        message.patches += 1
        entity_id, type_named_id, attachment_type = rng.choice(message.documents)
        patch = pb.MessagePatch(
            MessageId=message.id,
            TimestampTicks=ticks(moment),
            PatchId=self.guid(),
            MessageType=message.message_type,
            ForDraft=message.message_type == pb.Draft,
        )
        roll = rng.random()
        if roll < 0.55:  # the counterparty signed
            patch.Entities.append(
                pb.Entity(
                    EntityType=pb.Signature,
                    EntityId=self.guid(),
                    ParentEntityId=entity_id,
                    Content=pb.Content(Size=rng.randrange(3_000, 6_000)),
                    SignerBoxId=message.counteragent,
                    RawCreationDate=ticks(moment),
                )
            )
            patch.MessageIsDelivered = True
        elif roll < 0.7 and message.department is not None and len(box.departments) > 1:  # moved
            message.department = rng.choice([d for d in box.departments if d != message.department])
            patch.EntityPatches.append(pb.EntityPatch(EntityId=entity_id, MovedToDepartment=message.department))
        elif roll < 0.8:  # deleted
            patch.EntityPatches.append(pb.EntityPatch(EntityId=entity_id, DocumentIsDeleted=True))
            patch.MessageIsDeleted = len(message.documents) == 1
            message.patches = 4
        else:  # a buyer's title or a receipt arrived, with its document info
            info = pb.Document(
                MessageId=message.id,
                EntityId=self.guid(),
                CreationTimestampTicks=ticks(moment),
                CounteragentBoxId=message.counteragent,
                DocumentDirection=message.direction,
                TypeNamedId=type_named_id,
                Title="Титул покупателя",
                Version="v1",
            )
            if message.department is not None:
                info.DepartmentId = message.department
            patch.Entities.append(
                pb.Entity(
                    EntityType=pb.Attachment,
                    EntityId=info.EntityId,
                    ParentEntityId=entity_id,
                    AttachmentType=pb.UniversalTransferDocumentBuyerTitle
                    if attachment_type == pb.UniversalTransferDocument
                    else pb.Receipt,
                    DocumentInfo=info,
                    Content=pb.Content(Size=rng.randrange(2_000, 9_000)),
                )
            )
        return pb.BoxEvent(EventId=self.guid(), Patch=patch)

    def index_key(self) -> str:
        """Opaque, base64, always with ``+``, ``/`` and ``=``: a client that does not encode it fails."""
        while True:
            key = base64.b64encode(self.rng.getrandbits(136).to_bytes(17, "big")).decode()
            if "+" in key and "/" in key:
                return key

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload
