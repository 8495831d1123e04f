"""The composition root's shared part: the AWS adapters every function builds, once per container.

Each feed's package composes its own poller from these (``feeds/<kind>/kind.py``); clients,
connection pools and tokens then survive across warm invocations.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.offload import PayloadOffloader
from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.aws.sns import SnsPublisher
from kontur_relay.aws.token_items import DynamoTokenStore
from kontur_relay.settings import Env

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

#: boto3's own retries for throttling and transient AWS errors, with bounded waits.
AWS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)


def table(name: str | None = None) -> Table:
    """The cursor table (``CURSORS_TABLE`` unless named)."""
    return boto3.resource("dynamodb", config=AWS_CONFIG).Table(name or Env().text("CURSORS_TABLE"))


def cursor_store(table_name: str | None = None) -> DynamoCursorStore:
    return DynamoCursorStore(table(table_name))


def publisher(topic_arn: str, payload_bucket: str | None = None) -> SnsPublisher:
    """The SNS publisher; with a payload bucket (default: PAYLOAD_BUCKET), events over SNS's size
    limit are offloaded to it instead of failing their page."""
    bucket = payload_bucket or Env().variables.get("PAYLOAD_BUCKET") or None
    offloader = PayloadOffloader(boto3.client("s3", config=AWS_CONFIG), bucket) if bucket else None
    # Every PublishBatch is built here from messages already checked against SNS's rules, and SNS
    # checks them again: botocore's own validation (about 15% of the publish path's CPU in a profile)
    # would check them a third time.
    sns = boto3.client("sns", config=AWS_CONFIG.merge(Config(parameter_validation=False)))
    return SnsPublisher(sns, topic_arn, offloader=offloader)


def credentials(secret_id: str, kind: str, table_name: str | None = None) -> CredentialsSecret:
    """A feed kind's credentials secret, with the item in the cursor table (``CURSORS_TABLE`` unless
    named) that its containers share tokens through."""
    tokens = DynamoTokenStore(table(table_name), kind, secret_id, clock=time.time)
    return CredentialsSecret(secret_id, boto3.client("secretsmanager", config=AWS_CONFIG), tokens=tokens)
