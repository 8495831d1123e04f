"""Credentials for Kontur's APIs, shared by the feeds: fixed headers, and cached tokens (OpenID
Connect's here; each feed package adds its own schemes). Never logged.

Tokens live in the module-level objects built once per Lambda container, so warm invocations reuse
them; they are renewed ahead of expiry and once more on a 401.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError, FeedUnavailable
from kontur_relay.kontur.client import TRANSIENT
from kontur_relay.observability import logger

#: Renew this long before the token's own expiry, so that no request carries a token about to lapse;
#: a token that lives shorter is renewed once half its life is gone, not before every request.
RENEW_AHEAD_SECONDS = 120


class StaticCredential:
    """A fixed header set (an access token or a legacy session id); a 401 cannot be mended here."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    def renew(self) -> bool:
        return False


class CachedToken:
    """A token obtained when first needed, kept until it is due for renewal, dropped after a 401.

    Subclasses obtain the token (setting ``_token`` and ``_renew_at``) and say how it is sent."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._obtain()
            assert self._token is not None
            return self._headers(self._token)

    def renew(self) -> bool:
        with self._lock:
            self._token = None
        return True

    def _obtain(self) -> None:
        raise NotImplementedError

    def _headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError


class OpenIdConnectTokens(CachedToken):
    """Bearer tokens from an OpenID Connect token endpoint (``password`` or ``refresh_token`` grant)."""

    def __init__(
        self,
        secret: CredentialsSecret,
        http: requests.Session,
        *,
        timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.secret = secret
        self.http = http
        self.timeout = timeout
        self._api_key: str | None = None

    def _headers(self, token: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if self._api_key:
            headers["X-Kontur-Apikey"] = self._api_key
        return headers

    def _obtain(self) -> None:
        config = self.secret.values()
        missing = [name for name in ("token_url", "client_id") if not config.get(name)]
        if missing:
            raise ConfigurationError(f"the credentials secret lacks {', '.join(missing)}")
        self._api_key = config.get("api_key")
        grant = config.get("grant_type") or ("refresh_token" if config.get("refresh_token") else "password")
        if grant == "refresh_token" and config.get("refresh_token"):
            answer = self._request(config, {"grant_type": "refresh_token", "refresh_token": config["refresh_token"]})
            if answer is None and config.get("username") and config.get("password"):
                logger.warning("The refresh token was refused; falling back to the password grant")
                answer = self._password_grant(config)
        elif grant == "password":
            answer = self._password_grant(config)
        else:
            raise ConfigurationError(f"grant_type {grant!r} needs fields the credentials secret does not have")
        if answer is None:
            raise FeedAuthError(f"the identity provider refused the {grant} grant", status=400)

        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise FeedAuthError("the identity provider's answer has no access_token")
        self._token = token
        lifetime = float(answer.get("expires_in") or 3600)
        self._renew_at = self.clock() + lifetime - min(RENEW_AHEAD_SECONDS, lifetime / 2)
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != config.get("refresh_token"):
            # Refresh tokens may be single-use: the newest must survive this container.
            self.secret.update({"refresh_token": rotated})

    def _password_grant(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        if not (config.get("username") and config.get("password")):
            raise ConfigurationError("the password grant needs username and password in the credentials secret")
        return self._request(
            config, {"grant_type": "password", "username": config["username"], "password": config["password"]}
        )

    def _request(self, config: Mapping[str, Any], grant: dict[str, str]) -> dict[str, Any] | None:
        """The token endpoint's JSON, or None when it refused the grant (400/401)."""
        form = {**grant, "client_id": config["client_id"]}
        if config.get("client_secret"):
            form["client_secret"] = config["client_secret"]
        if config.get("scope"):
            form["scope"] = config["scope"]
        try:
            response = self.http.post(config["token_url"], data=form, timeout=self.timeout)
        except TRANSIENT as error:
            raise FeedUnavailable(f"the token endpoint did not answer: {type(error).__name__}") from error
        if response.status_code in (400, 401):
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
        if response.status_code != 200:
            raise FeedUnavailable(f"the token endpoint answered {response.status_code}", status=response.status_code)
        body = _json_or_empty(response)
        if not body:
            raise FeedAuthError("the token endpoint answered 200 without a JSON object")
        return body


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
