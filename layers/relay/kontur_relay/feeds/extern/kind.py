"""The Extern feed kind: one feed for every account, its cursor rules, and how its poller is built."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from kontur_relay import wiring
from kontur_relay.domain.cadence import Cadence
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.domain.model import Feed
from kontur_relay.feeds import EnginePoller, PositionRefused
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.source import ExternSource, read_extern_error
from kontur_relay.kontur import session as http
from kontur_relay.kontur.auth import secure_url
from kontur_relay.kontur.budget import Budget
from kontur_relay.kontur.client import KonturApi
from kontur_relay.settings import Env, RelaySettings

#: An Extern cursor is an event id (``4ca_137``), or one kept after an old server's
#: ``last-event-id`` (``after:4ca_137``); anything else the feed would refuse on the next run.
DEFAULT_API_URL = "https://extern-api.kontur.ru"
CURSOR = re.compile(r"^(after:)?[0-9a-fA-F]+_[0-9a-fA-F]+$")


@dataclass(frozen=True)
class ExternSettings:
    api_url: str
    credentials_secret: str
    page_size: int
    feed_id: str
    http_timeout: float
    #: Below the schedule's period: a run keeps polling at this interval until the next tick.
    poll_interval: float
    schedule_period: float

    @classmethod
    def from_env(cls, env: Env) -> ExternSettings:
        return cls(
            api_url=secure_url(env.text("EXTERN_API_URL", DEFAULT_API_URL), "EXTERN_API_URL").rstrip("/"),
            credentials_secret=env.text("EXTERN_CREDENTIALS_SECRET"),
            page_size=env.whole("EXTERN_PAGE_SIZE", 100),
            feed_id=env.text("EXTERN_FEED_ID", "extern"),
            http_timeout=env.number("HTTP_TIMEOUT_SECONDS", 20),
            poll_interval=env.number("POLL_INTERVAL_SECONDS", 60),
            schedule_period=env.number("SCHEDULE_PERIOD_SECONDS", 60),
        )

    @property
    def cadence(self) -> Cadence | None:
        if self.poll_interval >= self.schedule_period:
            return None
        if self.poll_interval <= 0:
            raise ConfigurationError(f"POLL_INTERVAL_SECONDS must be positive, not {self.poll_interval:g}")
        return Cadence(every=self.poll_interval, period=self.schedule_period)


class ExternKind:
    name = "extern"

    def position(self, feed_id: str, cursor: str | None, timestamp: datetime | None) -> str | None:
        if timestamp is not None:
            raise PositionRefused("timestamp", f"{feed_id} has no point-in-time position: give a cursor (an event id)")
        if cursor is not None and not CURSOR.match(cursor):
            raise PositionRefused(
                "cursor", f"{cursor!r} is not an Extern event id (like 4ca_137): the feed would refuse it"
            )
        return cursor

    def poller(self, env: Env) -> EnginePoller[Relay]:
        settings = ExternSettings.from_env(env)
        relay_settings = RelaySettings.from_env(env)
        budget = Budget()
        session = http.session(budget=budget)
        api = KonturApi(
            settings.api_url,
            session,
            extern_authenticator(
                wiring.credentials(settings.credentials_secret, self.name, relay_settings.cursors_table),
                session,
                timeout=settings.http_timeout,
            ),
            read_extern_error,
            timeout=settings.http_timeout,
            name="Extern",
        )
        feed = Feed(id=settings.feed_id, kind=self.name, source_uri=f"{settings.api_url}/v1/events")
        relay = Relay(
            feed,
            ExternSource(api, take=settings.page_size),
            wiring.publisher(env),
            wiring.cursor_store(relay_settings.cursors_table),
            safety_margin=relay_settings.safety_margin,
            lease_seconds=relay_settings.lease_seconds,
            cadence=settings.cadence,
            budget=budget,
        )
        return EnginePoller(relay)


KIND = ExternKind()
