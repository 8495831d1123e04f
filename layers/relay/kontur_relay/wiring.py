"""Building the relay from the function's environment: the composition root the handlers share.

Everything here runs once per Lambda container (the handlers cache what it returns), so clients,
connection pools and tokens survive across warm invocations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.sns import SnsPublisher
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.domain.model import Feed
from kontur_relay.feeds.diadoc.auth import diadoc_authenticator
from kontur_relay.feeds.diadoc.config import BoxFeed, api_version, box_defaults, box_feed
from kontur_relay.feeds.diadoc.source import DIADOC_RETRYABLE_STATUSES, DiadocApi, DiadocSource, read_diadoc_error
from kontur_relay.feeds.extern.source import ExternSource, read_extern_error
from kontur_relay.kontur import client as http
from kontur_relay.kontur.auth import CredentialsSecret, extern_authenticator

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


# -- Diadoc: one feed per box, all boxes served by one function ---------------------------------------


@dataclass
class DiadocDeployment:
    """What every Diadoc feed of a container shares: the API client (its session and token), the
    publisher, the cursor table, and the deployment's settings for boxes."""

    api: DiadocApi
    api_url: str
    version: str
    publisher: SnsPublisher
    cursors: DynamoCursorStore
    safety_margin: float
    #: ``start`` and ``limit`` for every box, before the box's own settings.
    defaults: dict[str, Any] = field(default_factory=dict)
    #: DIADOC_BOX_SETTINGS: box id → its filters (and ``start``, ``limit``).
    boxes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def feed(self, request: Mapping[str, Any]) -> BoxFeed:
        """The feed a scheduled event (``{"boxId": ..., <filter>: ...}``) names, over the deployment's settings."""
        box = request.get("boxId")
        own = self.boxes.get(box.strip(), {}) if isinstance(box, str) else {}
        return box_feed(request, {**self.defaults, **own})


def diadoc_deployment() -> DiadocDeployment:
    api_url = setting("DIADOC_API_URL", "https://diadoc-api.kontur.ru").rstrip("/")
    timeout = number("HTTP_TIMEOUT_SECONDS", 20)
    session = http.session(
        retries=int(number("HTTP_RETRIES", 4)),
        backoff=number("HTTP_BACKOFF_SECONDS", 0.5),
        statuses=DIADOC_RETRYABLE_STATUSES,
    )
    authenticator = diadoc_authenticator(credentials("DIADOC_CREDENTIALS_SECRET"), session, api_url, timeout=timeout)
    raw_boxes = os.environ.get("DIADOC_BOX_SETTINGS", "").strip()
    try:
        boxes = box_defaults(json.loads(raw_boxes) if raw_boxes else None)
    except ValueError as error:
        raise ConfigurationError(f"DIADOC_BOX_SETTINGS is not JSON: {error}") from error
    return DiadocDeployment(
        api=DiadocApi(api_url, session, authenticator, read_diadoc_error, timeout=timeout),
        api_url=api_url,
        version=api_version(setting("DIADOC_API_VERSION", "V8")),
        publisher=publisher(),
        cursors=cursor_store(),
        safety_margin=number("RELAY_SAFETY_MARGIN_SECONDS", 30),
        defaults={"start": setting("DIADOC_START", "oldest"), "limit": setting("DIADOC_PAGE_SIZE", "100")},
        boxes=boxes,
    )


def diadoc_relay(feed: BoxFeed, deployment: DiadocDeployment) -> Relay:
    """The relay of one box's feed; the handler keeps one per feed for the container's life."""
    return Relay(
        Feed(id=feed.feed_id, kind="diadoc", source_uri=diadoc_source_uri(deployment.api_url, feed.box_id)),
        DiadocSource(deployment.api, feed, version=deployment.version),
        deployment.publisher,
        deployment.cursors,
        safety_margin=deployment.safety_margin,
    )


def diadoc_source_uri(api_url: str, box_id: str) -> str:
    """The CloudEvents ``source`` of a box's events: the box, whichever API version reads it, so that
    (source, id) stays the event's identity across a switch from V7 to V8."""
    return f"{api_url.rstrip('/')}/boxes/{quote(box_id, safe='@')}"
