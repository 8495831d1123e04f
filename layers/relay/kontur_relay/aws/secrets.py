"""A JSON credentials secret in Secrets Manager: read through Powertools' cache, rotated values
written back. Its values are credentials: they are never logged."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities import parameters

from kontur_relay.domain.errors import ConfigurationError, NotConfigured
from kontur_relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient


class CredentialsSecret:
    """The JSON credentials secret; ``update`` writes back what the identity provider rotated."""

    def __init__(self, secret_id: str, client: SecretsManagerClient, *, max_age: int = 300) -> None:
        self.secret_id = secret_id
        self.client = client
        self.max_age = max_age
        self._force = False

    def values(self) -> dict[str, Any]:
        try:
            value = parameters.get_secret(
                self.secret_id, transform="json", max_age=self.max_age, force_fetch=self._force
            )
        except parameters.exceptions.TransformParameterError as error:
            raise ConfigurationError(f"the secret {self.secret_id} is not a JSON object") from error
        self._force = False
        if not isinstance(value, dict):
            raise ConfigurationError(f"the secret {self.secret_id} is not a JSON object")
        if not value:
            raise NotConfigured(f"the credentials secret {self.secret_id} is empty: fill it in (see the README)")
        return value

    def update(self, changes: Mapping[str, str]) -> None:
        current = self.values()
        self.client.put_secret_value(SecretId=self.secret_id, SecretString=json.dumps({**current, **changes}))
        self._force = True
        logger.info("Wrote the rotated credential back to the secret", extra={"fields": sorted(changes)})
