"""What one Diadoc feed reads: a box, the filters of GetNewEvents, where a new feed starts, the page size.

A feed is named by the scheduled event (``{"boxId": ..., <filter>: ...}``) over the deployment's
defaults. Its filters stay the same for the feed's whole life, because Diadoc pages only through
requests with the same filter parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.feeds.diadoc.ticks import from_rfc3339

#: GetNewEvents' filters, in the order they are sent.
FILTERS = (
    "departmentId",
    "messageType",
    "typeNamedId",
    "documentDirection",
    "timestampFromTicks",
    "timestampToTicks",
    "counteragentBoxId",
    "orderBy",
)
#: Filters that take several comma-separated values (a JSON list is accepted too).
LIST_FILTERS = frozenset({"messageType", "typeNamedId", "documentDirection"})
TICKS_FILTERS = frozenset({"timestampFromTicks", "timestampToTicks"})
#: What a feed's description may hold besides the filters.
SETTINGS = ("boxId", "start", "limit")

DEFAULT_LIMIT = 100
#: The largest page the current OpenAPI description allows (the original one said 100).
MAX_LIMIT = 500
API_VERSIONS = ("V8", "V7")


class Start(StrEnum):
    """Where a feed without a cursor starts."""

    OLDEST = "oldest"  # the box's first event
    NOW = "now"  # after the box's newest event (GET /V2/GetLastEvent)
    TIME = "time"  # the first event at or after a moment: the timestampFromTicks filter


@dataclass(frozen=True)
class BoxFeed:
    """One box's feed. Hashable: a container builds one relay per distinct feed and keeps it."""

    box_id: str
    #: (query parameter, value) pairs, sent with every request of the feed.
    filters: tuple[tuple[str, str], ...] = ()
    start: Start = Start.OLDEST
    limit: int = DEFAULT_LIMIT

    @property
    def feed_id(self) -> str:
        """The cursor's key and the ``feed`` attribute."""
        return f"diadoc:{self.box_id}"

    def stored(self) -> dict[str, Any]:
        """Settings that ``box_feed`` reads back as this very feed: its filters, its limit, and where
        it starts (a moment is its timestampFromTicks filter)."""
        settings: dict[str, Any] = {**dict(self.filters), "limit": self.limit}
        if self.start is not Start.TIME:
            settings["start"] = self.start.value
        return settings

    def query(self) -> dict[str, str]:
        return {"boxId": self.box_id, **dict(self.filters)}


def box_feed(request: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> BoxFeed:
    """The feed a scheduled event names. ``defaults`` are the deployment's settings for the box
    (``start``, ``limit`` and filters); the event's own keys win over them.

    Raises ConfigurationError for anything unknown or malformed, rather than read a different
    selection of events than the one asked for.
    """
    merged = {**(defaults or {}), **request}
    unknown = sorted(set(merged) - set(FILTERS) - set(SETTINGS))
    if unknown:
        raise ConfigurationError(
            f"unknown Diadoc feed settings {', '.join(unknown)}; known: {', '.join((*SETTINGS, *FILTERS))}"
        )
    box_id = merged.get("boxId")
    if not isinstance(box_id, str) or not box_id.strip():
        raise ConfigurationError("the scheduled event names no boxId")
    box_id = box_id.strip()

    filters = {name: _filter(name, merged[name]) for name in FILTERS if merged.get(name) not in (None, "", [])}
    start, start_ticks = _start(merged.get("start"))
    if start_ticks is not None:
        given = filters.get("timestampFromTicks")
        if given is not None and int(given) != start_ticks:
            raise ConfigurationError(f"feed {box_id}: start and timestampFromTicks name different moments")
        filters["timestampFromTicks"] = str(start_ticks)
    elif start is Start.OLDEST and "timestampFromTicks" in filters:
        start = Start.TIME
    return BoxFeed(
        box_id=box_id,
        filters=tuple((name, filters[name]) for name in FILTERS if name in filters),
        start=start,
        limit=_limit(merged.get("limit", DEFAULT_LIMIT)),
    )


def _filter(name: str, value: Any) -> str:
    if name in LIST_FILTERS and isinstance(value, list | tuple):
        if not all(isinstance(item, str) and item.strip() for item in value):
            raise ConfigurationError(f"{name} must be a list of non-empty strings")
        return ",".join(item.strip() for item in value)
    if name in TICKS_FILTERS:
        if isinstance(value, bool):
            raise ConfigurationError(f"{name} must be .NET ticks (an integer), not {value!r}")
        try:
            ticks = int(value)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"{name} must be .NET ticks (an integer), not {value!r}") from error
        if ticks < 0:
            raise ConfigurationError(f"{name} must not be negative")
        return str(ticks)
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, not {type(value).__name__}")
    return value.strip()


def _start(value: Any) -> tuple[Start, int | None]:
    """``oldest``, ``now`` or an RFC 3339 moment (a moment becomes the timestampFromTicks filter)."""
    if value is None or value == "":
        return Start.OLDEST, None
    if not isinstance(value, str):
        raise ConfigurationError(f"start must be oldest, now or an RFC 3339 time, not {value!r}")
    if value.lower() in (Start.OLDEST, Start.NOW):
        return Start(value.lower()), None
    try:
        return Start.TIME, from_rfc3339(value)
    except ValueError as error:
        raise ConfigurationError(f"start must be oldest, now or an RFC 3339 time with a zone, not {value!r}") from error


def _limit(value: Any) -> int:
    try:
        limit = int(value)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"limit must be an integer, not {value!r}") from error
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def api_version(value: str) -> str:
    version = value.strip().upper()
    if version not in API_VERSIONS:
        raise ConfigurationError(f"the Diadoc API version must be one of {', '.join(API_VERSIONS)}, not {value!r}")
    return version


def box_defaults(document: Any) -> dict[str, dict[str, Any]]:
    """The deployment's per-box settings: a JSON object of box id → settings (parsed already)."""
    if document is None or document == "":
        return {}
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ConfigurationError("the Diadoc box settings must be a JSON object of box id → object of settings")
    return {str(box).strip(): dict(settings) for box, settings in document.items()}
