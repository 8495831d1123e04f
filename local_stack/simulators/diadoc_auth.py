"""Who may call the Diadoc simulator: its users, ``POST /V3/Authenticate``, the ``Bearer`` and
``DiadocAuth`` credentials every route checks, box and department access, and Diadoc's errors (plain
text with ``X-Diadoc-ErrorCode``). :class:`DiadocAuthority` is the part of
:class:`~local_stack.simulators.diadoc.DiadocSimulator` that decides them.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from local_stack.simulators.base import Request, Response, Simulator
from local_stack.simulators.diadoc_events import Box
from local_stack.simulators.identity import IdentitySimulator

_DIADOC_AUTH = re.compile(r"^DiadocAuth\s+(.*)$", re.IGNORECASE)


@dataclass
class User:
    login: str
    password: str
    #: box id → None (the whole box) or the departments the user sees.
    access: dict[str, frozenset[str] | None] = field(default_factory=dict)


class DiadocAuthority(Simulator):
    """The simulator's users, tokens and API clients, and the checks and errors built on them."""

    identity: IdentitySimulator | None
    clock: Callable[[], float]
    token_lifetime: int
    users: dict[str, User]
    api_clients: set[str]
    authentications: int
    _tokens: dict[str, tuple[str, float]]
    _lock: threading.RLock

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


def _diadoc_auth(header: str | None) -> dict[str, str]:
    """The ``name=value`` pairs of a ``DiadocAuth`` header."""
    match = _DIADOC_AUTH.match(header or "")
    if match is None:
        return {}
    pairs = (part.strip().partition("=") for part in match.group(1).split(","))
    return {name.strip(): value.strip() for name, _, value in pairs if name.strip()}
