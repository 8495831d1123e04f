"""Diadoc's box events API, after /work/shared/docs/diadoc-events-api.md.

- ``GET /V8/GetNewEvents`` (and the deprecated ``/V7/GetNewEvents``, which answers ``Sunset`` and
  ``Link``): a ``BoxEventList`` in protobuf, after ``afterIndexKey`` (or the old ``afterEventId``),
  with every filter of the method (``departmentId``, ``messageType``, ``typeNamedId``,
  ``documentDirection``, ``timestampFromTicks``/``timestampToTicks``, ``counteragentBoxId``,
  ``orderBy``), ``limit`` (1..500), and ``TotalCount`` capped at ``count_cap`` with
  ``TotalCountType`` ``GreaterThanOrEqual`` beyond it. A key that does not name an event of the box
  (a ``+`` sent unencoded arrives as a space) answers 400 ``cursor must have valid value``.
- ``GET /V2/GetLastEvent?boxId=``: the newest ``BoxEvent``, or 204 when the box has none.
- ``POST /V3/Authenticate?type=password``: ``DiadocAuth ddauth_api_client_id=`` with a JSON body of
  login and password answers a token (plain text) that lives ``token_lifetime`` seconds.

Auth: ``Bearer`` tokens of the :class:`IdentitySimulator` (the user is the token's), or
``DiadocAuth ddauth_api_client_id=<id>,ddauth_token=<token>``. A user sees a box whole or only some
of its departments: such a user must name a department (``departmentId``) and gets 403 for one it
cannot see; a box whose service is not paid answers 402. Errors are plain text with
``X-Diadoc-ErrorCode``.

Events are real protobuf, encoded with the relay's generated classes; each box also gets events
from a newer schema than the relay's (a field and an enum value it does not know), by
:meth:`DiadocSimulator.add_future_event` and now and then from the generator. Traffic comes from a
seeded RNG: a backlog (from before 2017-03-15, when events had no department, onwards), then
``advance()`` ticks, by hand or from a background thread.
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from local_stack.simulators.base import TRANSIENT_FAULTS, Fault, Request, Response, Simulator
from local_stack.simulators.identity import IdentitySimulator

#: The department of a box's head organisation, as Diadoc names it.
HEAD_DEPARTMENT = "00000000-0000-0000-0000-000000000000"
#: Events from before this moment have no department: only users who see the whole box get them.
DEPARTMENTS_SINCE = datetime(2017, 3, 15, tzinfo=UTC)
MAX_LIMIT = 500
#: Defaults of ``limit`` when a request has none: V8 per the OpenAPI description, V7 the original.
DEFAULT_LIMITS = {"V8": 500, "V7": 100}
COUNT_CAP = 100_000
TOKEN_LIFETIME = 24 * 3600
#: The value of AttachmentType that is newer than the relay's schema (Diadoc added 90 in 2026).
FUTURE_ATTACHMENT_TYPE = 90
#: A Message field the relay's schema leaves out (TemplateToLetterTransformationInfo).
FUTURE_MESSAGE_FIELD = 23
#: A BoxEvent field no schema has yet.
FUTURE_EVENT_FIELD = 15

_TICKS_AT_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)
_DIADOC_AUTH = re.compile(r"^DiadocAuth\s+(.*)$", re.IGNORECASE)
_MESSAGE_TYPES = {"Letter": pb.Letter, "Draft": pb.Draft, "Template": pb.Template}
_DIRECTIONS = {"Inbound": pb.Inbound, "Outbound": pb.Outbound, "Internal": pb.Internal}
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
_ORGANISATIONS = (
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


# -- the domain ---------------------------------------------------------------------------------------


@dataclass
class Box:
    id: str
    title: str
    departments: tuple[str, ...]
    paid: bool = True


@dataclass(frozen=True)
class StoredEvent:
    """One event of a box's feed, with what the filters look at."""

    event_id: str
    index_key: str
    raw: bytes
    ticks: int
    message_id: str
    message_type: str
    type_named_ids: frozenset[str]
    directions: frozenset[str]
    counteragents: frozenset[str]
    #: Empty for drafts and events from before 2017-03-15.
    departments: frozenset[str]


