"""The admin API's Diadoc boxes: what operators send to register a box and what they see of one.

A box's settings are GetNewEvents' filters, named as its query parameters, with ``start`` and
``limit``. What is stored is the *effective* settings, the deployment's defaults applied, so the
poller reads a box exactly as its registration says, whatever the deployment's defaults become.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import ConfigDict, Field, field_validator

from kontur_relay.admin.problems import CamelModel, StrictInput
from kontur_relay.aws.box_items import Reconciliation
from kontur_relay.feeds.diadoc.boxes import box_id
from kontur_relay.feeds.diadoc.config import LIST_FILTERS, MAX_LIMIT, TICKS_FILTERS
from kontur_relay.feeds.diadoc.ticks import MAX_TICKS, from_rfc3339

GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: Either spelling of a box id that ``feeds.diadoc.boxes.box_id`` takes, for the description; braces optional.
BOX_ID = (
    r"^(\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?"
    r"|[0-9a-fA-F]{32}@[dD][iI][aA][dD][oO][cC]\.[rR][uU])$"
)
#: ``oldest``, ``now`` or an RFC 3339 time with a zone (the validator checks the time is one).
START = r"^(oldest|now|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))$"

BoxId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=100,
        description="The box: a GUID, or 32 hexadecimal digits followed by `@diadoc.ru` (percent-encode `@`). "
        "Case and braces do not matter: every spelling of an id is the same box",
        examples=["a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"],
    ),
]
#: What GetNewEvents takes for a type of document: an identifier, never a list separator.
TypeNamedId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)]
Ticks = Annotated[int, Field(strict=True, ge=0, le=MAX_TICKS)]
#: Document types one box's feed may name: Diadoc has a few dozen (GetDocumentTypes), so 50 is
#: every one a feed could mean; past that, no filter reads the same and costs nothing.
MAX_TYPE_NAMES = 50
#: ... and their length together: every request of the feed carries them, and with the rest of the
#: query (boxId, afterIndexKey, departmentId, counteragentBoxId, ticks: about 400 characters) the URL
#: stays under 2,048 characters, the shortest limit common servers and proxies set (IIS's default).
MAX_TYPE_NAMES_LENGTH = 1500


class Filters(CamelModel):
    """GetNewEvents' filters, named as its query parameters. Every page of a feed is read with them."""

    department_id: str | None = Field(
        default=None, pattern=GUID, description="One department; required when the user sees only some of them"
    )
    # Each list is read once per value (a repeated value is dropped) and capped by what it can mean.
    message_type: list[Literal["Letter", "Draft", "Template"]] | None = Field(default=None, min_length=1, max_length=3)
    type_named_id: list[TypeNamedId] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TYPE_NAMES,
        description=f"Document types, e.g. UniversalTransferDocument: at most {MAX_TYPE_NAMES}, "
        f"{MAX_TYPE_NAMES_LENGTH} characters together",
    )
    document_direction: list[Literal["Inbound", "Outbound", "Internal"]] | None = Field(
        default=None, min_length=1, max_length=3
    )
    timestamp_from_ticks: Ticks | None = Field(default=None, description="From this moment on (.NET ticks, UTC)")
    timestamp_to_ticks: Ticks | None = Field(default=None, description="Up to this moment (.NET ticks, UTC)")
    counteragent_box_id: str | None = Field(
        default=None, pattern=BOX_ID, description="Only events with this counterparty's box"
    )
    order_by: Literal["Ascending", "Descending"] | None = None


