"""A box's feed item as the registry reads it (``RegisteredBox``), and its last reconciliation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kontur_relay.aws.dynamo import cursor_state, text
from kontur_relay.domain.model import CursorState

PREFIX = "diadoc:"


@dataclass(frozen=True)
class Reconciliation:
    """A box's last reconciliation pass: when, the window it read (RFC 3339), what it found."""

    at: str
    since: str | None
    until: str | None
    recovered: int
    duplicates: int
    #: Events every pass of the box recovered, since it was first reconciled.
    recovered_total: int


@dataclass(frozen=True)
class RegisteredBox:
    """A box's feed item: registration, cursor and schedule."""

    feed: str
    #: What PUT /diadoc/boxes/{boxId} stored: GetNewEvents' filters, ``start`` and ``limit``.
    settings: Mapping[str, Any] | None
    filters_key: str | None
    cursor: CursorState
    next_poll_at: float
    interval: float
    last_poll_at: str | None
    last_events_at: str | None
    last_error: str | None
    registered_at: str | None
    registered_by: str | None
    #: The end (epoch seconds) of the window the box's last pass read: the next one reads on from it.
    reconciled_to: float | None = None
    #: When the box was first reconciled: its memory holds everything published since, so no pass reads earlier.
    reconciled_since: float | None = None
    reconciliation: Reconciliation | None = None
    #: The audit of a merge of the box's two spellings (``aws.box_merge``): ``into`` on the feed that
    #: stopped, ``from`` and ``cursor_of`` on the one that stayed; ``by`` and ``at`` on both.
    merge: Mapping[str, Any] | None = None

    @property
    def box_id(self) -> str:
        return self.feed.removeprefix(PREFIX)

    @property
    def registered(self) -> bool:
        return self.settings is not None


def registered_box(item: Mapping[str, Any]) -> RegisteredBox:
    settings = item.get("box_settings")
    return RegisteredBox(
        feed=str(item["feed"]),
        settings=_plain(settings) if settings is not None else None,
        filters_key=text(item.get("filters_key")),
        cursor=cursor_state(item),
        next_poll_at=float(item.get("next_poll_at", 0)),
        interval=float(item.get("poll_interval", 0)),
        last_poll_at=text(item.get("last_poll_at")),
        last_events_at=text(item.get("last_events_at")),
        last_error=text(item.get("last_error")),
        registered_at=text(item.get("registered_at")),
        registered_by=text(item.get("registered_by")),
        reconciled_to=_number(item.get("reconciled_to")),
        reconciled_since=_number(item.get("reconciled_since")),
        reconciliation=_reconciliation(item),
        merge=_plain(item["merge"]) if "merge" in item else None,
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _reconciliation(item: Mapping[str, Any]) -> Reconciliation | None:
    last = item.get("last_reconciliation")
    if not isinstance(last, Mapping):
        return None
    return Reconciliation(
        at=str(last["at"]),
        since=text(last.get("since")),
        until=text(last.get("until")),
        recovered=int(last.get("recovered", 0)),
        duplicates=int(last.get("duplicates", 0)),
        recovered_total=int(item.get("recovered_total", 0)),
    )


def _plain(value: Any) -> Any:
    """DynamoDB's Decimals back to ints, in a stored settings map."""
    if isinstance(value, Decimal):
        return int(value) if value == int(value) else float(value)
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_plain(inner) for inner in value]
    return value
