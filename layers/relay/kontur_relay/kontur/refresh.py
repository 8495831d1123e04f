"""Access tokens shared by every container and function that reads one credentials secret, renewed by
one of them at a time, and a refresh token presented once per redemption attempt.

What they share is one item beside the feeds' cursors (``TokenStore``; in DynamoDB,
``aws/token_items.py``), written with conditions: sharing a token or taking the renewal lock costs no
secret version. The item holds the access token and when to renew it; the renewal lock (an owner and
an expiry longer than the longest token request with its retries; only its owner removes it); a
rotated refresh token on its way to the secret; and a refusal to leave alone for a while.

    container A                                   the item                  container B
    lock (owner A, until the longest request)     lock A                    lock -> taken: wait
    POST refresh_token=R0: once, never retried
    save T1 and R1, before using either           T1, pending R1, lock A
    secret: refresh_token=R1 (one version)
    clear pending R1, unlock (owner A only)       T1                        read: T1 is fresh, use it

The secret is written only when the refresh token rotated. A write that fails leaves R1 in the item
(encrypted at rest, like the table): the next renewal, in any container, presents R1, not the spent
R0, and writes it to the secret again. A token request whose answer may come after the redemption
(500, 502, 504, an answer lost) is not retried (``kontur/session.py``): the run fails, and the item
remembers that R0's fate is unknown, so that a refusal of R0 later says why.

Kontur refusing a token fresh from the identity provider (a 401 on a token renewed for a 401) is no
reason to renew on every run: the item records the refusal, and no container renews before the
backoff ends, unless the secret changed meanwhile (an operator put a new credential).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from kontur_relay.aws.dynamo import iso
from kontur_relay.aws.secrets import CredentialsSecret, SecretVersion
from kontur_relay.domain.errors import FeedAuthError, FeedUnavailable
from kontur_relay.kontur.refusals import backoff, hold, refusal, spent, why_refused
from kontur_relay.kontur.secret_fields import described
from kontur_relay.kontur.secret_fields import field as secret_field
from kontur_relay.kontur.token_store import Shared, Token, TokenStore
from kontur_relay.observability import logger

#: Renew this long before a token's expiry, or once half its life is gone when it lives shorter.
RENEW_AHEAD_SECONDS = 120
#: Keys an earlier relay kept in the secret itself; the next write-back removes them.
LEGACY_KEYS = ("relay_access_token", "relay_refresh_lock")


class RedemptionUnknown(FeedUnavailable):
    """The token endpoint was sent the grant and its answer says nothing of what it did with it (500,
    502, 504, or no answer at all): a refresh token may have been redeemed."""


#: One token request: the secret's values and the refresh token to present (None: the password grant).
#: The endpoint's JSON, or None when it refused the grant. Raises RedemptionUnknown, FeedUnavailable.
Grant = Callable[[Mapping[str, Any], "str | None"], "dict[str, Any] | None"]


class SharedTokens:
    """The access token every container of a secret uses, renewed under the item's lock."""

    def __init__(
        self,
        secret: CredentialsSecret,
        store: TokenStore,
        grant: Grant,
        *,
        lock_seconds: float,
        max_wait: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.secret = secret
        self.store = store
        self.grant = grant
        self.lock_seconds = lock_seconds
        self.max_wait = max_wait
        self.clock = clock
        self.sleep = sleep
        #: This container's owner id for the lock, new for every renewal.
        self._owner = ""
        #: A renewal neither the item nor the secret took: kept here, written before anything else.
        self._unsaved: dict[str, Any] | None = None

    def token(self, rejected: str | None = None) -> Token:
        """A usable access token. ``rejected``: one Kontur just refused, never to be used again."""
        deadline = self.clock() + self.max_wait
        while True:
            shared = self.store.read()
            now = self.clock()
            if shared.token and shared.token != rejected and now < shared.renew_at:
                if shared.pending or self._unsaved:
                    self._flush()
                return Token(shared.token, shared.renew_at, trial=shared.refusals > 0)
            hold(shared, now, lambda: self.secret.current().version_id)
            if shared.lock_owner and shared.lock_until > now:
                if now >= deadline:
                    raise FeedUnavailable("another container is renewing the Kontur token; try again later")
                logger.debug("Another container is renewing the Kontur token; waiting for it")
                self.sleep(random.uniform(0.2, 1.0))
                continue
            self._owner = f"{random.getrandbits(64):016x}"
            if self.store.lock(self._owner, now + self.lock_seconds):
                try:
                    # Due: the token ran its course (not refused, not dropped after a refusal).
                    return self._renew(due=rejected is None and shared.token is not None)
                finally:
                    self.store.unlock(self._owner)

    def refuse(self, token: str) -> None:
        """Kontur refused ``token`` though it was fresh: no renewal for a while, unless the secret changes."""
        shared = self.store.read()
        refusals = shared.refusals + 1
        until = self.clock() + backoff(refusals)
        changes = {"refused_after": self.secret.current().version_id, "refused_until": until, "refusals": refusals}
        self.store.refuse(token, changes)
        logger.warning(
            "Kontur refused a fresh token; the next renewal waits for the backoff (none after a first refusal) "
            "or a change of the credentials secret",
            extra={"refusals": refusals, "not_before": iso(until)},
        )

    # -- under the lock ----------------------------------------------------------------------------

    def _renew(self, *, due: bool) -> Token:
        """Renew with the live refresh token (or the password grant); ``due``: the token ran its
        course, so past refusals are forgotten."""
        shared, read = self._settled()
        refresh = self._live_refresh(shared, read)
        config = read.values
        answer = None
        if refresh is not None and not spent(refresh, shared, read):
            try:
                answer = self.grant(config, refresh)
            except RedemptionUnknown:
                self.store.save(self._owner, {"uncertain_after": read.version_id}, unlock=False)
                raise
            if answer is None:
                # Dead: never presented again (some identity providers revoke the whole grant when a
                # spent refresh token comes back), until the secret holds another.
                self.store.save(self._owner, {"spent_after": read.version_id, "pending": None}, unlock=False)
        if answer is None and refresh is not None:
            if not (secret_field(config, "username") and secret_field(config, "password")):
                raise FeedAuthError(why_refused(shared, read), status=400)
            logger.warning("The refresh token was refused; falling back to the password grant")
            refresh = None
        if answer is None:
            answer = self.grant(config, None)
        if answer is None:
            # A wrong password tried every run could lock the user out: tried again after a backoff.
            self.store.save(self._owner, refusal(shared, read.version_id, self.clock()), unlock=False)
            raise FeedAuthError("the identity provider refused the password grant", status=400)
        return self._keep(answer, refresh, read, shared, due)

    def _keep(
        self, answer: Mapping[str, Any], presented: str | None, read: SecretVersion, shared: Shared, due: bool
    ) -> Token:
        """The renewal's tokens, durable before either is used: the item first, then the secret."""
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise FeedAuthError("the identity provider's answer has no access_token")
        lifetime = float(answer.get("expires_in") or 3600)
        renew_at = self.clock() + lifetime - min(RENEW_AHEAD_SECONDS, lifetime / 2)
        rotated = answer.get("refresh_token") if presented is not None else None
        rotated = rotated if isinstance(rotated, str) and rotated and rotated != presented else None
        changes: dict[str, Any] = {"token": token, "renew_at": renew_at, "uncertain_after": None}
        if rotated is not None:
            changes |= {"pending": rotated, "pending_after": read.version_id}
        if due or shared.refused_after != read.version_id:
            changes |= {"refusals": 0, "refused_after": None, "refused_until": 0.0}
        self._unsaved = changes
        if not self._saved(changes):
            # The only live refresh token would be in this process alone: the secret must take it now.
            self._write_back(rotated, read.version_id)
            return Token(token, renew_at)
        self._unsaved = None
        if rotated is not None:
            self._write_back(rotated, read.version_id)
        return Token(token, renew_at, trial=shared.refusals > 0 and not due)

    def _saved(self, changes: Mapping[str, Any]) -> bool:
        try:
            if self.store.save(self._owner, changes, unlock=False):
                return True
            logger.error("The renewal lock lapsed before the renewal was saved")
        except Exception as error:  # noqa: BLE001 - the renewal is kept in this process and saved later
            logger.error("The renewal could not be saved to the token item", extra={"error": described(error)})
        return False

    def _write_back(self, rotated: str | None, after: str) -> None:
        """The rotated refresh token into the secret, then out of the item; a failure leaves it in the
        item (or in this process), for the next renewal to present and write again."""
        if rotated is None:
            return
        try:
            self.secret.update({"refresh_token": rotated}, remove=LEGACY_KEYS)
        except Exception as error:  # noqa: BLE001 - the token stays where the next renewal finds it
            logger.error(
                "The rotated refresh token could not be written to the credentials secret; it is kept in the "
                "token item and written again on the next renewal",
                extra={"error": described(error)},
            )
            return
        logger.info("The rotated refresh token is in the credentials secret", extra={"after_version": after})
        if self._unsaved is not None:
            self._unsaved = {k: v for k, v in self._unsaved.items() if k not in ("pending", "pending_after")}
        self._saved({"pending": None, "pending_after": None})

    def _settled(self) -> tuple[Shared, SecretVersion]:
        """The item and the secret once what an earlier renewal left unsaved is saved, and a pending
        refresh token written back if the secret takes it now (whatever it does, the item keeps it)."""
        if self._unsaved and self.store.save(self._owner, self._unsaved, unlock=False):
            self._unsaved = None
        shared, read = self.store.read(), self.secret.current()
        if shared.pending and shared.pending_after == read.version_id:
            self._write_back(shared.pending, read.version_id)
            shared, read = self.store.read(), self.secret.current()
        return shared, read

    def _live_refresh(self, shared: Shared, read: SecretVersion) -> str | None:
        """The refresh token to present: one rotated but not in the secret yet while the secret has
        not moved on; else the secret's (after a write-back, or an operator's new one). None: the
        secret asks for the password grant."""
        in_secret = secret_field(read.values, "refresh_token")
        grant = secret_field(read.values, "grant_type") or ("refresh_token" if in_secret else "password")
        if shared.pending and shared.pending_after == read.version_id:
            return shared.pending
        if shared.pending:
            if shared.pending != in_secret:
                logger.warning("The credentials secret holds a refresh token newer than the relay's; using it")
            self.store.save(self._owner, {"pending": None, "pending_after": None}, unlock=False)
        return in_secret if grant == "refresh_token" else None

    def _flush(self) -> None:
        """A write-back still owed, tried by whoever sees it, under the lock."""
        owner = f"{random.getrandbits(64):016x}"
        if not self.store.lock(owner, self.clock() + self.lock_seconds):
            return
        self._owner = owner
        try:
            shared, read = self._settled()
            self._live_refresh(shared, read)
        finally:
            self.store.unlock(owner)
