"""Kontur.Extern's events API, after /work/shared/docs/extern-events-api.md (the repo's docs say the same).

- ``GET /v1/events?fromId=&take=`` (``batchSize`` is the old name of ``take``): a page of the
  append-only log, filtered to the accounts that shared their events with the calling integrator
  (the token's ``client_id``). Ids are ``<hex offset>_<hex length>``; ``next-event-id`` names the
  next log entry, and reading from it returns that entry first. When the log is exhausted it is
  the position after the last entry, ``<hex end>_0``. ``legacy_last_event_id`` makes an old server
  that answers ``last-event-id`` (the last event returned, which the next read returns again).
- ``POST /v1/{accountId}/share-events``, with the account administrator's own token, makes the
  account a *publisher* for a subscriber (a registered client_id), optionally filtered by docflow
  types and document forms. Events appended from then on are in the subscriber's feed.
- ``GET /v1/event-publishers`` and ``DELETE /v1/event-publishers/{publisherId}``: the integrator's
  view of its publishers; a deleted publisher's events, even those already logged, leave the feed.

Auth: ``Bearer`` tokens from the :class:`IdentitySimulator` (``X-Kontur-Apikey`` optional), or the
legacy ``auth.sid <sid>`` with ``X-Kontur-Apikey``. Every answer has ``X-Kontur-Trace-Id``; errors
have Kontur's JSON body. Traffic comes from ``extern_events``: a backlog, then ``advance()``
ticks (a trickle with bursts), by hand or from a background thread.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import secrets
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from local_stack.simulators.base import Request, Response, Simulator
from local_stack.simulators.extern_events import Account, Docflow, DocflowGenerator
from local_stack.simulators.extern_sharing import Entry, Publisher, parse_events_filter
from local_stack.simulators.identity import IdentitySimulator

#: The cursor of a feed read from its very beginning.
START = "0_0"
#: Administrators get their tokens through Extern's own front end, a client of its own.
ADMIN_CLIENT = "kontur.extern.web"
EVENT_ID = re.compile(r"^([0-9a-fA-F]+)_([0-9a-fA-F]+)$")
DEFAULT_TAKE = 100


# -- the simulator --------------------------------------------------------------------------------


class ExternSimulator(Simulator):
    name = "extern"

    def __init__(
        self,
        identity: IdentitySimulator,
        *,
        seed: int = 0,
        legacy_last_event_id: bool = False,
        empty_page_next_id: str = "position",
        max_take: int | None = None,
        link_base: str = "https://extern-api.testkontur.ru",
        realtime_dates: bool = False,
    ) -> None:
        """``empty_page_next_id``: what an empty page says next (the doc does not tell):
        ``position`` (the end of the log), ``missing`` (no key) or ``null``.
        ``max_take``: a larger ``take`` is silently capped, as a server with a limit might do."""
        super().__init__()
        if empty_page_next_id not in ("position", "missing", "null"):
            raise ValueError("empty_page_next_id is position, missing or null")
        self.identity = identity
        self.rng = random.Random(seed)
        self.legacy_last_event_id = legacy_last_event_id
        self.empty_page_next_id = empty_page_next_id
        self.max_take = max_take
        self.link_base = link_base.rstrip("/")
        self.accounts: dict[str, Account] = {}
        self.publishers: dict[str, Publisher] = {}
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._end = 0
        self._sessions: dict[str, str] = {}
        self._enabled: set[str] = set()
        self.docflows = DocflowGenerator(self.rng, link_base=self.link_base, realtime_dates=realtime_dates)
        self._lock = threading.RLock()
        identity.register_client(ADMIN_CLIENT)

        self.route("GET", "/v1/events", self._read_events)
        self.route("POST", "/v1/{accountId}/share-events", self._share_events)
        self.route("GET", "/v1/event-publishers", self._list_publishers)
        self.route("DELETE", "/v1/event-publishers/{publisherId}", self._delete_publisher)

    # -- setup ------------------------------------------------------------------------------------

    def add_integrator(self, client_id: str, api_key: str, *, username: str, password: str) -> None:
        """An integrator whose feed Kontur switched on: a client (api-key as its secret) and the
        service user its tokens belong to."""
        self.identity.register_client(client_id, api_key)
        self.identity.register_user(username, password)
        with self._lock:
            self._enabled.add(client_id)

    def add_account(self, organisations: int = 2) -> Account:
        """An account with organisations and an administrator registered in the identity simulator."""
        with self._lock:
            number = len(self.accounts) + 1
            account = Account(
                id=self.docflows.guid(),
                admin=f"admin{number}@org{number}.example",
                password=secrets.token_urlsafe(12),
                organisations=tuple(self.docflows.organisation() for _ in range(organisations)),
            )
            self.accounts[account.id] = account
        self.identity.register_user(account.admin, account.password)
        return account

    def admin_token(self, account: Account) -> str:
        """The administrator's own access token, as Extern's web front end would hold it."""
        return self.identity.issue(account.admin, ADMIN_CLIENT)

    def session(self, user: str) -> str:
        """A legacy ``auth.sid`` for ``user``."""
        sid = secrets.token_hex(16)
        with self._lock:
            self._sessions[sid] = user
        return sid

    def share(
        self,
        account: Account,
        subscriber: str,
        *,
        docflow_types: Iterable[str] | None = None,
        document_forms: Iterable[tuple[str | None, str | None]] | None = None,
    ) -> Publisher:
        """What ``share-events`` does: sharing again replaces the filter of the same publisher."""
        with self._lock:
            types = frozenset(docflow_types) if docflow_types is not None else None
            forms = tuple(document_forms) if document_forms is not None else None
            for publisher in self.publishers.values():
                if publisher.account_id == account.id and publisher.subscriber == subscriber:
                    if not publisher.active:
                        publisher.active, publisher.since = True, self._end
                    publisher.docflow_types, publisher.forms = types, forms
                    return publisher
            publisher = Publisher(
                id=f"ep-{self.rng.getrandbits(64):016x}",
                account_id=account.id,
                subscriber=subscriber,
                shared_by=account.admin,
                docflow_types=types,
                forms=forms,
                since=self._end,
                created=self.docflows.timestamp(self.docflows.now()),
            )
            self.publishers[publisher.id] = publisher
            return publisher

    def setup(self, integrator: str, *, accounts: int = 3, backlog: int = 0) -> list[Account]:
        """``accounts`` accounts sharing everything with ``integrator``, then ``backlog`` events."""
        created = [self.add_account(organisations=1 + self.rng.randrange(3)) for _ in range(accounts)]
        for account in created:
            self.share(account, integrator)
        self.generate(backlog)
        return created

    # -- traffic ----------------------------------------------------------------------------------

    def generate(self, count: int) -> list[str]:
        """Append ``count`` events of the accounts' docflows to the log; their ids, in log order."""
        with self._lock:
            if count and not self.accounts:
                raise RuntimeError("add an account before generating events")
            return [self._append(self.docflows.next_event(self.accounts)) for _ in range(count)]

    def advance(self) -> int:
        """One tick of steady traffic: mostly a few events, now and then a burst (a filing deadline)."""
        with self._lock:
            burst = self.rng.random() < 0.05
            count = self.rng.randint(20, 150) if burst else self.rng.choice((0, 0, 1, 1, 2, 3))
            self.generate(count)
        return count

    def events_visible_to(self, client_id: str) -> list[str]:
        """The ids, in feed order, that every relay of ``client_id`` must eventually publish."""
        with self._lock:
            return [entry.id for entry in self._entries if self._visible(entry, client_id)]

    @property
    def end_id(self) -> str:
        """The ``next-event-id`` of a reader that has read everything: the position after the log."""
        with self._lock:
            return f"{self._end:x}_0"

    def event(self, event_id: str) -> dict[str, Any]:
        with self._lock:
            offset = int(event_id.split("_", 1)[0], 16)
            return dict(self._entries[bisect.bisect_left(self._offsets, offset)].event)

    def expire_tokens(self) -> None:
        self.identity.expire_all()

    # -- HTTP: the four methods -------------------------------------------------------------------

    def _read_events(self, request: Request) -> Response:
        caller = self._authenticate(request)
        if isinstance(caller, Response):
            return caller
        _, client_id = caller
        with self._lock:
            enabled = client_id in self._enabled
        if not enabled:
            return self._error(request, 403, "events:feed-not-enabled", f"the events feed is off for {client_id}")

        raw_take = request.query.get("take", request.query.get("batchSize", str(DEFAULT_TAKE)))
        try:
            take = int(raw_take)
        except ValueError:
            return self._error(request, 400, "invalid-parameter", "take is not an integer", {"take": raw_take})
        if take <= 0:
            return self._error(request, 400, "invalid-parameter", "take must be positive", {"take": raw_take})
        from_id = request.query.get("fromId") or START

        with self._lock:
            index = self._index_of(from_id)
            if index is None:
                return self._error(
                    request,
                    400,
                    "events:invalid-event-id",
                    f"{from_id} is not an event id of this feed",
                    {"fromId": from_id},
                )
            page: list[Entry] = []
            position = index
            limit = min(take, self.max_take) if self.max_take else take
            while position < len(self._entries) and len(page) < limit:
                if self._visible(self._entries[position], client_id):
                    page.append(self._entries[position])
                position += 1
            following = self._entries[position].id if position < len(self._entries) else f"{self._end:x}_0"

        body: dict[str, Any] = {"first-event-id": page[0].id if page else from_id}
        if self.legacy_last_event_id:
            body["last-event-id"] = page[-1].id if page else (from_id if from_id != START else None)
        elif page or self.empty_page_next_id == "position":
            body["next-event-id"] = following
        elif self.empty_page_next_id == "null":
            body["next-event-id"] = None
        body["requested-count"] = take
        body["returned-count"] = len(page)
        body["api-events"] = [dict(entry.event) for entry in page]
        body["links"] = []
        return Response.json(body)

    def _share_events(self, request: Request) -> Response:  # noqa: PLR0911 - one answer per rule
        caller = self._authenticate(request)
        if isinstance(caller, Response):
            return caller
        user, _ = caller
        account = self.accounts.get(request.params["accountId"])
        if account is None:
            return self._error(request, 404, "accounts:not-found", f"no account {request.params['accountId']}")
        if user != account.admin:
            return self._error(request, 403, "forbidden", "only the account's administrator can share its events")
        if not request.body.strip():
            return self._error(request, 400, "invalid-request-body", "the request body is empty")
        try:
            body = request.json()
        except ValueError:
            return self._error(request, 400, "invalid-request-body", "the request body is not JSON")
        if not isinstance(body, dict):
            return self._error(request, 400, "invalid-request-body", "the request body is not a JSON object")
        subscriber = body.get("subscriber")
        if not isinstance(subscriber, str) or not subscriber.strip():
            return self._error(request, 400, "events:invalid-subscriber", "subscriber is required")
        if subscriber == ADMIN_CLIENT or not self.identity.is_client(subscriber):
            return self._error(
                request,
                400,
                "events:invalid-subscriber",
                f"{subscriber} is not a registered client",
                {"subscriber": subscriber},
            )
        try:
            types, forms = parse_events_filter(body.get("events-filter"))
        except ValueError as problem:
            return self._error(request, 400, "invalid-request-body", f"events-filter: {problem}")
        publisher = self.share(account, subscriber, docflow_types=types, document_forms=forms)
        return Response.json(publisher.as_json(self.accounts))

    def _list_publishers(self, request: Request) -> Response:
        caller = self._authenticate(request)
        if isinstance(caller, Response):
            return caller
        _, client_id = caller
        with self._lock:
            mine = [
                p.as_json(self.accounts) for p in self.publishers.values() if p.active and p.subscriber == client_id
            ]
        return Response.json({"publishers": mine, "total-count": len(mine)})

    def _delete_publisher(self, request: Request) -> Response:
        caller = self._authenticate(request)
        if isinstance(caller, Response):
            return caller
        _, client_id = caller
        with self._lock:
            publisher = self.publishers.get(request.params["publisherId"])
            if publisher is None or not publisher.active or publisher.subscriber != client_id:
                return self._error(request, 404, "not-found", f"no publisher {request.params['publisherId']}")
            publisher.active = False
        return Response(204)

    # -- HTTP: auth, errors, headers --------------------------------------------------------------

    def _authenticate(self, request: Request) -> tuple[str, str] | Response:  # noqa: PLR0911 - one per case
        """(user, client_id) of the caller, or the 401 to answer."""
        scheme, _, credential = (request.header("Authorization") or "").partition(" ")
        credential = credential.strip()
        api_key = request.header("X-Kontur-Apikey")
        key_client = self.identity.client_for_api_key(api_key) if api_key else None
        if api_key and key_client is None:
            return self._error(request, 401, "unauthorized", "the api key is not valid")
        if scheme.lower() == "bearer" and credential:
            principal = self.identity.principal(credential)
            if principal is None:
                return self._error(request, 401, "unauthorized", "the access token is invalid or expired")
            return principal
        if scheme.lower() == "auth.sid" and credential:
            with self._lock:
                user = self._sessions.get(credential)
            if key_client is None:
                return self._error(request, 401, "unauthorized", "auth.sid needs an X-Kontur-Apikey header")
            if user is None:
                return self._error(request, 401, "unauthorized", "the session is invalid or expired")
            return user, key_client
        return self._error(request, 401, "unauthorized", "no Bearer token or auth.sid in Authorization")

    def error_body(self, request: Request, status: int, message: str) -> Response:
        code = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed"}.get(status)
        code = code or (
            "too-many-requests" if status == 429 else "internal-server-error" if status >= 500 else "bad-request"
        )
        return self._error(request, status, code, message)

    def _error(
        self, request: Request, status: int, code: str, message: str, properties: dict[str, Any] | None = None
    ) -> Response:
        body = {
            "id": f"urn:error:{code}",
            "status-code": status,
            "message": message,
            "trace-id": _trace_id(request),
            "properties": properties or {},
        }
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return Response.json(body, status, headers)

    def response_headers(self, request: Request) -> dict[str, str]:
        return {"X-Kontur-Trace-Id": _trace_id(request)}

    # -- the log ----------------------------------------------------------------------------------

    def _visible(self, entry: Entry, client_id: str) -> bool:
        return any(p.subscriber == client_id and p.covers(entry) for p in self.publishers.values())

    def _index_of(self, event_id: str) -> int | None:
        """Where reading from ``event_id`` starts: an entry's id, or ``<offset>_0`` at an entry or the end."""
        if event_id == START:
            return 0
        match = EVENT_ID.match(event_id)
        if match is None:
            return None
        offset, length = int(match.group(1), 16), int(match.group(2), 16)
        if offset == self._end and length == 0:
            return len(self._entries)
        index = bisect.bisect_left(self._offsets, offset)
        if index < len(self._entries) and self._offsets[index] == offset and length in (0, self._entries[index].length):
            return index
        return None

    def _append(self, draft: tuple[Account, Docflow, dict[str, Any]]) -> str:
        account, docflow, event = draft
        body = json.dumps(event, ensure_ascii=False).encode()
        entry_id = f"{self._end:x}_{len(body):x}"
        entry = Entry(self._end, len(body), account.id, docflow.kind.type, docflow.form, {"id": entry_id, **event})
        self._entries.append(entry)
        self._offsets.append(self._end)
        self._end += len(body)
        return entry_id


def _trace_id(request: Request) -> str:
    return str(request.context.setdefault("trace_id", uuid.uuid4().hex))


__all__ = ["ADMIN_CLIENT", "START", "ExternSimulator"]
