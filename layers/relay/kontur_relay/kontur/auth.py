"""Credentials for Kontur's APIs, shared by the feeds: fixed headers, and cached tokens (OpenID
Connect's in ``kontur/oidc.py``; each feed package adds its own schemes). Never logged.

Tokens live in the module-level objects built once per Lambda container, so warm invocations reuse
them; they are renewed ahead of expiry and once more on a 401. Two requests refused at once renew
once: each says which token was refused, and only the token still in use is dropped. A token refused
again right after its renewal, before it ever worked, is refused for a reason no renewal mends: the
credential is left alone for a while (``refusals.REFUSAL_BACKOFF``), or until the secret changes.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from kontur_relay.aws.dynamo import iso
from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError
from kontur_relay.kontur.refusals import backoff
from kontur_relay.kontur.token_store import Token
from kontur_relay.observability import logger


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

    def renew(self, refused: Mapping[str, str]) -> bool:
        return False

    def refused(self, headers: Mapping[str, str]) -> None:
        """Nothing to leave alone: a fixed credential is never renewed."""

    def accepted(self, headers: Mapping[str, str]) -> None:
        """Nothing to learn: a fixed credential is never on trial."""


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

    def renew(self, refused: Mapping[str, str]) -> bool:
        fresh = self.build(self.secret.values(fresh=True))
        with self._lock:
            self._headers = fresh
        changed = any(_header(refused, name) != value for name, value in fresh.items())
        if changed:
            logger.info("The credential in the secret changed; trying it")
        return changed

    def refused(self, headers: Mapping[str, str]) -> None:
        """Nothing to leave alone: the secret is read afresh after each 401, no token is asked for."""

    def accepted(self, headers: Mapping[str, str]) -> None:
        """Nothing to learn: no token is asked for."""


class CachedToken:
    """A token obtained when first needed, kept until it is due for renewal, dropped after a 401.

    Subclasses obtain a token (``_obtain``) and say how it is sent (``_headers``). A refusal of a
    fresh token is kept here, for this container (``_refuse``); a subclass may share it instead.
    Only a token that never worked can be refused: one the API has accepted was, when it answers
    401 later, forgotten or expired (a 401 may also come late, after the session's retries of a
    request sent before another renewed the token), and is renewed like any other."""

    def __init__(self, secret: CredentialsSecret, clock: Callable[[], float]) -> None:
        self.secret = secret
        self.clock = clock
        self._token: Token | None = None
        #: Whether the API has accepted the token in use.
        self._worked = False
        self._lock = threading.Lock()
        #: The token the API refused with 401: the next one must be another, read from a fresh secret.
        self._rejected: str | None = None
        self._refusals = 0
        self._refused_until = 0.0
        self._refused_version: str | None = None

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._token is None or self.clock() >= self._token.renew_at:
                self._token = self._obtain(self._rejected)
                self._rejected, self._worked = None, False
            return self._headers(self._token.value)

    def renew(self, refused: Mapping[str, str]) -> bool:
        """After a 401 with ``refused``: drop that token if it is still the one in use (another
        request may have renewed it already; then the retry takes the new one). False: a token got on
        trial after a refusal was refused again, so no retry either."""
        with self._lock:
            if self._token is None or not self._in_use(refused):
                return True
            token, self._token = self._token, None
            if token.trial and not self._worked:
                self._refuse(token.value)
                return False
            self._rejected = token.value
        return True

    def refused(self, headers: Mapping[str, str]) -> None:
        """The token a retry after a 401 was sent with was refused too: unless it had worked, leave
        the credential alone for a while."""
        with self._lock:
            if self._token is not None and self._in_use(headers):
                token, self._token = self._token, None
                if self._worked:
                    self._rejected = token.value
                else:
                    self._refuse(token.value)

    def accepted(self, headers: Mapping[str, str]) -> None:
        """A request sent with ``headers`` was answered: if that is the token in use, it works."""
        if self._worked:  # once a token: the lock only for its first answer
            return
        with self._lock:
            if self._token is not None and self._in_use(headers):
                self._worked = True

    def _in_use(self, sent: Mapping[str, str]) -> bool:
        """Whether ``sent`` carried the token in use (not one since replaced)."""
        assert self._token is not None
        return _header(sent, "Authorization") == self._headers(self._token.value)["Authorization"]

    def _refuse(self, token: str) -> None:
        self._refusals += 1
        self._refused_until = self.clock() + backoff(self._refusals)
        self._refused_version = self.secret.current().version_id
        logger.warning(
            "Kontur refused a fresh token; the next renewal waits for the backoff (none after a first refusal) "
            "or a change of the credentials secret",
            extra={"refusals": self._refusals, "not_before": iso(self._refused_until)},
        )

    def _check_refusal(self) -> bool:
        """Raise FeedAuthError while a refusal holds for the secret as it is; True: on trial after one."""
        if not self._refusals:
            return False
        if self.secret.current().version_id != self._refused_version:
            self._refusals, self._refused_until = 0, 0.0
            return False
        if self.clock() < self._refused_until:
            raise FeedAuthError(
                f"Kontur refused this credential {self._refusals} time(s) in a row; the relay tries again after "
                f"{iso(self._refused_until)}, or as soon as the credentials secret changes"
            )
        return True

    def _obtain(self, rejected: str | None) -> Token:
        raise NotImplementedError

    def _headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError


def _header(headers: Mapping[str, str], wanted: str) -> str | None:
    return next((value for name, value in headers.items() if name.lower() == wanted.lower()), None)
