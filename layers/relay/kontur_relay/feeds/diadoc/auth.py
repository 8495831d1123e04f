"""Diadoc's credentials, from the JSON of the Diadoc credentials secret:

- OpenID Connect (current): ``token_url``, ``client_id``, ``client_secret``, ``grant_type`` and the
  grant's fields, as for Extern (:class:`~kontur_relay.kontur.auth.OpenIdConnectTokens`): ``Bearer`` tokens;
- a fixed ``access_token``: ``Bearer`` as is;
- legacy: ``api_client_id`` (ddauth_api_client_id), ``login`` and ``password``: a token from
  ``POST /V3/Authenticate?type=password`` sent as ``DiadocAuth ddauth_api_client_id=..,ddauth_token=..``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError, FeedUnavailable
from kontur_relay.kontur.auth import CachedToken, SecretCredential, secure_url
from kontur_relay.kontur.client import TRANSIENT, Authenticator
from kontur_relay.kontur.oidc import OpenIdConnectTokens
from kontur_relay.kontur.secret_fields import described, field, required, sendable
from kontur_relay.kontur.token_store import Token
from kontur_relay.observability import logger

#: A DiadocAuth token lives 24 hours; it is replaced an hour early, so that none lapses mid-run
#: and a clock running a little behind Diadoc's does not matter.
TOKEN_LIFETIME_SECONDS = 24 * 3600
RENEW_AHEAD_SECONDS = 3600


class DiadocAuthTokens(CachedToken):
    """Legacy DiadocAuth tokens, obtained with login and password, cached, renewed before they expire
    and once after a 401."""

    def __init__(
        self,
        secret: CredentialsSecret,
        http: requests.Session,
        api_url: str,
        *,
        timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(secret, clock)
        self.http = http
        self.url = f"{api_url.rstrip('/')}/V3/Authenticate"
        self.timeout = timeout
        self._client_id: str | None = None
        #: Tokens obtained by this container (for tests and the logs).
        self.obtained = 0

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"DiadocAuth ddauth_api_client_id={self._client_id},ddauth_token={token}"}

    def _obtain(self, rejected: str | None) -> Token:
        trial = self._check_refusal()
        # Fresh after a 401: an operator may have just put a new credential there.
        config = self.secret.values(fresh=rejected is not None)
        missing = [name for name in ("api_client_id", "login", "password") if not field(config, name)]
        if missing:
            raise ConfigurationError(f"the Diadoc credentials secret lacks {', '.join(missing)}")
        client_id = required(config, "api_client_id", header=True)
        try:
            response = self.http.post(
                self.url,
                params={"type": "password"},
                json={"login": required(config, "login"), "password": required(config, "password")},
                headers={"Authorization": f"DiadocAuth ddauth_api_client_id={client_id}"},
                timeout=self.timeout,
                allow_redirects=False,  # the password must not follow a redirect anywhere
            )
        except TRANSIENT as error:
            raise FeedUnavailable(f"Diadoc's Authenticate did not answer: {described(error)}") from error
        except (requests.RequestException, ValueError) as error:
            raise ConfigurationError(f"Diadoc's Authenticate could not be sent: {described(error)}") from None
        code = response.headers.get("X-Diadoc-ErrorCode")
        if response.status_code in (400, 401, 403):
            # The code names the problem (a wrong password, an unknown client id) without the credential.
            raise FeedAuthError("Diadoc refused the login and password", status=response.status_code, error_code=code)
        if response.status_code != 200:
            raise FeedUnavailable("Diadoc's Authenticate failed", status=response.status_code, error_code=code)
        token = response.text.strip()
        if not token or not sendable(token) or "<" in token:
            raise FeedAuthError("Diadoc's Authenticate answered 200 without a token a header can carry")
        self._client_id = client_id
        renew_at = self.clock() + TOKEN_LIFETIME_SECONDS - RENEW_AHEAD_SECONDS
        self.obtained += 1
        logger.info("Obtained a DiadocAuth token", extra={"renew_at": renew_at})
        return Token(token, renew_at, trial=trial)


def diadoc_authenticator(
    secret: CredentialsSecret, http: requests.Session, api_url: str, *, timeout: float = 20.0
) -> Authenticator:
    """The authenticator the secret describes; ``api_url`` is DIADOC_API_URL, where credentials go."""
    secure_url(api_url, "DIADOC_API_URL")
    config: dict[str, Any] = secret.values()
    if config.get("token_url"):
        return OpenIdConnectTokens(secret, http, timeout=timeout)
    if config.get("access_token"):
        return SecretCredential(secret, _bearer)
    if config.get("login") or config.get("api_client_id"):
        return DiadocAuthTokens(secret, http, api_url, timeout=timeout)
    raise ConfigurationError(
        "the Diadoc credentials secret holds none of: token_url (+ client_id, ...) for OpenID Connect, "
        "access_token, or api_client_id + login + password"
    )


def _bearer(config: Mapping[str, Any]) -> dict[str, str]:
    token = field(config, "access_token", header=True)
    if not token:
        raise ConfigurationError("the Diadoc credentials secret no longer holds access_token")
    return {"Authorization": f"Bearer {token}"}
