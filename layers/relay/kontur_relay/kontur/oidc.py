"""Bearer tokens from an OpenID Connect token endpoint (``password`` or ``refresh_token`` grant),
the same for every container of a deployment: renewed under one lock, shared through the token
item beside the secret (``kontur/refresh.py``).

One token request is one presentation of a grant: it is not retried once it may have been acted on
(``kontur/session.py``), and an answer that says nothing of what became of it is RedemptionUnknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
import urllib3

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError, FeedUnavailable
from kontur_relay.kontur.auth import CachedToken, secure_url
from kontur_relay.kontur.client import TRANSIENT
from kontur_relay.kontur.refresh import RedemptionUnknown, SharedTokens
from kontur_relay.kontur.secret_fields import described, field, required, sendable
from kontur_relay.kontur.session import REFUSED_BEFORE, longest_request
from kontur_relay.kontur.token_store import MemoryTokenStore, Token
from kontur_relay.observability import logger

#: The lock outlives the longest token request by this much: time to save what it got.
LOCK_MARGIN_SECONDS = 60.0


class OpenIdConnectTokens(CachedToken):
    """The deployment's shared Bearer token for the credentials in ``secret``."""

    def __init__(
        self,
        secret: CredentialsSecret,
        http: requests.Session,
        *,
        timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(secret, clock)
        self.http = http
        self.timeout = timeout
        self._api_key: str | None = None
        store = secret.tokens if secret.tokens is not None else MemoryTokenStore(clock=clock)
        self._shared = SharedTokens(
            secret,
            store,
            self._grant,
            lock_seconds=longest_request(http, timeout) + LOCK_MARGIN_SECONDS,
            # Waiting for another container's renewal: three of this client's request timeouts at
            # most (15 s for the admin API's 5 s, inside API Gateway's 29 s), 30 s for a poller.
            max_wait=min(30.0, 3 * timeout),
            clock=clock,
        )

    @property
    def lock_seconds(self) -> float:
        return self._shared.lock_seconds

    def _headers(self, token: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if self._api_key:
            headers["X-Kontur-Apikey"] = self._api_key
        return headers

    def _obtain(self, rejected: str | None) -> Token:
        # Fresh after a 401: an operator may have just put a new credential there.
        config = self.secret.values(fresh=rejected is not None)
        check(config)
        self._api_key = field(config, "api_key", header=True)
        token = self._shared.token(rejected)
        if not sendable(token.value):
            raise FeedAuthError("the identity provider's access_token cannot be sent in a header")
        return token

    def _refuse(self, token: str) -> None:
        self._shared.refuse(token)

    def _grant(self, config: Mapping[str, Any], refresh: str | None) -> dict[str, Any] | None:
        check(config)
        if refresh is not None:
            return self._request(config, {"grant_type": "refresh_token", "refresh_token": refresh})
        grant = field(config, "grant_type") or "password"
        if grant not in ("password", "refresh_token"):
            raise ConfigurationError(f"grant_type {grant!r} is not one the relay can use: password or refresh_token")
        username, password = field(config, "username"), field(config, "password")
        if not (username and password):
            raise ConfigurationError("the password grant needs username and password in the credentials secret")
        return self._request(config, {"grant_type": "password", "username": username, "password": password})

    def _request(self, config: Mapping[str, Any], grant: dict[str, str]) -> dict[str, Any] | None:
        """The token endpoint's JSON, or None when it refused the grant (400/401)."""
        form = {**grant, "client_id": required(config, "client_id")}
        for name in ("client_secret", "scope"):
            value = field(config, name)
            if value:
                form[name] = value
        url = required(config, "token_url")
        try:
            # No redirects: a 307 would resend the client secret and the grant to wherever it points.
            response = self.http.post(url, data=form, timeout=self.timeout, allow_redirects=False)
        except TRANSIENT as error:
            what = described(error)
            if _never_sent(error):
                raise FeedUnavailable(f"the token endpoint could not be reached: {what}") from error
            raise RedemptionUnknown(f"the token endpoint's answer was lost: {what}") from error
        except (requests.RequestException, ValueError) as error:
            raise ConfigurationError(f"the token request could not be sent: {described(error)}") from None
        status = response.status_code
        if status in (400, 401):
            body = _json_or_empty(response)
            # OAuth error codes and descriptions name the problem without echoing the credential.
            logger.warning(
                "The token endpoint refused a grant",
                extra={
                    "grant_type": grant["grant_type"],
                    "error": body.get("error"),
                    "error_description": body.get("error_description"),
                },
            )
            return None
        if status >= 500 and status not in REFUSED_BEFORE:
            raise RedemptionUnknown(
                f"the token endpoint answered {status}; it may have acted on the grant", status=status
            )
        if status != 200:
            raise FeedUnavailable(f"the token endpoint answered {status}", status=status)
        body = _json_or_empty(response)
        if not body:
            raise FeedAuthError("the token endpoint answered 200 without a JSON object")
        return body


def check(config: Mapping[str, Any]) -> None:
    """The OpenID Connect fields every grant needs, and a token_url credentials may go to."""
    missing = [name for name in ("token_url", "client_id") if not field(config, name)]
    if missing:
        raise ConfigurationError(f"the credentials secret lacks {', '.join(missing)}")
    secure_url(required(config, "token_url"), "token_url in the credentials secret")


def _never_sent(error: Exception) -> bool:
    """The connection was never made, so the endpoint never saw the grant."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    # urllib3 makes a refused connection (NewConnectionError) a ConnectTimeoutError too.
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
