"""Credentials for Kontur's APIs, shared by the feeds: fixed headers, and cached tokens (OpenID
Connect's here; each feed package adds its own schemes). Never logged.

Tokens live in the module-level objects built once per Lambda container, so warm invocations reuse
them; they are renewed ahead of expiry and once more on a 401, after reading the secret afresh (an
operator may have just put a new credential there). A rotating refresh token is renewed by one
container at a time and shared through the secret (``kontur/refresh.py``).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import requests

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError, FeedUnavailable
from kontur_relay.kontur.client import TRANSIENT
from kontur_relay.kontur.refresh import SharedRefresh
from kontur_relay.kontur.secret_fields import described, field, required, sendable
from kontur_relay.observability import logger

#: Renew this long before the token's own expiry, so that no request carries a token about to lapse;
#: a token that lives shorter is renewed once half its life is gone, not before every request.
RENEW_AHEAD_SECONDS = 120


def secure_url(url: str, where: str) -> str:
    """``url`` if credentials may be sent to it: https, or plain http to this machine (the local
    stack's simulators). Anything else is refused before a credential could travel in clear."""
    parsed = urllib.parse.urlsplit(url)
    local = parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost", "::1")
    if not (parsed.scheme == "https" and parsed.hostname) and not local:
        raise ConfigurationError(f"{where} must be an https:// URL (http only to 127.0.0.1 or localhost), not {url!r}")
    return url


class StaticCredential:
    """A fixed header set (an access token or a legacy session id); a 401 cannot be mended here."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = dict(headers)

    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    def renew(self) -> bool:
        return False


class SecretCredential:
    """A fixed header set built from the secret (a static token, a legacy session id) when first
    needed, so that a field it cannot send fails a run, recorded on the feed, not the container's start.
    After a 401 the secret is read afresh: when someone replaced the credential, the request is tried
    with the new one."""

    def __init__(self, secret: CredentialsSecret, build: Callable[[Mapping[str, Any]], dict[str, str]]) -> None:
        self.secret = secret
        self.build = build
        self._headers: dict[str, str] | None = None
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._headers is None:
                self._headers = self.build(self.secret.values())
            return dict(self._headers)

    def renew(self) -> bool:
        fresh = self.build(self.secret.values(fresh=True))
        with self._lock:
            changed, self._headers = fresh != self._headers, fresh
        if changed:
            logger.info("The credential in the secret changed; trying it")
        return changed


class CachedToken:
    """A token obtained when first needed, kept until it is due for renewal, dropped after a 401.

    Subclasses obtain the token (setting ``_token`` and ``_renew_at``) and say how it is sent."""

    def __init__(self, secret: CredentialsSecret, clock: Callable[[], float]) -> None:
        self.secret = secret
        self.clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()
        #: The token the API refused with 401, and that the next read of the secret must be fresh.
        self._rejected: str | None = None
        self._reread = False

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._obtain()
            assert self._token is not None
            return self._headers(self._token)

    def renew(self) -> bool:
        with self._lock:
            self._rejected, self._token, self._reread = self._token, None, True
        return True

    def _config(self) -> dict[str, Any]:
        """The secret's values: cached, except right after a 401."""
        reread, self._reread = self._reread, False
        return self.secret.values(fresh=reread)

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
        super().__init__(secret, clock)
        self.http = http
        self.timeout = timeout
        self._api_key: str | None = None
        # Waiting for another container's renewal: three of this client's request timeouts at most
        # (15 s for the admin API's 5 s, inside API Gateway's 29 s), 30 s for a poller.
        self._shared = SharedRefresh(secret, self._redeem, max_wait=min(30.0, 3 * timeout), clock=clock)

    def _headers(self, token: str) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if self._api_key:
            headers["X-Kontur-Apikey"] = self._api_key
        return headers

    def _obtain(self) -> None:
        config = self._config()
        check(config)
        self._api_key = field(config, "api_key", header=True)
        refresh = field(config, "refresh_token")
        grant = field(config, "grant_type") or ("refresh_token" if refresh else "password")
        if grant == "refresh_token" and refresh:
            shared = self._shared.token(self._rejected)
            if shared is not None:
                self._token, self._renew_at, self._rejected = shared.value, shared.renew_at, None
                return
            if not (field(config, "username") and field(config, "password")):
                why = "the identity provider refused the refresh_token grant"
                if self._shared.interrupted:
                    why = (
                        "the refresh token was refused after an interrupted renewal (its successor was never "
                        "written back): put a fresh refresh_token into the credentials secret"
                    )
                raise FeedAuthError(why, status=400)
            logger.warning("The refresh token was refused; falling back to the password grant")
        elif grant != "password":
            raise ConfigurationError(f"grant_type {grant!r} needs fields the credentials secret does not have")
        answer = self._password_grant(config)
        if answer is None:
            raise FeedAuthError("the identity provider refused the password grant", status=400)
        token = answer.get("access_token")
        if not isinstance(token, str) or not sendable(token):
            raise FeedAuthError("the identity provider's answer has no access_token a header can carry")
        lifetime = float(answer.get("expires_in") or 3600)
        self._token, self._rejected = token, None
        self._renew_at = self.clock() + lifetime - min(RENEW_AHEAD_SECONDS, lifetime / 2)

    def _redeem(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """One presentation of the (claimed) refresh token; its successor is the caller's to save."""
        check(config)
        return self._request(
            config, {"grant_type": "refresh_token", "refresh_token": required(config, "refresh_token")}
        )

    def _password_grant(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
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
        try:
            # No redirects: a 307 would resend the client secret and the grant to wherever it points.
            response = self.http.post(
                required(config, "token_url"), data=form, timeout=self.timeout, allow_redirects=False
            )
        except TRANSIENT as error:
            raise FeedUnavailable(f"the token endpoint did not answer: {described(error)}") from error
        except (requests.RequestException, ValueError) as error:
            raise ConfigurationError(f"the token request could not be sent: {described(error)}") from None
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


def check(config: Mapping[str, Any]) -> None:
    """The OpenID Connect fields every grant needs, and a token_url credentials may go to."""
    missing = [name for name in ("token_url", "client_id") if not field(config, name)]
    if missing:
        raise ConfigurationError(f"the credentials secret lacks {', '.join(missing)}")
    secure_url(required(config, "token_url"), "token_url in the credentials secret")


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
