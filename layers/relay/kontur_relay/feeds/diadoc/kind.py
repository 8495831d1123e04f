"""The Diadoc feed kind: a feed per box (``diadoc:<boxId>``), its cursor rules, and its poller."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kontur_relay import wiring
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.domain.model import Feed
from kontur_relay.domain.ports import CursorStore, Publisher
from kontur_relay.feeds.diadoc.auth import diadoc_authenticator
from kontur_relay.feeds.diadoc.config import BoxFeed, api_version, box_defaults, box_feed
from kontur_relay.feeds.diadoc.source import (
    DIADOC_RETRYABLE_STATUSES,
    DiadocApi,
    DiadocSource,
    cursor_at,
    read_diadoc_error,
)
from kontur_relay.kontur import client
from kontur_relay.observability import count_error, logger
from kontur_relay.settings import Env, RelaySettings


def source_uri(api_url: str, box_id: str) -> str:
    """The CloudEvents ``source`` of a box's events: the box, whichever API version reads it, so that
    (source, id) stays the event's identity across a switch from V7 to V8."""
    return f"{api_url.rstrip('/')}/boxes/{quote(box_id, safe='@')}"


@dataclass
class DiadocPoller:
    """Every box of the deployment, each its own feed, sharing one API client (its session and
    token), the publisher and the cursor table. A scheduled event names the box."""

    api: DiadocApi
    api_url: str
    version: str
    relay_settings: RelaySettings
    publisher: Publisher
    cursors: CursorStore
    #: ``start`` and ``limit`` for every box, before the box's own settings.
    defaults: dict[str, Any] = field(default_factory=dict)
    #: DIADOC_BOX_SETTINGS: box id → its filters (and ``start``, ``limit``).
    boxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    relays: dict[BoxFeed, Relay] = field(default_factory=dict)

    def run(self, event: Mapping[str, Any], time_left: Callable[[], float]) -> dict[str, object]:
        try:
            feed = self.feed(event)
        except ConfigurationError as error:
            count_error(error.kind, KIND.name)
            logger.exception("The Diadoc feed is misconfigured", extra={"scheduled_event": event})
            raise
        if feed not in self.relays:
            self.relays[feed] = Relay(
                Feed(id=feed.feed_id, kind=KIND.name, source_uri=source_uri(self.api_url, feed.box_id)),
                DiadocSource(self.api, feed, version=self.version),
                self.publisher,
                self.cursors,
                safety_margin=self.relay_settings.safety_margin,
            )
        return self.relays[feed].run(time_left).as_dict()

    def feed(self, request: Mapping[str, Any]) -> BoxFeed:
        """The feed a scheduled event (``{"boxId": ..., <filter>: ...}``) names, over the deployment's settings."""
        box = request.get("boxId")
        own = self.boxes.get(box.strip(), {}) if isinstance(box, str) else {}
        return box_feed(request, {**self.defaults, **own})


class DiadocKind:
    name = "diadoc"

    def position(self, feed_id: str, cursor: str | None, timestamp: datetime | None) -> str | None:
        # Any IndexKey Diadoc gave is a cursor; a moment becomes the cursor that reads on from it.
        return cursor_at(timestamp.astimezone(UTC)) if timestamp is not None else cursor

    def poller(self, env: Env) -> DiadocPoller:
        relay_settings = RelaySettings.from_env(env)
        api_url = env.text("DIADOC_API_URL", "https://diadoc-api.kontur.ru").rstrip("/")
        timeout = env.number("HTTP_TIMEOUT_SECONDS", 20)
        session = client.session(
            retries=env.whole("HTTP_RETRIES", 4, low=0),
            backoff=env.number("HTTP_BACKOFF_SECONDS", 0.5),
            statuses=DIADOC_RETRYABLE_STATUSES,
        )
        authenticator = diadoc_authenticator(
            wiring.credentials("DIADOC_CREDENTIALS_SECRET"), session, api_url, timeout=timeout
        )
        raw_boxes = env.variables.get("DIADOC_BOX_SETTINGS", "").strip()
        try:
            boxes = box_defaults(json.loads(raw_boxes) if raw_boxes else None)
        except ValueError as error:
            raise ConfigurationError(f"DIADOC_BOX_SETTINGS is not JSON: {error}") from error
        return DiadocPoller(
            api=DiadocApi(api_url, session, authenticator, read_diadoc_error, timeout=timeout),
            api_url=api_url,
            version=api_version(env.text("DIADOC_API_VERSION", "V8")),
            relay_settings=relay_settings,
            publisher=wiring.publisher(relay_settings.topic_arn),
            cursors=wiring.cursor_store(relay_settings.cursors_table),
            defaults={"start": env.text("DIADOC_START", "oldest"), "limit": env.text("DIADOC_PAGE_SIZE", "100")},
            boxes=boxes,
        )


KIND = DiadocKind()
