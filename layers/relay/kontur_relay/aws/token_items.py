"""The shared-token item of a credentials secret (``kontur.refresh.TokenStore``) in the cursor table:
one item per feed kind, ``<kind>~credentials``, beside the kind's feeds (``~`` is in no feed id).

Every write is one conditional UpdateItem: a renewal's writes only while its owner holds the lock, the
lock's removal only by its owner, a refusal only of the token it names. The item names the secret it
belongs to: after the stack is pointed at another secret, nothing of the old one is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from kontur_relay.aws.dynamo import conditional_failed, number
from kontur_relay.kontur.token_store import Shared

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

#: Shared's fields as the item's attributes.
ATTRIBUTES = {
    "token": "access_token",
    "renew_at": "renew_at",
    "lock_owner": "lock_owner",
    "lock_until": "lock_until",
    "pending": "pending_refresh_token",
    "pending_after": "pending_after",
    "uncertain_after": "uncertain_after",
    "spent_after": "spent_after",
    "refused_after": "refused_after",
    "refused_until": "refused_until",
    "refusals": "refusals",
}
NUMBERS = frozenset({"renew_at", "lock_until", "refused_until", "refusals"})
_LOCK = ("lock_owner", "lock_until")


def key(kind: str) -> str:
    """The item of a feed kind's credentials."""
    return f"{kind}~credentials"


class DynamoTokenStore:
    def __init__(self, table: Table, kind: str, secret_id: str, *, clock: Callable[[], float]) -> None:
        self.table = table
        self.key = {"feed": key(kind)}
        self.secret_id = secret_id
        self.clock = clock

    def read(self) -> Shared:
        item = self.table.get_item(Key=self.key, ConsistentRead=True).get("Item") or {}
        fields = {
            name: item.get(attribute) for name, attribute in ATTRIBUTES.items() if item.get(attribute) is not None
        }
        if item.get("secret") != self.secret_id:
            fields = {name: value for name, value in fields.items() if name in _LOCK}
        values: dict[str, Any] = {
            name: (int(str(value)) if name == "refusals" else float(str(value))) if name in NUMBERS else str(value)
            for name, value in fields.items()
        }
        return Shared(**values)

    def lock(self, owner: str, until: float) -> bool:
        try:
            answer = self.table.update_item(
                Key=self.key,
                UpdateExpression="SET lock_owner = :owner, lock_until = :until",
                ConditionExpression="attribute_not_exists(lock_owner) OR lock_until < :now OR lock_owner = :owner",
                ExpressionAttributeValues={":owner": owner, ":until": number(until), ":now": number(self.clock())},
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if conditional_failed(error):
                return False
            raise
        if answer.get("Attributes", {}).get("secret") != self.secret_id:
            # Another secret's state (or none): dropped, so that none of it is mistaken for this one's.
            stale = [attribute for name, attribute in ATTRIBUTES.items() if name not in _LOCK]
            self._update(owner, f"SET secret = :secret REMOVE {', '.join(stale)}", {":secret": self.secret_id})
        return True

    def save(self, owner: str, changes: Mapping[str, Any], *, unlock: bool) -> bool:
        sets = {ATTRIBUTES[name]: value for name, value in changes.items() if value is not None}
        removes = [ATTRIBUTES[name] for name, value in changes.items() if value is None]
        if unlock:
            removes += list(_LOCK)
        values = {
            f":{attribute}": number(value) if isinstance(value, float | int) else value
            for attribute, value in sets.items()
        }
        expression = "SET " + ", ".join(f"{attribute} = :{attribute}" for attribute in ["secret", *sets])
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        return self._update(owner, expression, {":secret": self.secret_id, **values})

    def unlock(self, owner: str) -> None:
        self._update(owner, "REMOVE lock_owner, lock_until", {})

    def refuse(self, token: str, changes: Mapping[str, Any]) -> None:
        sets = {ATTRIBUTES[name]: value for name, value in changes.items()}
        values = {
            f":{attribute}": number(value) if isinstance(value, float | int) else value
            for attribute, value in sets.items()
        }
        try:
            self.table.update_item(
                Key=self.key,
                UpdateExpression="SET " + ", ".join(f"{a} = :{a}" for a in sets) + " REMOVE access_token, renew_at",
                ConditionExpression="access_token = :token AND secret = :secret",
                ExpressionAttributeValues={":token": token, ":secret": self.secret_id, **values},
            )
        except ClientError as error:
            if not conditional_failed(error):
                raise
            # Another container renewed (or recorded the refusal) meanwhile: its token is not this one.

    def _update(self, owner: str, expression: str, values: Mapping[str, Any]) -> bool:
        try:
            self.table.update_item(
                Key=self.key,
                UpdateExpression=expression,
                ConditionExpression="lock_owner = :owner",
                ExpressionAttributeValues={":owner": owner, **values},
            )
        except ClientError as error:
            if conditional_failed(error):
                return False
            raise
        return True
