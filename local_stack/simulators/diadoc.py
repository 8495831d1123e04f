"""Diadoc's box events API, after /work/shared/docs/diadoc-events-api.md.

- ``GET /V8/GetNewEvents`` (and the deprecated ``/V7/GetNewEvents``, which answers ``Sunset`` and
  ``Link``): a ``BoxEventList`` in protobuf, after ``afterIndexKey`` (or the old ``afterEventId``),
  with every filter of the method (``departmentId``, ``messageType``, ``typeNamedId``,
  ``documentDirection``, ``timestampFromTicks``/``timestampToTicks``, ``counteragentBoxId``,
  ``orderBy``), ``limit`` (1..500), and ``TotalCount`` capped at ``count_cap`` with
  ``TotalCountType`` ``GreaterThanOrEqual`` beyond it. A key that does not name an event of the box
  (a ``+`` sent unencoded arrives as a space) answers 400 ``cursor must have valid value``.
- ``GET /V2/GetLastEvent?boxId=``: the newest ``BoxEvent``, or 204 when the box has none.
- ``GET /GetMyOrganizations``: the organisations in which the caller sees a box, with those boxes.
  It answers only ``autoRegister=false`` (400 otherwise) and records what each call sent in
  ``organization_requests``: the relay must never let Diadoc register its user in organisations.
- ``POST /V3/Authenticate?type=password``: ``DiadocAuth ddauth_api_client_id=`` with a JSON body of
  login and password answers a token (plain text) that lives ``token_lifetime`` seconds.

Auth (``diadoc_auth``): ``Bearer`` tokens of the :class:`IdentitySimulator` (the user is the token's), or
``DiadocAuth ddauth_api_client_id=<id>,ddauth_token=<token>``. A user sees a box whole or only some
of its departments: such a user must name a department (``departmentId``) and gets 403 for one it
cannot see; a box whose service is not paid answers 402. Errors are plain text with
``X-Diadoc-ErrorCode``.

The events come from ``diadoc_events``; each box also gets events from a newer schema than the
relay's, by :meth:`DiadocSimulator.add_future_event`. Traffic is a backlog (from before 2017-03-15,
when events had no department, onwards), then ``advance()`` ticks, by hand or from a background thread.
``habits`` (``diadoc_habits``) turn on what Diadoc does beyond its documentation: siblings sharing an
IndexKey, re-served EventIds, events served late; an entry is served from its ``visible_at`` on,
by ``clock``.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from local_stack.simulators.base import Request, Response
from local_stack.simulators.diadoc_auth import DiadocAuthority, User
from local_stack.simulators.diadoc_events import Box, DiadocEventGenerator
from local_stack.simulators.diadoc_feed import BoxFeed, StoredEvent, matcher
from local_stack.simulators.diadoc_habits import Habits
from local_stack.simulators.diadoc_orgs import Organization, new_organization, organization_list
from local_stack.simulators.identity import IdentitySimulator

MAX_LIMIT = 500
#: Defaults of ``limit`` when a request has none: V8 per the OpenAPI description, V7 the original.
DEFAULT_LIMITS = {"V8": 500, "V7": 100}
COUNT_CAP = 100_000
TOKEN_LIFETIME = 24 * 3600


# -- the simulator ------------------------------------------------------------------------------------


class DiadocSimulator(DiadocAuthority):
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
        habits: Habits | None = None,
    ) -> None:
        super().__init__()
        self.identity = identity
        self.rng = random.Random(seed)
        self.count_cap = count_cap
        self.token_lifetime = token_lifetime
        self.clock = clock
        self.boxes: dict[str, Box] = {}
        self.users: dict[str, User] = {}
        self.api_clients: set[str] = set()
        #: Tokens that POST /V3/Authenticate issued so far (tests check caching and renewal).
        self.authentications = 0
        #: The ``autoRegister`` each GetMyOrganizations call sent (None: not sent).
        self.organization_requests: list[str | None] = []
        self.organizations: dict[str, Organization] = {}
        self.habits = habits or Habits()
        self.events = DiadocEventGenerator(self.rng, realtime_dates=realtime_dates, clock=clock)
        self._feeds: dict[str, BoxFeed] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.RLock()

        self.route("GET", "/V8/GetNewEvents", self._get_new_events)
        self.route("GET", "/V7/GetNewEvents", self._get_new_events)
        self.route("GET", "/V2/GetLastEvent", self._get_last_event)
        self.route("GET", "/GetMyOrganizations", self._get_my_organizations)
        self.route("POST", "/V3/Authenticate", self._authenticate_password)

    # -- setup ------------------------------------------------------------------------------------

    def add_box(
        self,
        box_id: str | None = None,
        *,
        departments: int = 2,
        title: str | None = None,
        organization: str | None = None,
    ) -> Box:
        """A box of the organisation with id ``organization``, or of a new one named as the box."""
        with self._lock:
            box = self.events.new_box(box_id, departments, title)
            self.boxes[box.id] = box
            self._feeds[box.id] = BoxFeed()
            owner = self.organizations.get(organization or "") or new_organization(box.id, box.title)
            self.organizations.setdefault(owner.id, owner).box_ids.append(box.id)
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
        """Append ``count`` events to the box's feed, and the siblings ``habits`` give some of them;
        the new EventIds, in feed order (an event served again is not new)."""
        with self._lock:
            return [event for _ in range(count) for event in self._next(box_id)]

    def _next(self, box_id: str) -> list[str]:
        """One new event with what the habits add to it: a sibling under its key, an earlier entry again."""
        feed, now = self._feeds[box_id], self.clock()
        lateness = self.habits.lateness()
        visible_at = now + lateness if lateness else 0.0
        added = [self._append(box_id, self.events.next_event(self.boxes[box_id]), visible_at=visible_at)]
        delay = self.habits.sibling()
        if delay is not None:
            added.append(self._add_sibling(box_id, delay))
        back = self.habits.serve_again(len(feed.events) - len(added))
        if back is not None:
            position = len(feed.events) - len(added) - back
            if feed.events[position].visible_at <= now:
                feed.serve_again(position, self.events.index_key())
        return added

    def add_sibling(self, box_id: str, *, delay: float = 0.0) -> str:
        """A new event under the IndexKey and timestamp of the box's newest entry (a signed draft's
        Patch and Message), served ``delay`` seconds after it; its EventId."""
        with self._lock:
            return self._add_sibling(box_id, delay)

    def serve_again(self, box_id: str, event_id: str) -> None:
        """The event's entry served once more, at the end of the feed under a new IndexKey."""
        with self._lock:
            feed = self._feeds[box_id]
            feed.serve_again(feed.by_event_id[event_id], self.events.index_key())

    def _add_sibling(self, box_id: str, delay: float) -> str:
        twin = self._feeds[box_id].events[-1]
        sibling = self.events.next_event(self.boxes[box_id])
        (sibling.Message if sibling.HasField("Message") else sibling.Patch).TimestampTicks = twin.ticks
        served = max(twin.visible_at, self.clock() + delay) if delay else twin.visible_at
        return self._append(box_id, sibling, key=twin.index_key, visible_at=served)

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
        """An event as a newer Diadoc schema writes it (see ``DiadocEventGenerator.future_event``)."""
        with self._lock:
            return self._append(box_id, self.events.future_event(self.boxes[box_id]))

    def add_event(self, box_id: str, event: pb.BoxEvent) -> str:
        """An event of the caller's making (one too large for SNS, say), appended to the box's feed."""
        with self._lock:
            return self._append(box_id, event)

    # -- inspection -------------------------------------------------------------------------------

    def event_ids(self, box_id: str, **filters: str) -> list[str]:
        """The EventIds the box's feed serves now, each once, in feed order; with GetNewEvents' filters
        (as query parameters), the ones a feed with those filters must publish."""
        with self._lock:
            return _distinct_ids(self._feeds[box_id].visible(self.clock()), filters)

    def generated_ids(self, box_id: str, **filters: str) -> list[str]:
        """As ``event_ids``, with the events the feed will serve later too (a late event, a late
        sibling): what a relay that waits long enough must publish."""
        with self._lock:
            return _distinct_ids(self._feeds[box_id].events, filters)

    def served_at(self, box_id: str, event_id: str) -> float:
        """When (the simulator's clock) the event is first served; 0: from the start."""
        with self._lock:
            feed = self._feeds[box_id]
            return feed.events[feed.by_event_id[event_id]].visible_at

    def entries(self, box_id: str) -> list[StoredEvent]:
        """Every entry of the box's feed, in feed order, served yet or not (siblings, entries served again)."""
        with self._lock:
            return list(self._feeds[box_id].events)

    def raw_event(self, box_id: str, event_id: str) -> bytes:
        """The exact bytes of a BoxEvent, as every page carries it."""
        with self._lock:
            feed = self._feeds[box_id]
            return feed.events[feed.by_event_id[event_id]].raw

    def index_keys(self, box_id: str) -> list[str]:
        with self._lock:
            return [event.index_key for event in self._feeds[box_id].events]

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
            matches = matcher(query)
            limit = int(query.get("limit") or DEFAULT_LIMITS[version])
        except ValueError as problem:
            return self.error_body(request, 400, str(problem))
        if not 1 <= limit <= MAX_LIMIT:
            return self.error_body(request, 400, f"limit must be between 1 and {MAX_LIMIT}")
        descending = query.get("orderBy") == "Descending"

        with self._lock:
            feed, now = self._feeds[box.id], self.clock()
            events = feed.events
            after, after_event = query.get("afterIndexKey"), query.get("afterEventId")
            start = 0
            if after or after_event:
                # Both read strictly after the key: entries sharing it with the one named are skipped.
                found = feed.start_after(index_key=after) if after else feed.start_after(event_id=after_event)
                if found is None:
                    refusal = "cursor must have valid value" if after else "afterEventId is not an event of this box"
                    return self.error_body(request, 400, refusal)
                start = found
            order = _descending(events, start) if descending else range(start, len(events))
            matching = [events[i] for i in order if events[i].visible_at <= now and matches(events[i])]

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
            served = self._feeds[box.id].visible(self.clock())
            if not served:
                return Response(204)
            return Response(200, served[-1].raw, {"Content-Type": "application/x-protobuf"})

    def _get_my_organizations(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        auto_register = request.query.get("autoRegister")
        with self._lock:
            self.organization_requests.append(auto_register)
        if (auto_register or "").lower() != "false":
            # Diadoc's default registers the user in every organisation found and makes it their
            # administrator: refused here, so that a test fails when the parameter is not sent.
            return self.error_body(request, 400, "the simulator answers only autoRegister=false")
        with self._lock:
            titles = {box.id: box.title for box in self.boxes.values()}
            body = organization_list(self.organizations.values(), caller.access, titles)
        return Response(200, body, {"Content-Type": "application/x-protobuf"})

    def _append(
        self, box_id: str, draft: tuple[bytes, str] | pb.BoxEvent, *, key: str | None = None, visible_at: float = 0.0
    ) -> str:
        if isinstance(draft, pb.BoxEvent):
            raw, message_id = draft.SerializeToString(), (draft.Message.MessageId or draft.Patch.MessageId)
        else:
            raw, message_id = draft
        key = key or self.events.index_key()
        message = self.events.message(box_id, message_id)
        return self._feeds[box_id].append(raw, key, message_id, message, visible_at=visible_at)


def _descending(events: list[StoredEvent], start: int) -> range:
    """Newest first: every entry, or (after a key) the entries before the first that shares it."""
    if not start:
        return range(len(events) - 1, -1, -1)
    first = start - 1
    while first > 0 and events[first - 1].index_key == events[start - 1].index_key:
        first -= 1
    return range(first - 1, -1, -1)


def _ticks_of(event: pb.BoxEvent) -> int:
    return event.Message.TimestampTicks if event.HasField("Message") else event.Patch.TimestampTicks


__all__ = ["DiadocSimulator"]


def _distinct_ids(entries: Iterable[StoredEvent], filters: Mapping[str, str]) -> list[str]:
    """The EventIds of the entries that pass GetNewEvents' filters, each once, in feed order."""
    matches = matcher(filters)
    return list(dict.fromkeys(entry.event_id for entry in entries if matches(entry)))