class BoxChange(Filters):
    """A box's whole settings: what the body leaves out takes the deployment's default (or no filter)."""

    # Unknown keys are refused (StrictInput's rule); only the camelCase names are accepted.
    model_config = ConfigDict(**StrictInput.model_config, populate_by_name=False)

    start: str | None = Field(
        default=None,
        pattern=START,
        description="Where the box's feed starts when it has no cursor: `oldest`, `now` (after the box's "
        "newest event) or an RFC 3339 time with a zone (sent as timestampFromTicks, so it is a filter too). "
        "Default: the deployment's DiadocStart",
        examples=["oldest", "now", "2025-01-01T00:00:00Z"],
    )
    limit: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_LIMIT,
        description="Events per GetNewEvents request: at most 500 on V8, 100 on V7. Default: DiadocPageSize",
    )
    restart: bool = Field(
        default=False,
        strict=True,
        description="Drop the box's cursor and start again at `start`: required to change the filters of a box "
        "that has a cursor (Diadoc pages only through requests with the same filters)",
    )

    @field_validator("counteragent_box_id")
    @classmethod
    def _box(cls, value: str | None) -> str | None:
        return None if value is None else box_id(value)

    @field_validator("message_type", "type_named_id", "document_direction")
    @classmethod
    def _once(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else list(dict.fromkeys(values))

    @field_validator("type_named_id")
    @classmethod
    def _short_enough(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(",".join(values)) > MAX_TYPE_NAMES_LENGTH:
            raise ValueError(f"at most {MAX_TYPE_NAMES_LENGTH} characters together, commas included")
        return values

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is None or value in ("oldest", "now"):
            return value
        try:
            from_rfc3339(value)
        except (ValueError, OverflowError):
            raise ValueError("must be oldest, now or an RFC 3339 time with a zone") from None
        return value

    def settings(self) -> dict[str, Any]:
        """What was asked, as the Diadoc feed's configuration reads it (``config.box_feed``)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude={"restart"})


class Settings(Filters):
    """A box's effective settings: what its feed reads."""

    start: str = Field(description="`oldest`, `now` or an RFC 3339 time")
    limit: int


def settings_view(stored: Mapping[str, Any]) -> Settings:
    """Stored settings (comma-separated lists, ticks as text) in the API's shape."""
    shown: dict[str, Any] = {}
    for name, value in stored.items():
        if name in LIST_FILTERS and isinstance(value, str):
            shown[name] = value.split(",")
        elif name in TICKS_FILTERS:
            shown[name] = int(value)
        else:
            shown[name] = value
    return Settings.model_validate(shown)


class ReconciliationView(CamelModel):
    """The box's last reconciliation pass: its window read again by time, and what it found there."""

    at: str = Field(description="When the pass ended (RFC 3339)")
    since: str | None = Field(description="The start of the window it read (the events' own time)")
    until: str | None = Field(description="The end of that window")
    recovered: int = Field(description="Events it published that the box's feed had not served in order")
    duplicates_suppressed: int = Field(description="Events it dropped because the box had published them")
    recovered_total: int = Field(description="Events every pass of the box has recovered")


def reconciliation_view(last: Reconciliation | None) -> ReconciliationView | None:
    if last is None:
        return None
    return ReconciliationView(
        at=last.at,
        since=last.since,
        until=last.until,
        recovered=last.recovered,
        duplicates_suppressed=last.duplicates,
        recovered_total=last.recovered_total,
    )


class Merge(CamelModel):
    """Who merged a box's two registrations into one feed, when, and whose cursor it went on from."""

    merged_from: str | None = Field(default=None, description="On the feed that stayed: the feed that stopped")
    merged_into: str | None = Field(default=None, description="On the feed that stopped: the feed that stayed")
    cursor_of: str = Field(description="The feed whose cursor the one that stayed goes on from: the one behind")
    by: str = Field(description="The IAM principal who merged")
    at: str


class MergeRequest(StrictInput):
    keep: str | None = Field(
        default=None,
        pattern=BOX_ID,
        max_length=100,
        description="The spelling whose feed stays (its feed id and CloudEvents source go on). "
        "Default: the `…@diadoc.ru` one",
    )


class BoxView(CamelModel):
    """A registered box: its settings, its polling and its reconciliation."""

    box_id: str = Field(description="The box id, canonical: lower case, no braces")
    feed: str = Field(description="Its feed id (GET /feeds/{feedId})")
    settings: Settings
    registered_at: str | None
    registered_by: str | None = Field(description="The IAM principal who last registered or changed it")
    cursor: str | None = Field(description="Where the next poll reads from; null: where `start` says")
    version: int = Field(description="The cursor's version")
    last_poll_at: str | None
    next_poll_at: str | None = Field(description="When the box is next due (RFC 3339)")
    poll_interval_seconds: float | None = Field(description="The poller's current interval for the box")
    last_events_at: str | None = Field(description="The last poll that found events")
    last_error: str | None
    stopped: bool = Field(description="Not polled until someone resumes it (PUT /feeds/{feedId}/cursor)")
    stopped_reason: str | None
    reconciliation: ReconciliationView | None = Field(
        default=None, description="The box's last reconciliation pass; null until its first"
    )
    also_registered_as: str | None = Field(
        default=None,
        description="The same box is registered under its other spelling too, as this feed (registered before "
        "one box was one feed): each event is relayed twice, under two sources, until POST "
        "/diadoc/boxes/{boxId}/merge",
    )
    merge: Merge | None = Field(default=None, description="The merge of its two spellings, if there was one")


class BoxList(CamelModel):
    boxes: list[BoxView]
    next_token: str | None = Field(description="Pass it as nextToken for the next page; null: this was the last")