@dataclass
class _Message:
    box: Box
    id: str
    message_type: pb.MessageType.ValueType
    direction: pb.DocumentDirection.ValueType
    counteragent: str
    counteragent_title: str
    department: str | None
    documents: list[tuple[str, str, pb.AttachmentType.ValueType]]  # (entity id, TypeNamedId, AttachmentType)
    patches: int = 0


@dataclass
class User:
    login: str
    password: str
    #: box id → None (the whole box) or the departments the user sees.
    access: dict[str, frozenset[str] | None] = field(default_factory=dict)


# -- the simulator ------------------------------------------------------------------------------------


class DiadocSimulator(Simulator):
    name = "diadoc"

    def __init__(
        self,
        identity: IdentitySimulator | None = None,
        *,
        seed: int = 0,
        count_cap: int = COUNT_CAP,
        token_lifetime: int = TOKEN_LIFETIME,
        realtime_dates: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.identity = identity
        self.rng = random.Random(seed)
        self.count_cap = count_cap
        self.token_lifetime = token_lifetime
        self.realtime_dates = realtime_dates
        self.clock = clock
        self.boxes: dict[str, Box] = {}
        self.users: dict[str, User] = {}
        self.api_clients: set[str] = set()
        #: Tokens that POST /V3/Authenticate issued so far (tests check caching and renewal).
        self.authentications = 0
        self._events: dict[str, list[StoredEvent]] = {}
        self._positions: dict[str, dict[str, int]] = {}
        self._by_event_id: dict[str, dict[str, int]] = {}
        self._messages: dict[str, dict[str, _Message]] = {}
        #: Messages of each box that may still get patches.
        self._open: dict[str, list[_Message]] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        # A few days before departments: a backlog holds events with and without one.
        self._moment = datetime(2017, 3, 12, 9, 0, tzinfo=UTC)
        self._lock = threading.RLock()

        self.route("GET", "/V8/GetNewEvents", self._get_new_events)
        self.route("GET", "/V7/GetNewEvents", self._get_new_events)
        self.route("GET", "/V2/GetLastEvent", self._get_last_event)
        self.route("POST", "/V3/Authenticate", self._authenticate_password)

    # -- setup ------------------------------------------------------------------------------------

    def add_box(self, box_id: str | None = None, *, departments: int = 2, title: str | None = None) -> Box:
        with self._lock:
            box = Box(
                id=box_id or f"{self._guid().replace('-', '')}@diadoc.ru",
                title=title or self.rng.choice(_ORGANISATIONS),
                departments=(HEAD_DEPARTMENT, *(self._guid() for _ in range(departments))),
            )
            self.boxes[box.id] = box
            self._events[box.id] = []
            self._positions[box.id] = {}
            self._by_event_id[box.id] = {}
            self._messages[box.id] = {}
            self._open[box.id] = []
            return box

    def add_api_client(self, client_id: str) -> None:
        """A legacy ``ddauth_api_client_id`` Diadoc knows."""
        with self._lock:
            self.api_clients.add(client_id)

    def add_user(self, login: str, password: str, access: Mapping[str, Iterable[str] | None]) -> User:
        """A user with access to boxes (box id → None for the whole box, or its departments). The user
        logs in with ``/V3/Authenticate`` and, with an identity simulator, through OpenID Connect."""
        user = User(
            login,
            password,
            {box: None if departments is None else frozenset(departments) for box, departments in access.items()},
        )
        with self._lock:
            self.users[login] = user
        if self.identity is not None:
            self.identity.register_user(login, password)
        return user

    def set_paid(self, box_id: str, paid: bool) -> None:
        with self._lock:
            self.boxes[box_id].paid = paid

    def set_access(self, login: str, box_id: str, departments: Iterable[str] | bool | None) -> None:
        """Change a user's access to a box: None = whole box, departments, or False = none."""
        with self._lock:
            user = self.users[login]
            if departments is False:
                user.access.pop(box_id, None)
            else:
                user.access[box_id] = None if departments is None or departments is True else frozenset(departments)

    def setup(self, *, boxes: int = 2, backlog: int = 200, login: str = "relay@example.ru") -> dict[str, Any]:
        """``boxes`` boxes with ``backlog`` events each, one of them from a newer schema, and a user who
        sees them whole; returns the legacy credentials of the relay (the secret's JSON)."""
        created = [self.add_box() for _ in range(boxes)]
        for box in created:
            if backlog:
                self.generate(box.id, backlog // 2)
                self.add_future_event(box.id)
                self.generate(box.id, backlog - backlog // 2 - 1)
        password = secrets.token_urlsafe(12)
        client_id = f"relay-{self.rng.getrandbits(32):08x}"
        self.add_api_client(client_id)
        self.add_user(login, password, {box.id: None for box in created})
        return {"api_client_id": client_id, "login": login, "password": password}

    # -- traffic ----------------------------------------------------------------------------------

    def generate(self, box_id: str, count: int) -> list[str]:
        """Append ``count`` events to the box's feed; their EventIds, in feed order."""
        with self._lock:
            return [self._append(box_id, self._next_event(self.boxes[box_id])) for _ in range(count)]

    def advance(self) -> int:
        """One tick of steady traffic over every box: mostly nothing or a few events, now and then a burst."""
        added = 0
        with self._lock:
            for box_id in list(self.boxes):
                burst = self.rng.random() < 0.03
                count = self.rng.randint(10, 60) if burst else self.rng.choice((0, 0, 0, 1, 1, 2))
                added += len(self.generate(box_id, count))
        return added

    def add_future_event(self, box_id: str) -> str:
        """An event as a newer Diadoc schema writes it: a Message field, a BoxEvent field and an
        AttachmentType value the relay's schema does not know. Every byte must reach consumers."""
        with self._lock:
            box = self.boxes[box_id]
            event = self._next_message_event(box, kind=pb.Letter)
            entity = pb.Entity(
                EntityType=pb.Attachment,
                EntityId=self._guid(),
                FileName="Доверенность.xml",
                Content=pb.Content(Size=2048),
            ).SerializeToString() + _varint_field(5, FUTURE_ATTACHMENT_TYPE)
            transformation = _bytes_field(1, self._guid().encode())  # TemplateToLetterTransformationInfo
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
            return self._append(box_id, (raw, event.Message.MessageId))

    # -- inspection -------------------------------------------------------------------------------

    def event_ids(self, box_id: str, **filters: str) -> list[str]:
        """The EventIds of the box's feed, in feed order; with GetNewEvents' filters (as query
        parameters), the ones a feed with those filters must publish."""
        with self._lock:
            matches = _matcher(filters)
            return [event.event_id for event in self._events[box_id] if matches(event)]

    def raw_event(self, box_id: str, event_id: str) -> bytes:
        """The exact bytes of a BoxEvent, as every page carries it."""
        with self._lock:
            return self._events[box_id][self._by_event_id[box_id][event_id]].raw

    def index_keys(self, box_id: str) -> list[str]:
        with self._lock:
            return [event.index_key for event in self._events[box_id]]

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()
        if self.identity is not None:
            self.identity.expire_all()

    # -- HTTP -------------------------------------------------------------------------------------

    def _get_new_events(self, request: Request) -> Response:  # noqa: PLR0911 - one answer per rule
        version = request.path.split("/")[1]
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        query = request.query
        box = self.boxes.get(query.get("boxId", ""))
        if box is None:
            return self.error_body(request, 400 if not query.get("boxId") else 403, "boxId is missing or unknown")
        denied = self._check_access(request, caller, box, query.get("departmentId"))
        if denied is not None:
            return denied
        if query.get("afterIndexKey") and query.get("afterEventId"):
            return self.error_body(request, 400, "afterEventId and afterIndexKey cannot be used together")
        try:
            matches = _matcher(query)
            limit = int(query.get("limit") or DEFAULT_LIMITS[version])
        except ValueError as problem:
            return self.error_body(request, 400, str(problem))
        if not 1 <= limit <= MAX_LIMIT:
            return self.error_body(request, 400, f"limit must be between 1 and {MAX_LIMIT}")
        descending = query.get("orderBy") == "Descending"

        with self._lock:
            events = self._events[box.id]
            order = range(len(events) - 1, -1, -1) if descending else range(len(events))
            after = query.get("afterIndexKey")
            start = 0
            if after:
                position = self._positions[box.id].get(after)
                if position is None:
                    return self.error_body(request, 400, "cursor must have valid value")
                start = order.index(position) + 1
            elif query.get("afterEventId"):
                position = self._by_event_id[box.id].get(query["afterEventId"])
                if position is None:
                    return self.error_body(request, 400, "afterEventId is not an event of this box")
                start = order.index(position) + 1
            matching = [events[i] for i in order[start:] if matches(events[i])]

        page = pb.BoxEventListFrame(
            Events=[event.raw for event in matching[:limit]],
            TotalCount=min(len(matching), self.count_cap),
            TotalCountType=pb.GreaterThanOrEqual if len(matching) > self.count_cap else pb.Equal,
        )
        headers = {"Content-Type": "application/x-protobuf"}
        if version == "V7":
            headers["Sunset"] = "Wed, 01 Jul 2026 00:00:00 GMT"
            headers["Link"] = '</V8/GetNewEvents>; rel="successor-version"'
        # BoxEventListFrame is BoxEventList on the wire: its events are the stored bytes, untouched.
        return Response(200, page.SerializeToString(), headers)

    def _get_last_event(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        box = self.boxes.get(request.query.get("boxId", ""))
        if box is None:
            return self.error_body(request, 400, "boxId is missing or unknown")
        denied = self._check_access(request, caller, box, None, whole_box=False)
        if denied is not None:
            return denied
        with self._lock:
            events = self._events[box.id]
            if not events:
                return Response(204)
            return Response(200, events[-1].raw, {"Content-Type": "application/x-protobuf"})

    def _authenticate_password(self, request: Request) -> Response:
        if request.query.get("type") != "password":
            return self.error_body(request, 400, "type must be password for this simulator")
        client_id = _diadoc_auth(request.header("Authorization")).get("ddauth_api_client_id")
        with self._lock:
            known_client = client_id in self.api_clients
        if not known_client:
            return self._error(request, 401, "Authorization.ApiClientIdIsNotValid", "unknown ddauth_api_client_id")
        try:
            body = request.json()
        except ValueError:
            return self.error_body(request, 400, "the body is not JSON")
        login = body.get("login") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        with self._lock:
            user = self.users.get(login) if isinstance(login, str) else None
            if user is None or not secrets.compare_digest(user.password.encode(), str(password or "").encode()):
                return self._error(request, 401, "Authorization.InvalidCredentials", "invalid login or password")
            token = base64.b64encode(secrets.token_bytes(48)).decode()
            self._tokens[token] = (user.login, self.clock() + self.token_lifetime)
            self.authentications += 1
        return Response(200, token.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    def _caller(self, request: Request) -> User | Response:
        header = request.header("Authorization") or ""
        scheme, _, credential = header.partition(" ")
        login: str | None = None
        if scheme.lower() == "bearer" and credential.strip():
            principal = self.identity.principal(credential.strip()) if self.identity is not None else None
            if principal is None:
                return self._error(
                    request, 401, "Authorization.TokenIsNotValid", "the access token is invalid or expired"
                )
            login = principal[0]
        elif _DIADOC_AUTH.match(header):
            parts = _diadoc_auth(header)
            with self._lock:
                known_client = parts.get("ddauth_api_client_id") in self.api_clients
                session = self._tokens.get(parts.get("ddauth_token", ""))
            if not known_client:
                return self._error(request, 401, "Authorization.ApiClientIdIsNotValid", "unknown ddauth_api_client_id")
            if session is None or self.clock() >= session[1]:
                return self._error(request, 401, "Authorization.TokenIsNotValid", "the token is invalid or expired")
            login = session[0]
        else:
            return self._error(request, 401, "Authorization.Required", "no Bearer or DiadocAuth credentials")
        with self._lock:
            user = self.users.get(login)
        if user is None:
            return self._error(request, 403, "Authorization.UserHasNoBoxes", f"{login} has no Diadoc boxes")
        return user

    def _check_access(  # noqa: PLR0911 - one answer per rule
        self, request: Request, user: User, box: Box, department: str | None, *, whole_box: bool = True
    ) -> Response | None:
        with self._lock:
            if not box.paid:
                return self._error(request, 402, "Billing.ServiceIsNotPaid", f"the service of box {box.id} is not paid")
            if box.id not in user.access:
                return self._error(request, 403, "Authorization.BoxAccessDenied", f"no access to box {box.id}")
            visible = user.access[box.id]
        if visible is None:
            return None
        if department is None:
            if not whole_box:
                return None
            return self._error(
                request,
                403,
                "Authorization.DepartmentRequired",
                "the user does not see every document of the organisation: pass departmentId",
            )
        if department not in visible:
            return self._error(request, 403, "Authorization.DepartmentAccessDenied", f"no access to {department}")
        return None

    def error_body(self, request: Request, status: int, message: str) -> Response:
        code = {
            400: "Http.BadRequest",
            401: "Authorization.Required",
            402: "Billing.ServiceIsNotPaid",
            403: "Authorization.AccessDenied",
            404: "Http.NotFound",
            405: "Http.MethodNotAllowed",
            409: "Http.Conflict",
            429: "Http.TooManyRequests",
        }.get(status, "Http.InternalServerError")
        return self._error(request, status, code, message)

    def _error(self, request: Request, status: int, code: str, message: str) -> Response:
        headers = {"Content-Type": "text/plain; charset=utf-8", "X-Diadoc-ErrorCode": code}
        return Response(status, message.encode(), headers)

    # -- the generator ----------------------------------------------------------------------------

    def _append(self, box_id: str, draft: tuple[bytes, str] | pb.BoxEvent) -> str:
        if isinstance(draft, pb.BoxEvent):
            raw, message_id = draft.SerializeToString(), (draft.Message.MessageId or draft.Patch.MessageId)
        else:
            raw, message_id = draft
        event = pb.BoxEvent.FromString(raw)
        key = self._index_key()
        raw = raw + pb.BoxEvent(IndexKey=key).SerializeToString()  # field 4 appended: the bytes stay as built
        message = self._messages[box_id].get(message_id)
        stored = StoredEvent(
            event_id=event.EventId,
            index_key=key,
            raw=raw,
            ticks=event.Message.TimestampTicks if event.HasField("Message") else event.Patch.TimestampTicks,
            message_id=message_id,
            message_type=pb.MessageType.Name(message.message_type) if message else "Letter",
            type_named_ids=frozenset(t for _, t, _ in message.documents) if message else frozenset(),
            directions=frozenset({pb.DocumentDirection.Name(message.direction)}) if message else frozenset(),
            counteragents=frozenset({message.counteragent}) if message else frozenset(),
            departments=frozenset({message.department}) if message and message.department else frozenset(),
        )
        self._positions[box_id][key] = len(self._events[box_id])
        self._by_event_id[box_id][stored.event_id] = len(self._events[box_id])
        self._events[box_id].append(stored)
        return stored.event_id

    def _next_event(self, box: Box) -> pb.BoxEvent:
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
        self._moment += timedelta(minutes=self.rng.uniform(20, 180))
        if self.realtime_dates:
            self._moment = max(self._moment, datetime.now(UTC))
        return self._moment

    def _next_message_event(self, box: Box, *, kind: pb.MessageType.ValueType) -> pb.BoxEvent:
        rng = self.rng
        moment = self._tick()
        direction = rng.choices((pb.Inbound, pb.Outbound, pb.Internal), weights=(50, 40, 10))[0]
        if kind == pb.Draft:
            direction = pb.Outbound
        counteragent = box.id if direction == pb.Internal else f"{self._guid().replace('-', '')}@diadoc.ru"
        counteragent_title = box.title if direction == pb.Internal else rng.choice(_ORGANISATIONS)
        department = None if kind == pb.Draft or moment < DEPARTMENTS_SINCE else rng.choice(box.departments)
        message = _Message(
            box=box,
            id=self._guid(),
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
            entity_id = self._guid()
            message.documents.append((entity_id, type_named_id, attachment_type))
            document = pb.Document(
                IndexKey=self._index_key(),
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
                    ContentTypeId=self._guid(),
                    Labels=[f"label-{rng.randrange(3)}"] if rng.random() < 0.2 else [],
                )
            )
            if kind != pb.Draft:
                entities.append(
                    pb.Entity(
                        EntityType=pb.Signature,
                        EntityId=self._guid(),
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
            EventId=self._guid(),
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

    def _next_patch_event(self, box: Box, message: _Message) -> pb.BoxEvent:
        rng = self.rng
        moment = self._tick()
        message.patches += 1
        entity_id, type_named_id, attachment_type = rng.choice(message.documents)
        patch = pb.MessagePatch(
            MessageId=message.id,
            TimestampTicks=ticks(moment),
            PatchId=self._guid(),
            MessageType=message.message_type,
            ForDraft=message.message_type == pb.Draft,
        )
        roll = rng.random()
        if roll < 0.55:  # the counterparty signed
            patch.Entities.append(
                pb.Entity(
                    EntityType=pb.Signature,
                    EntityId=self._guid(),
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
                EntityId=self._guid(),
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
        return pb.BoxEvent(EventId=self._guid(), Patch=patch)

    def _index_key(self) -> str:
        """Opaque, base64, always with ``+``, ``/`` and ``=``: a client that does not encode it fails."""
        while True:
            key = base64.b64encode(self.rng.getrandbits(136).to_bytes(17, "big")).decode()
            if "+" in key and "/" in key:
                return key

    def _guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))


# -- the local stack's Diadoc ---------------------------------------------------------------------


class SimulatedDiadoc:
    """What ``make run`` needs of Diadoc (the shape of ``local_stack.feeds.SimulatedFeed``): three
    boxes with a backlog each, then a trickle. The relay reads two: one whole, one through a filter
    set (inbound letters only) given in ``DiadocBoxSettings``; the third box is not in
    ``DiadocBoxIds``, so none of its events may arrive. ``scheme`` picks the credentials: legacy
    ``diadocauth`` (login and password for /V3/Authenticate) or ``oidc`` (Bearer tokens of the
    identity simulator).

    ``options`` is duck-typed (``seed``, ``backlog``, ``traffic_interval``, ``fault_rate``,
    ``token_lifetime``), so that this module does not depend on the local stack's own."""

    #: The filter set of the second box, named as GetNewEvents' query parameters.
    FILTERED = {"messageType": "Letter", "documentDirection": "Inbound"}
    EVENTS_PATH = "/V8/GetNewEvents"

    def __init__(self, options: Any, *, scheme: str = "diadocauth") -> None:
        self.options = options
        self.identity = IdentitySimulator(token_lifetime=options.token_lifetime)
        self.diadoc = DiadocSimulator(self.identity, seed=options.seed)
        whole, filtered, unlisted = (self.diadoc.add_box(departments=2) for _ in range(3))
        self.relayed = {whole.id: {}, filtered.id: dict(self.FILTERED)}
        self.unlisted = unlisted.id
        login, password = "relay@integrator.example", secrets.token_urlsafe(16)
        client_id = "kontur-feed-relay-local"
        self.diadoc.add_api_client(client_id)
        self.diadoc.add_user(login, password, {box.id: None for box in (whole, filtered, unlisted)})
        for box in (whole, filtered, unlisted):
            self.diadoc.generate(box.id, options.backlog // 2)
            self.diadoc.add_future_event(box.id)
            self.diadoc.generate(box.id, max(options.backlog - options.backlog // 2 - 1, 0))
        self.diadoc.realtime_dates = True  # the trickle happens now; the backlog is history
        if options.fault_rate:
            # One of each kind first, so that even a short run meets them all; then at random.
            for fault in (
                Fault.throttle(retry_after=1),
                Fault.server_error(409),
                Fault.html_error(502),
                Fault.expired_token(),
            ):
                self.diadoc.faults.add(fault, prefix=self.EVENTS_PATH)
            self.diadoc.faults.randomly(
                options.fault_rate,
                seed=options.seed,
                faults=(*TRANSIENT_FAULTS, Fault.server_error(409), Fault.expired_token()),
                prefix=self.EVENTS_PATH,
            )
        self.identity.start()
        self.diadoc.start()
        self.parameters = {
            "DiadocApiUrl": self.diadoc.url,
            "DiadocBoxIds": ",".join(self.relayed),
            "DiadocBoxSettings": json.dumps({filtered.id: self.FILTERED}),
        }
        if scheme == "oidc":
            self.identity.register_client(client_id, "local-client-secret")
            self.credentials: dict[str, Any] = {
                "token_url": self.identity.token_url,
                "client_id": client_id,
                "client_secret": "local-client-secret",
                "grant_type": "password",
                "username": login,
                "password": password,
            }
        else:
            self.credentials = {"api_client_id": client_id, "login": login, "password": password}

    def start_traffic(self) -> None:
        self.diadoc.start_traffic(self.options.traffic_interval)

    def stop_traffic(self) -> None:
        self.diadoc.stop_traffic()

    def expected(self) -> set[tuple[str, str]]:
        return {
            (f"diadoc:{box}", event_id)
            for box, filters in self.relayed.items()
            for event_id in self.diadoc.event_ids(box, **filters)
        }

    def withheld(self) -> set[tuple[str, str]]:
        everything = {
            (f"diadoc:{box}", event_id)
            for box in (*self.relayed, self.unlisted)
            for event_id in self.diadoc.event_ids(box)
        }
        return everything - self.expected()

    def faults_served(self) -> list[str]:
        return [*self.identity.faults.served, *self.diadoc.faults.served]

    def describe(self) -> list[str]:
        whole, filtered = self.relayed
        return [
            f"Diadoc: API {self.diadoc.url} ({'Bearer' if 'token_url' in self.credentials else 'DiadocAuth'})",
            f"  box {whole} whole, box {filtered} inbound letters only, one more box not relayed; "
            f"backlog {self.options.backlog} each, then traffic every {self.options.traffic_interval}s"
            + (f", faults on {self.options.fault_rate:.0%} of requests" if self.options.fault_rate else ""),
        ]

    def close(self) -> None:
        self.diadoc.stop()
        self.identity.stop()


# -- helpers ----------------------------------------------------------------------------------------


def _matcher(query: Mapping[str, str]) -> Callable[[StoredEvent], bool]:
    """GetNewEvents' filters as a predicate; raises ValueError for a value Diadoc would reject (400)."""
    checks: list[Callable[[StoredEvent], bool]] = []

    def values(name: str, allowed: Iterable[str] | None = None) -> frozenset[str] | None:
        raw = query.get(name)
        if not raw:
            return None
        items = frozenset(item.strip() for item in raw.split(",") if item.strip())
        if allowed is not None and not items <= set(allowed):
            raise ValueError(f"{name} has unknown values: {', '.join(sorted(items - set(allowed)))}")
        return items

    message_types = values("messageType", _MESSAGE_TYPES)
    if message_types is not None:
        checks.append(lambda e: e.message_type in message_types)
    type_named_ids = values("typeNamedId")
    if type_named_ids is not None:
        checks.append(lambda e: bool(e.type_named_ids & type_named_ids))
    directions = values("documentDirection", _DIRECTIONS)
    if directions is not None:
        checks.append(lambda e: bool(e.directions & directions))
    department = query.get("departmentId")
    if department:
        checks.append(lambda e: department in e.departments)
    counteragent = query.get("counteragentBoxId")
    if counteragent:
        checks.append(lambda e: counteragent in e.counteragents)
    since, until = _ticks(query, "timestampFromTicks"), _ticks(query, "timestampToTicks")
    if since is not None:
        checks.append(lambda e: e.ticks >= since)
    if until is not None:
        checks.append(lambda e: e.ticks <= until)
    if query.get("orderBy") not in (None, "", "Ascending", "Descending"):
        raise ValueError("orderBy must be Ascending or Descending")
    return lambda event: all(check(event) for check in checks)


def _ticks(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} is not a number of ticks") from None


def _diadoc_auth(header: str | None) -> dict[str, str]:
    """The ``name=value`` pairs of a ``DiadocAuth`` header."""
    match = _DIADOC_AUTH.match(header or "")
    if match is None:
        return {}
    pairs = (part.strip().partition("=") for part in match.group(1).split(","))
    return {name.strip(): value.strip() for name, _, value in pairs if name.strip()}


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


__all__ = ["HEAD_DEPARTMENT", "Box", "DiadocSimulator", "SimulatedDiadoc", "StoredEvent", "User", "ticks"]
