"""Extern's credentials, from the JSON of the Extern credentials secret:

- OpenID Connect: ``token_url``, ``client_id``, ``client_secret``, ``grant_type`` (``password`` or
  ``refresh_token``), ``username``/``password`` or ``refresh_token``, ``scope``; optional ``api_key``;
- a static ``access_token`` (optional ``api_key``);
- the legacy ``sid`` + ``api_key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.kontur.auth import SecretCredential
from kontur_relay.kontur.client import Authenticator
from kontur_relay.kontur.oidc import OpenIdConnectTokens
from kontur_relay.kontur.secret_fields import field


def extern_authenticator(secret: CredentialsSecret, http: requests.Session, *, timeout: float = 20.0) -> Authenticator:
    """The authenticator the secret describes."""
    config = secret.values()
    if config.get("access_token") or config.get("sid"):
        return SecretCredential(secret, _fixed_headers)
    return OpenIdConnectTokens(secret, http, timeout=timeout)


def _fixed_headers(config: Mapping[str, Any]) -> dict[str, str]:
    api_key = field(config, "api_key", header=True)
    access_token, sid = field(config, "access_token", header=True), field(config, "sid", header=True)
    if access_token:
        headers = {"Authorization": f"Bearer {access_token}"}
    elif sid:
        if not api_key:
            raise ConfigurationError("the legacy auth.sid scheme needs api_key in the credentials secret")
        headers = {"Authorization": f"auth.sid {sid}"}
    else:
        raise ConfigurationError("the credentials secret no longer holds access_token or sid")
    if api_key:
        headers["X-Kontur-Apikey"] = api_key
    return headers
