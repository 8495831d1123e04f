"""One redemption of a single-use refresh token at a time, across every container and function
that shares the credentials secret.

A rotating refresh token works once: a second container presenting it gets ``invalid_grant`` (and
some identity providers then revoke the whole grant). So a container renews only after claiming the
secret, and the winner shares what it got through the secret:

    container A                         the secret (AWSCURRENT)            container B
    read V0 (refresh R0)                V0: R0                             read V0 (refresh R0)
    claim V0 -> V1 (lock until t+90)    V1: R0, lock                       claim V0 -> fails: V0 is not current
    POST refresh_token=R0 -> R1, T1                                        re-read V1: locked, wait
    write V2 (R1, shared T1, no lock)   V2: R1, T1                         re-read V2: T1 is fresh, use it
    use T1

The claim is Secrets Manager's compare-and-swap (``CredentialsSecret.claim``). The write-back is
unconditional: whatever a redemption returned is the only live refresh token there is, so it must
become current whoever else wrote meanwhile.

What remains: if the process dies after the identity provider answered and before the write-back
landed (or the answer is lost on the wire), R1 and T1 die with it and the secret holds R0, already
spent, under a lock. Once the lock lapses (``LOCK_SECONDS``) the next container takes over, is
refused, and falls back to the password grant when the secret has username and password; otherwise
the run fails with ``feed_auth`` saying that a renewal was interrupted and a fresh refresh token must
be put into the secret. No write order can close this window: the new token exists only after the
answer, and only in this process, until the write lands.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kontur_relay.aws.secrets import CredentialsSecret, SecretVersion
from kontur_relay.domain.errors import FeedAuthError, FeedUnavailable
from kontur_relay.observability import logger

#: The access token the last renewal got, for every container: {"token", "renew_at"}.
SHARED_TOKEN = "relay_access_token"  # noqa: S105 - a key of the secret, not a credential
#: A renewal under way: {"until": epoch seconds}. Longer than a token request with its retries.
LOCK = "relay_refresh_lock"
LOCK_SECONDS = 90.0


#: Renew this long before a token's expiry, or once half its life is gone when it lives shorter.
RENEW_AHEAD_SECONDS = 120


@dataclass(frozen=True)
class Token:
    value: str
    #: When a container should stop using it and renew (epoch seconds).
    renew_at: float


#: Redeems the refresh token in the given secret values: the token endpoint's JSON, or None if refused.
Redeem = Callable[[Mapping[str, Any]], "dict[str, Any] | None"]


class SharedRefresh:
    """Gets an access token through the secret: the one another container shared, or a renewal this
    container won the claim for."""

    def __init__(
        self,
        secret: CredentialsSecret,
        redeem: Redeem,
        *,
        max_wait: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.secret = secret
        self.redeem = redeem
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep
        #: A renewal whose write-back failed: written before anything else is tried.
        self._unsaved: dict[str, Any] | None = None
        #: The last renewal took over from one that never finished (its lock lapsed).
        self.interrupted = False

    def token(self, rejected: str | None = None) -> Token | None:
        """A usable access token; None when the identity provider refused the refresh token.
        ``rejected``: a token the API just refused with 401, never to be taken from the secret again."""
        self._save_unsaved()
        deadline = self.clock() + self.max_wait
        while True:
            read = self.secret.current()
            shared = self._shared(read.values, rejected)
            if shared is not None:
                return shared
            lock = read.values.get(LOCK)
            now = self.clock()
            if isinstance(lock, dict) and float(lock.get("until", 0)) > now:
                if now >= deadline:
                    raise FeedUnavailable("another container is renewing the Kontur token; try again later")
                self.sleep(random.uniform(0.2, 1.0))
                continue
            claimed = self.secret.claim(read, {LOCK: {"until": now + LOCK_SECONDS}})
            if claimed is None:
                logger.info("Another container claimed the token renewal first; reading what it shares")
                continue
            return self._renew(claimed, interrupted=isinstance(lock, dict))

    def _renew(self, claimed: SecretVersion, *, interrupted: bool) -> Token | None:
        answer = self.redeem(claimed.values)
        self.interrupted = interrupted
        if answer is None:
            self.secret.update({}, remove=(LOCK,))  # let the others go on at once
            return None
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            self.secret.update({}, remove=(LOCK,))
            raise FeedAuthError("the identity provider's answer has no access_token")
        lifetime = float(answer.get("expires_in") or 3600)
        shared = Token(token, self.clock() + lifetime - min(RENEW_AHEAD_SECONDS, lifetime / 2))
        changes: dict[str, Any] = {SHARED_TOKEN: {"token": shared.value, "renew_at": shared.renew_at}}
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            changes["refresh_token"] = rotated
        # Durable before used: until this write lands, the only live refresh token is in this process.
        self._unsaved = changes
        self._save_unsaved()
        return shared

    def _save_unsaved(self) -> None:
        if self._unsaved is None:
            return
        try:
            self.secret.update(self._unsaved, remove=(LOCK,))
        except Exception as error:
            logger.error(
                "The renewed refresh token could not be written to the secret; it lives only in this container",
                extra={"error": type(error).__name__},
            )
            raise FeedUnavailable(
                f"writing the renewed refresh token to the credentials secret failed: {type(error).__name__}"
            ) from error
        self._unsaved = None

    def _shared(self, values: Mapping[str, Any], rejected: str | None) -> Token | None:
        shared = values.get(SHARED_TOKEN)
        if not isinstance(shared, dict) or not isinstance(shared.get("token"), str):
            return None
        token = Token(shared["token"], float(shared.get("renew_at") or 0))
        if token.value == rejected or self.clock() >= token.renew_at:
            return None
        return token
