"""The composition root's shared part: the AWS adapters every function builds, once per container.

Each feed's package composes its own poller from these (``feeds/<kind>/kind.py``); clients,
connection pools and tokens then survive across warm invocations.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import boto3

from kontur_relay import sinks
from kontur_relay.aws.config import AWS_CONFIG
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.aws.token_items import DynamoTokenStore
from kontur_relay.domain.ports import Publisher
from kontur_relay.settings import Env

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

__all__ = ["AWS_CONFIG", "credentials", "cursor_store", "publisher", "table"]


def table(name: str | None = None) -> Table:
    """The cursor table (``CURSORS_TABLE`` unless named)."""
    return boto3.resource("dynamodb", config=AWS_CONFIG).Table(name or Env().text("CURSORS_TABLE"))


def cursor_store(table_name: str | None = None) -> DynamoCursorStore:
    return DynamoCursorStore(table(table_name))


def publisher(env: Env | None = None) -> Publisher:
    """The configured sink (SINK and its own settings, ``kontur_relay.sinks``); each poller builds
    it once per container and shares it between its feeds."""
    return sinks.from_env(env or Env())


def credentials(secret_id: str, kind: str, table_name: str | None = None) -> CredentialsSecret:
    """A feed kind's credentials secret, with the item in the cursor table (``CURSORS_TABLE`` unless
    named) that its containers share tokens through."""
    tokens = DynamoTokenStore(table(table_name), kind, secret_id, clock=time.time)
    return CredentialsSecret(secret_id, boto3.client("secretsmanager", config=AWS_CONFIG), tokens=tokens)
