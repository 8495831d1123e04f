"""What the token item's record of refusals means, read the same way by every container
(``kontur/refresh.py``): how long a refused credential is left alone, whether the secret's refresh
token is spent, and what to tell the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kontur_relay.aws.dynamo import iso
from kontur_relay.aws.secrets import SecretVersion
from kontur_relay.domain.errors import FeedAuthError
from kontur_relay.kontur.secret_fields import field as secret_field
from kontur_relay.kontur.token_store import Shared

#: After Kontur refused a fresh token a second time in a row: the first wait before renewing again,
#: doubled with each refusal after, up to the cap. After one refusal the next renewal is a trial, not
#: a wait: one 401 to a fresh token can be chance (a token revoked just then), two are not.
REFUSAL_BACKOFF = (60.0, 3600.0)


def backoff(refusals: int) -> float:
    """How long a credential refused ``refusals`` times in a row is left alone."""
    first, cap = REFUSAL_BACKOFF
    return 0.0 if refusals < 2 else float(min(first * 2 ** (refusals - 2), cap))


def hold(shared: Shared, now: float, current_version: Callable[[], str]) -> None:
    """No renewal while a refusal is on record for the secret as it still is (read only then)."""
    if shared.refused_until <= now or shared.refused_after is None:
        return
    if current_version() != shared.refused_after:
        return  # someone changed the secret: its credential is tried at once
    raise FeedAuthError(
        f"Kontur refused this credential {shared.refusals} time(s) in a row; the relay tries again after "
        f"{iso(shared.refused_until)}, or as soon as the credentials secret changes"
    )


def refusal(shared: Shared, version: str, now: float) -> dict[str, Any]:
    """The item's changes for one more refusal of the secret at ``version`` (a new version starts over)."""
    refusals = shared.refusals + 1 if shared.refused_after == version else 1
    return {"refused_after": version, "refused_until": now + backoff(refusals), "refusals": refusals}


def spent(refresh: str, shared: Shared, read: SecretVersion) -> bool:
    """``refresh`` is the secret's refresh token, and the identity provider refused it already."""
    return shared.spent_after == read.version_id and refresh == secret_field(read.values, "refresh_token")


def why_refused(shared: Shared, read: SecretVersion) -> str:
    """What to tell the operator when the identity provider refused the secret's refresh token."""
    if shared.uncertain_after == read.version_id:
        return (
            "the refresh token was refused after a renewal whose answer was lost (the identity provider "
            "redeemed it, and its successor never arrived): put a fresh refresh_token into the credentials secret"
        )
    return "the identity provider refused the refresh token: put a fresh refresh_token into the credentials secret"
