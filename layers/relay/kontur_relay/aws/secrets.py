"""A JSON credentials secret in Secrets Manager: read through Powertools' cache, and a rotated
refresh token written back. Its values are credentials: never logged.

A write-back must not undo a change made meanwhile (an operator's new api_key), so it is a
compare-and-swap on the version stage ``AWSCURRENT``: the merged values are put as a new version
under a label of the relay's own, and ``AWSCURRENT`` is moved onto it from the version they were
read from; Secrets Manager refuses the move when the stage is no longer there (``RemoveFromVersionId``),
and the write is merged again into what is current now. Each write-back is one secret version: the
relay writes only when the identity provider rotated the refresh token (``kontur/refresh.py``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import ClientError

from kontur_relay.domain.errors import ConfigurationError, NotConfigured
from kontur_relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

    from kontur_relay.kontur.token_store import TokenStore

CURRENT = "AWSCURRENT"
#: Where a written version waits for the stage move; a label of the relay's own, so that putting the
#: version does not make it current before the compare-and-swap has decided.
CLAIM_STAGE = "RELAYCLAIM"


@dataclass(frozen=True)
class SecretVersion:
    version_id: str
    values: dict[str, Any]


class CredentialsSecret:
    """The JSON credentials secret; ``update`` writes back what the identity provider rotated.
    ``tokens``: the item beside it where the access tokens its credentials yield are shared (None:
    this process keeps its own)."""

    def __init__(
        self, secret_id: str, client: SecretsManagerClient, *, max_age: int = 300, tokens: TokenStore | None = None
    ) -> None:
        self.secret_id = secret_id
        self.client = client
        self.max_age = max_age
        self.tokens = tokens
        # Powertools' cache over this client: its module-level default would build a second
        # Secrets Manager client per container, without the relay's retry configuration.
        self._cached = parameters.SecretsProvider(boto3_client=client)
        self._force = False

    def values(self, *, fresh: bool = False) -> dict[str, Any]:
        """The secret's JSON, cached for ``max_age`` seconds; ``fresh`` reads the current version."""
        try:
            value = self._cached.get(
                self.secret_id,
                transform="json",
                max_age=self.max_age,
                force_fetch=self._force or fresh,
                VersionStage=CURRENT,
            )
        except parameters.exceptions.TransformParameterError as error:
            raise ConfigurationError(f"the secret {self.secret_id} is not a JSON object") from error
        self._force = False
        return self._object(value)

    def current(self) -> SecretVersion:
        """The ``AWSCURRENT`` version as it is now (never a cached copy), with its version id."""
        answer = self.client.get_secret_value(SecretId=self.secret_id, VersionStage=CURRENT)
        try:
            value = json.loads(answer.get("SecretString") or "null")
        except ValueError as error:
            raise ConfigurationError(f"the secret {self.secret_id} is not a JSON object") from error
        return SecretVersion(answer["VersionId"], self._object(value))

    def _swap(
        self, read: SecretVersion, changes: Mapping[str, Any], *, remove: Collection[str] = ()
    ) -> SecretVersion | None:
        """Make ``read`` with ``changes`` (less ``remove``) the current version, unless the secret moved
        on since ``read`` was read: then None, and nothing changed for anyone else."""
        merged = {key: value for key, value in {**read.values, **changes}.items() if key not in remove}
        version_id = str(uuid.uuid4())
        self.client.put_secret_value(
            SecretId=self.secret_id,
            ClientRequestToken=version_id,
            SecretString=json.dumps(merged),
            VersionStages=[CLAIM_STAGE],
        )
        try:
            self.client.update_secret_version_stage(
                SecretId=self.secret_id,
                VersionStage=CURRENT,
                MoveToVersionId=version_id,
                RemoveFromVersionId=read.version_id,
            )
        except ClientError as error:
            # The stage is no longer on the version read: someone claimed or rewrote it first.
            if error.response.get("Error", {}).get("Code") != "InvalidParameterException":
                raise
            if self.current().version_id == read.version_id:
                raise  # not a lost race after all
            return None
        self._force = True
        return SecretVersion(version_id, merged)

    def update(self, changes: Mapping[str, Any], *, remove: Collection[str] = (), attempts: int = 5) -> None:
        """Merge ``changes`` into the current version, read afresh (another container or an operator
        may have written since this one's cache was filled), without losing a write made meanwhile."""
        for _ in range(attempts):
            if self._swap(self.current(), changes, remove=remove) is not None:
                logger.info("Wrote credentials back to the secret", extra={"fields": sorted({*changes, *remove})})
                return
        raise ConfigurationError(f"the secret {self.secret_id} kept changing while credentials were written back")

    def _object(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigurationError(f"the secret {self.secret_id} is not a JSON object")
        if not value:
            raise NotConfigured(f"the credentials secret {self.secret_id} is empty: fill it in (see the README)")
        return value
