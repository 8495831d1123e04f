"""The admin API's feeds: what operators see of a feed, and the cursor change they may ask for."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import AwareDatetime, ConfigDict, Field, field_validator, model_validator

from kontur_relay.admin import paging
from kontur_relay.admin.api import Caller
from kontur_relay.admin.problems import ApiError, CamelModel, StrictInput, responses
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.feed_status import FeedStatus
from kontur_relay.domain.errors import CursorConflict
from kontur_relay.feeds import KINDS, PositionRefused, kind_name, kind_named
from kontur_relay.observability import logger, metrics

#: Feed ids are the relay's own (``extern``, ``diadoc:<boxId>``): printable, no slash, bounded.
FEED_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,254}$"

FeedId = Annotated[
    str,
    Path(
        pattern=FEED_ID_PATTERN,
        description="The feed: `extern`, or `diadoc:<boxId>` (percent-encode `:` and `@` if your client does not)",
        examples=["extern", "diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru"],
    ),
]


class FeedView(CamelModel):
    """A feed as operators see it."""

    feed: str = Field(
        description="The feed id, the key of its cursor: `extern`, or `diadoc:<boxId>`. `diadoc` alone is the "
        "Diadoc poller's own row (see GET /feeds), not a feed"
    )
    kind: str = Field(description="`extern` or `diadoc`")
    cursor: str | None = Field(description="Where the next run reads from; null: where a new feed starts")
    version: int = Field(description="The cursor's version: send it as expectedVersion to change the cursor")
    events_relayed: int = Field(description="Events published since the feed began (replays count again)")
    last_success_at: str | None = Field(description="When a run last ended without error (UTC)")
    backlog: int | None = Field(description="Events waiting after the last run, where the feed tells (Diadoc)")
    backlog_capped: bool = Field(description="The backlog is a lower bound: the feed caps its count")
    last_error: str | None = Field(description="The last run's error, kept until a later one replaces it")
    last_error_at: str | None
    stopped: bool = Field(description="The feed is not polled until someone sets its cursor")
    stopped_reason: str | None
    running: bool = Field(description="A run holds the feed's lease right now")
    configured: bool = Field(description="false: the feed's credentials secret is still empty, so it does not run")
    not_configured: str | None = Field(description="What to configure before the feed can run")
    updated_by: str | None = Field(description="The IAM principal who last set the cursor by hand")


class FeedList(CamelModel):
    feeds: list[FeedView] = Field(description="A page of feeds, by feed id")
    next_token: str | None = Field(description="Pass it as nextToken for the next page; null: this was the last")


def _one_position(schema: dict[str, Any]) -> None:
    # What the validator below enforces, for the OpenAPI description: exactly one of the two, and a
    # timestamp that is never null (pydantic would describe the Optional as nullable).
    schema["oneOf"] = [{"required": ["cursor"]}, {"required": ["timestamp"]}]
    timestamp = schema["properties"]["timestamp"]
    timestamp.update(next(choice for choice in timestamp.pop("anyOf") if choice.get("type") != "null"))
    timestamp.pop("default", None)


class CursorChange(StrictInput):
    """Where the feed's next run reads from: a cursor the feed gave, or (Diadoc) a point in time."""

    model_config = ConfigDict(json_schema_extra=_one_position)

    cursor: str | None = Field(
        default=None,
        # Every cursor a feed gives is printable ASCII (event ids, base64 IndexKeys).
        pattern="^[!-~]+$",
        min_length=1,
        max_length=1024,
        description="Extern: an event id (`4ca_137`), the next run reads from that event on. "
        "Diadoc: an IndexKey, the next run reads the events after it. "
        "null: the next run starts as a new feed does (Extern: from the beginning; Diadoc: per its `start`).",
    )
    timestamp: AwareDatetime | None = Field(
        default=None,
        description="Diadoc only, instead of a cursor: the next run reads the box's events from this moment "
        "on. RFC 3339 with a time zone, e.g. 2024-05-01T00:00:00Z",
    )
    # Strict: true is not version 1.
    expected_version: int = Field(strict=True, ge=0, le=2**53, description="The version GET /feeds/{feedId} answered")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _rfc3339_text(cls, value: Any) -> Any:
        # pydantic would also take a number of seconds; the description promises a string.
        if value is not None and not isinstance(value, str):
            raise ValueError("must be an RFC 3339 string")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> CursorChange:
        given = self.model_fields_set & {"cursor", "timestamp"}
        if len(given) != 1:
            raise ValueError("give either cursor or timestamp, not both and not neither")
        if given == {"timestamp"} and self.timestamp is None:
            raise ValueError("timestamp cannot be null")
        return self


