"""What the containers of one credentials secret share (``kontur/refresh.py``): the tokens they hand
out, the item's fields, and the item's port (``TokenStore``; DynamoDB's is ``aws/token_items.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class Token:
    value: str
    #: When a container should stop using it and renew (epoch seconds).
    renew_at: float
    #: Got while a refusal was on record: one more refusal of it is refusal enough, without a retry.
    trial: bool = False


@dataclass(frozen=True)
class Shared:
    """What the item holds, for one secret."""

    token: str | None = None
    renew_at: float = 0.0
    lock_owner: str | None = None
    lock_until: float = 0.0
    #: A rotated refresh token not in the secret yet, and the secret version it succeeds.
    pending: str | None = None
    pending_after: str | None = None
    #: The secret version whose refresh token was presented without an answer to tell what became of it.
    uncertain_after: str | None = None
    #: The secret version whose refresh token the identity provider refused: never presented again.
    spent_after: str | None = None
    #: Kontur refused fresh tokens of this secret version; no renewal before ``refused_until``.
    refused_after: str | None = None
    refused_until: float = 0.0
    refusals: int = 0


class TokenStore(Protocol):
    """The item. Every write but ``refuse`` is made only while ``owner`` holds the lock."""

    def read(self) -> Shared: ...

    def lock(self, owner: str, until: float) -> bool:
        """Take the lock until ``until`` when it is free, lapsed or ``owner``'s already."""
        ...

    def save(self, owner: str, changes: Mapping[str, Any], *, unlock: bool) -> bool:
        """Set ``changes`` (a None value removes its field); False, changing nothing, unless ``owner``
        holds the lock."""
        ...

    def unlock(self, owner: str) -> None:
        """Remove the lock if it is still ``owner``'s."""
        ...

    def refuse(self, token: str, changes: Mapping[str, Any]) -> None:
        """Record a refusal of ``token`` and drop it, unless another token replaced it meanwhile."""
        ...


@dataclass
class MemoryTokenStore:
    """One process's own item: where nothing is shared (a test, a script)."""

    shared: Shared = field(default_factory=Shared)
    clock: Callable[[], float] = time.time

    def read(self) -> Shared:
        return self.shared

    def lock(self, owner: str, until: float) -> bool:
        free = self.shared.lock_owner in (None, owner) or self.shared.lock_until < self.clock()
        if free:
            self.shared = replace(self.shared, lock_owner=owner, lock_until=until)
        return free

    def save(self, owner: str, changes: Mapping[str, Any], *, unlock: bool) -> bool:
        if self.shared.lock_owner != owner:
            return False
        self.shared = replace(self.shared, **changes)
        if unlock:
            self.unlock(owner)
        return True

    def unlock(self, owner: str) -> None:
        if self.shared.lock_owner == owner:
            self.shared = replace(self.shared, lock_owner=None, lock_until=0.0)

    def refuse(self, token: str, changes: Mapping[str, Any]) -> None:
        if self.shared.token == token:
            self.shared = replace(self.shared, token=None, renew_at=0.0, **changes)
