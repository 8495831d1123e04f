"""Building the relay from the function's environment: the composition root the handlers share.

Everything here runs once per Lambda container (the handlers cache what it returns), so clients,
connection pools and tokens survive across warm invocations.
"""

from __future__ import annotations

import os

import boto3
from botocore.config import Config

from kontur_relay import http
from kontur_relay.auth import CredentialsSecret, extern_authenticator
from kontur_relay.dynamo import DynamoCursorStore
from kontur_relay.engine import Relay
from kontur_relay.errors import ConfigurationError
from kontur_relay.extern import ExternSource, read_extern_error
from kontur_relay.model import Feed
from kontur_relay.sns import SnsPublisher

#: boto3's own retries for throttling and transient AWS errors, with bounded waits.
AWS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15)


def setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name) or default
    if not value:
        raise ConfigurationError(f"the environment variable {name} is not set")
    return value


def number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError as error:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from error


def cursor_store() -> DynamoCursorStore:
    table = boto3.resource("dynamodb", config=AWS_CONFIG).Table(setting("CURSORS_TABLE"))
    return DynamoCursorStore(table)


def publisher() -> SnsPublisher:
    return SnsPublisher(boto3.client("sns", config=AWS_CONFIG), setting("EVENTS_TOPIC_ARN"))


def credentials(variable: str) -> CredentialsSecret:
    return CredentialsSecret(setting(variable), boto3.client("secretsmanager", config=AWS_CONFIG))


def extern_relay() -> Relay:
    api_url = setting("EXTERN_API_URL", "https://extern-api.kontur.ru")
    timeout = number("HTTP_TIMEOUT_SECONDS", 20)
    session = http.session()
    api = http.KonturApi(
        api_url,
        session,
        extern_authenticator(credentials("EXTERN_CREDENTIALS_SECRET"), session, timeout=timeout),
        read_extern_error,
        timeout=timeout,
        name="Extern",
    )
    feed = Feed(id=setting("EXTERN_FEED_ID", "extern"), kind="extern", source_uri=f"{api_url.rstrip('/')}/v1/events")
    return Relay(
        feed,
        ExternSource(api, take=int(number("EXTERN_PAGE_SIZE", 100))),
        publisher(),
        cursor_store(),
        safety_margin=number("RELAY_SAFETY_MARGIN_SECONDS", 30),
    )