def feed_view(status: FeedStatus) -> FeedView:
    return FeedView(
        feed=status.feed,
        kind=kind_name(status.feed),
        cursor=status.cursor,
        version=status.version,
        events_relayed=status.events_relayed,
        last_success_at=status.last_success_at,
        backlog=status.backlog,
        backlog_capped=status.backlog_capped,
        last_error=status.last_error,
        last_error_at=status.last_error_at,
        stopped=status.stopped_reason is not None,
        stopped_reason=status.stopped_reason,
        running=status.running,
        configured=status.not_configured is None,
        not_configured=status.not_configured,
        updated_by=status.updated_by,
    )


NO_FEED = "No feed with this id has run yet"
LISTED = "A page of the feeds the relay has run, and the Diadoc poller's own row"
#: The table holds one row per feed kind's poller where the kind has one poller for many feeds; the
#: list shows it because it says what no box's row can: whether the kind runs at all.
KIND_ROWS = (
    "One row per feed (`extern`, `diadoc:<boxId>`), and the Diadoc poller's own row, `diadoc`: not a feed "
    "but the poller of every box, with its lease (`running`: a run is going on) and whether Diadoc is "
    "configured at all (`configured`, `notConfigured`). It has no cursor, and PUT /feeds/diadoc/cursor is "
    "refused: set a box's cursor instead."
)
LIST: dict[str, Any] = {
    "tags": ["feeds"],
    "description": KIND_ROWS,
    "responses": responses(LISTED, {400: paging.NOT_OURS}),
}
GET_RESPONSES = responses("The feed", {404: NO_FEED})
SET_CURSOR = (
    "Guarded by the cursor's version: send the version GET /feeds/{feedId} answered. "
    "A stale version answers 409 with the current one and changes nothing. Every change is logged "
    "with the IAM principal who made it. To resume a stopped feed where it is, send its current cursor."
)
SET_CURSOR_RESPONSES = responses(
    "The feed after the change",
    {
        403: "The request carries no IAM principal to record the change with",
        404: NO_FEED,
        409: "The cursor moved since it was read: the answer names its current version and cursor",
    },
)


def page(cursors: DynamoCursorStore, limit: int, token: str | None) -> FeedList:
    """A page of feeds and kinds' poller rows (KIND_ROWS); any other item of the table is neither."""
    found, last = cursors.page(limit, paging.start_key(token), keep=lambda feed: kind_name(feed) in KINDS)
    views = sorted((feed_view(status) for status in found), key=lambda shown: shown.feed)
    return FeedList(feeds=views, next_token=paging.next_token(last))


def status(cursors: DynamoCursorStore, feed: str) -> FeedStatus:
    found = cursors.status(feed)
    if found is None:
        raise ApiError(404, f"No feed {feed}: feeds appear here after their first run (GET /feeds lists them)")
    return found


def position(feed: str, change: CursorChange) -> str | None:
    """The cursor the change stores, by the rules of the feed's kind."""
    name = kind_name(feed)
    if name not in KINDS:
        raise ApiError(404, f"No feed {feed}: feed ids start with one of {', '.join(KINDS)}")
    try:
        return kind_named(name).position(feed, change.cursor, change.timestamp)
    except PositionRefused as refused:
        problem = {"loc": ["body", refused.field], "msg": str(refused), "type": "value_error"}
        raise ApiError(422, str(refused), detail=[problem]) from None


def set_cursor(cursors: DynamoCursorStore, feed: str, change: CursorChange, who: Caller) -> FeedStatus:
    """Move the feed's cursor at the version the operator read, and record who did it."""
    if who.name is None:
        # API Gateway's IAM authorizer always names the caller; without one, the route is open.
        raise ApiError(403, "No IAM principal in the request: the route must be IAM-authenticated")
    before = status(cursors, feed)
    target = position(feed, change)
    expected = change.expected_version
    try:
        cursors.set_cursor(feed, target, expected_version=expected, by=who.name)
    except CursorConflict:
        now = status(cursors, feed)
        raise ApiError(
            409,
            f"The cursor of {feed} is at version {now.version}, not {expected}: it moved since you read it. "
            f"Read it again and send expectedVersion {now.version} if you still want the change.",
            current_version=now.version,
            current_cursor=now.cursor,
        ) from None
    after = status(cursors, feed)
    logger.info(
        "An operator set a feed's cursor",
        extra={
            "feed": feed,
            "cursor_before": before.cursor,
            "cursor_after": target,
            "version": after.version,
            "resumed": before.stopped_reason is not None,
            "by": who.name,
            "principal": who.principal,
            "source_ip": who.source_ip,
        },
    )
    with single_metric(name="CursorSet", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension("kind", kind_name(feed))
    return after
