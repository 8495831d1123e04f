"""Kontur's OpenID Connect identity server, as far as the relay uses it: ``POST /connect/token``.

Grants: ``password`` (a registered user's username and password) and ``refresh_token``. Clients
authenticate with ``client_id``/``client_secret`` in the form or with HTTP Basic. Access tokens are
opaque, short-lived (``token_lifetime``) and checked by other simulators through :meth:`principal`.
Refresh tokens are issued when the scope asks for ``offline_access`` (as IdentityServer does) and on
every refresh; they rotate: each use answers a new one and the old one stops working. A spent one
presented again revokes its whole grant, every refresh token descended from the same sign-in (the
reuse detection OAuth's security best practice asks of identity providers). Behind a gateway, the
provider may redeem a token and the gateway answer 502 (``Fault.after_acting``): the client never
sees the successor, and presenting the spent token again loses the grant.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from local_stack.simulators.base import Request, Response, Simulator

#: What Kontur's clients ask for; a refresh token is issued only with ``offline_access``.
DEFAULT_SCOPE = "extern.api"


@dataclass(frozen=True)
class _Grant:
    user: str
    client_id: str
    scope: str
    expires_at: float
    #: The sign-in the grant descends from: reuse of a spent refresh token revokes all of it.
    family: str = ""


class IdentitySimulator(Simulator):
    name = "identity"

    def __init__(self, *, token_lifetime: int = 3600, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.token_lifetime = token_lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}
        self._clients: dict[str, str | None] = {}
        self._access: dict[str, _Grant] = {}
        self._refresh: dict[str, _Grant] = {}
        #: How many tokens each grant type issued: tests check reuse and renewal with it.
        self.issued: dict[str, int] = {"password": 0, "refresh_token": 0}
        #: How often each refresh token was presented to /connect/token.
        self.presented: Counter[str] = Counter()
        #: Spent refresh tokens and their family, to notice one presented again.
        self._spent: dict[str, str] = {}
        self.route("POST", "/connect/token", self._token)

    @property
    def token_url(self) -> str:
        return f"{self.url}/connect/token"

    # -- Python API for tests and other simulators -------------------------------------------------

    def register_user(self, username: str, password: str) -> None:
        with self._lock:
            self._users[username] = password

    def register_client(self, client_id: str, client_secret: str | None = None) -> None:
        """A client (an integrator: ``client_id`` is its service name, the secret its api-key)."""
        with self._lock:
            self._clients[client_id] = client_secret

    def is_client(self, client_id: str) -> bool:
        with self._lock:
            return client_id in self._clients

    def client_for_api_key(self, api_key: str) -> str | None:
        """The client whose secret (Kontur's api-key) this is, for ``X-Kontur-Apikey``."""
        with self._lock:
            return next((c for c, s in self._clients.items() if s is not None and _same(s, api_key)), None)

    def principal(self, token: str) -> tuple[str, str] | None:
        """(user, client_id) of a live access token; None for unknown or expired ones."""
        with self._lock:
            grant = self._access.get(token)
        if grant is None or self.clock() >= grant.expires_at:
            return None
        return grant.user, grant.client_id

    def issue(self, user: str, client_id: str, *, scope: str = DEFAULT_SCOPE) -> str:
        """An access token without the HTTP round trip (an administrator's token in a test)."""
        with self._lock:
            return self._new_access(_Grant(user, client_id, scope, self.clock() + self.token_lifetime))

    def refresh_token_for(self, user: str, client_id: str, *, scope: str = DEFAULT_SCOPE) -> str:
        """A refresh token as a person's first sign-in would leave it, to seed a credentials secret."""
        with self._lock:
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = _Grant(
                user, client_id, f"{scope} offline_access", self.clock() + self.token_lifetime, secrets.token_hex(8)
            )
            return refresh

    def expire_all(self) -> None:
        """Every access token issued so far stops working now; refresh tokens stay valid."""
        with self._lock:
            self._access.clear()

    def expire_tokens(self) -> None:
        self.expire_all()

    def refresh_token_is_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._refresh

    # -- HTTP --------------------------------------------------------------------------------------

    def error_body(self, request: Request, status: int, message: str) -> Response:
        code = "invalid_client" if status == 401 else "invalid_request" if status < 500 else "server_error"
        return _oauth_error(code, message, status)

    def _token(self, request: Request) -> Response:
        form = request.form()
        client_id, client_secret = _basic_credentials(request.header("Authorization")) or (
            form.get("client_id", ""),
            form.get("client_secret"),
        )
        with self._lock:
            known = client_id in self._clients
            expected = self._clients.get(client_id)
        if not known or (expected is not None and not _same(expected, client_secret or "")):
            return _oauth_error("invalid_client", "unknown client or wrong client secret", 401)

        grant_type = form.get("grant_type", "")
        scope = form.get("scope") or DEFAULT_SCOPE
        if grant_type == "password":
            return self._password(form, client_id, scope)
        if grant_type == "refresh_token":
            return self._refresh_grant(form, client_id)
        if not grant_type:
            return _oauth_error("invalid_request", "grant_type is missing")
        return _oauth_error("unsupported_grant_type", f"grant type {grant_type} is not supported")

    def _password(self, form: dict[str, str], client_id: str, scope: str) -> Response:
        username, password = form.get("username", ""), form.get("password", "")
        if not username or not password:
            return _oauth_error("invalid_request", "username and password are required")
        with self._lock:
            expected = self._users.get(username)
            if expected is None or not _same(expected, password):
                return _oauth_error("invalid_grant", "invalid username or password")
            self.issued["password"] += 1
            grant = _Grant(username, client_id, scope, self.clock() + self.token_lifetime, secrets.token_hex(8))
            body = self._answer(grant, with_refresh="offline_access" in scope.split())
        return Response.json(body, headers={"Cache-Control": "no-store"})

    def _refresh_grant(self, form: dict[str, str], client_id: str) -> Response:
        presented = form.get("refresh_token", "")
        if not presented:
            return _oauth_error("invalid_request", "refresh_token is missing")
        with self._lock:
            self.presented[presented] += 1
            old = self._refresh.get(presented)
            if old is None:
                family = self._spent.get(presented)
                if family is not None:
                    revoked = [token for token, grant in self._refresh.items() if grant.family == family]
                    for token in revoked:
                        del self._refresh[token]
                    return _oauth_error("invalid_grant", "the refresh token was used already: its grant is revoked")
                return _oauth_error("invalid_grant", "the refresh token is unknown, expired or already used")
            if old.client_id != client_id:
                return _oauth_error("invalid_grant", "the refresh token was issued to another client")
            del self._refresh[presented]  # rotation: a refresh token is good for one use
            self._spent[presented] = old.family
            self.issued["refresh_token"] += 1
            grant = _Grant(old.user, client_id, old.scope, self.clock() + self.token_lifetime, old.family)
            body = self._answer(grant, with_refresh=True)
        return Response.json(body, headers={"Cache-Control": "no-store"})

    def _answer(self, grant: _Grant, *, with_refresh: bool) -> dict[str, object]:
        body: dict[str, object] = {
            "access_token": self._new_access(grant),
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": grant.scope,
        }
        if with_refresh:
            refresh = secrets.token_urlsafe(32)
            self._refresh[refresh] = grant
            body["refresh_token"] = refresh
        return body

    def _new_access(self, grant: _Grant) -> str:
        token = secrets.token_urlsafe(32)
        self._access[token] = grant
        return token


def _oauth_error(code: str, description: str, status: int = 400) -> Response:
    return Response.json({"error": code, "error_description": description}, status)


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except ValueError:
        return None
    client_id, _, secret = decoded.partition(":")
    return urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(secret)
