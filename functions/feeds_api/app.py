"""Admin API, feeds: every feed's cursor and health, and deliberate replay or skip.

``PUT /feeds/{feedId}/cursor`` is guarded by the cursor's version, the same condition the pollers
write under: a change made against a version a poller has since moved answers 409 and changes
nothing, and a poller that read the cursor before an operator's change loses its own write and
stops. Either way no one's write is silently overwritten.
"""

from __future__ import annotations

import re
from datetime import UTC
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kontur_relay import wiring
from kontur_relay.admin import api as admin_api
from kontur_relay.admin.api import ApiError, CamelModel, responses
from kontur_relay.aws.cursors import DynamoCursorStore, FeedStatus
from kontur_relay.domain.errors import CursorConflict
from kontur_relay.feeds.diadoc import source as diadoc_source
from kontur_relay.observability import logger, metrics, tracer

app = admin_api.resolver()

#: Feed ids are the relay's own (``extern``, ``diadoc:<boxId>``): printable, no slash, bounded.
FEED_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,254}$"
#: An Extern cursor is an event id (``4ca_137``), or one kept after an old server's
#: ``last-event-id`` (``after:4ca_137``); anything else the feed would refuse on the next run.
EXTERN_CURSOR = re.compile(r"^(after:)?[0-9a-fA-F]+_[0-9a-fA-F]+$")

FeedId = Annotated[
    str,
    Path(
        pattern=FEED_ID_PATTERN,
        description="The feed: `extern`, or `diadoc:<boxId>` (percent-encode `:` and `@` if your client does not)",
        examples=["extern", "diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru"],
    ),
]


NO_FEED = "No feed with this id has run yet"


@cache
def cursors() -> DynamoCursorStore:
    return wiring.cursor_store()


# -- the models -----------------------------------------------------------------------------------


class FeedView(CamelModel):
    """A feed as operators see it."""

    feed: str = Field(description="The feed id: the key of its cursor")
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
    updated_by: str | None = Field(description="The IAM principal who last set the cursor by hand")


class FeedList(CamelModel):
    feeds: list[FeedView]


class _Input(BaseModel):
    # Unknown keys are refused: a misspelt key must not turn into a silently different request.
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


def _one_position(schema: dict[str, Any]) -> None:
    # What the validator below enforces, for the OpenAPI description: exactly one of the two, and a
    # timestamp that is never null (pydantic would describe the Optional as nullable).
    schema["oneOf"] = [{"required": ["cursor"]}, {"required": ["timestamp"]}]
    timestamp = schema["properties"]["timestamp"]
    timestamp.update(next(choice for choice in timestamp.pop("anyOf") if choice.get("type") != "null"))
    timestamp.pop("default", None)


class CursorChange(_Input):
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


def _view(status: FeedStatus) -> FeedView:
    return FeedView(
        feed=status.feed,
        kind=status.feed.partition(":")[0],
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
        updated_by=status.updated_by,
    )


def _status(feed: str) -> FeedStatus:
    status = cursors().status(feed)
    if status is None:
        raise ApiError(404, f"No feed {feed}: feeds appear here after their first run (GET /feeds lists them)")
    return status


def _position(feed: str, change: CursorChange) -> str | None:
    kind = feed.partition(":")[0]
    if change.timestamp is not None:
        if kind != "diadoc":
            raise ApiError(
                422,
                f"{feed} has no point-in-time position: give a cursor (an event id) instead",
                detail=[
                    {"loc": ["body", "timestamp"], "msg": "only Diadoc feeds take a timestamp", "type": "value_error"}
                ],
            )
        return diadoc_source.cursor_at(change.timestamp.astimezone(UTC))
    if kind == "extern" and change.cursor is not None and not EXTERN_CURSOR.match(change.cursor):
        raise ApiError(
            422,
            f"{change.cursor!r} is not an Extern event id (like 4ca_137): the feed would refuse it",
            detail=[{"loc": ["body", "cursor"], "msg": f"must match {EXTERN_CURSOR.pattern}", "type": "value_error"}],
        )
    return change.cursor


# -- the routes -----------------------------------------------------------------------------------


@app.get(
    "/feeds",
    summary="Every feed's cursor and health",
    tags=["feeds"],
    responses=responses("Every feed the relay has run", {}),
)
def list_feeds() -> FeedList:
    return FeedList(feeds=sorted((_view(s) for s in cursors().statuses()), key=lambda view: view.feed))


@app.get(
    "/feeds/<feedId>",
    summary="One feed's cursor and health",
    tags=["feeds"],
    responses=responses("The feed", {404: NO_FEED}),
)
def get_feed(feedId: FeedId) -> FeedView:
    return _view(_status(feedId))


@app.put(
    "/feeds/<feedId>/cursor",
    summary="Replay or skip: set a feed's cursor (also resumes a stopped feed)",
    description="Guarded by the cursor's version: send the version GET /feeds/{feedId} answered. "
    "A stale version answers 409 with the current one and changes nothing. Every change is logged "
    "with the IAM principal who made it. To resume a stopped feed where it is, send its current cursor.",
    tags=["feeds"],
    responses=responses(
        "The feed after the change",
        {
            403: "The request carries no IAM principal to record the change with",
            404: NO_FEED,
            409: "The cursor moved since it was read: the answer names its current version and cursor",
        },
    ),
)
def set_cursor(
    feedId: FeedId,
    change: Annotated[CursorChange, Body()],
) -> FeedView:
    who = admin_api.caller(app)
    if who.name is None:
        # API Gateway's IAM authorizer always names the caller; without one, the route is open.
        raise ApiError(403, "No IAM principal in the request: the route must be IAM-authenticated")
    feed = feedId
    before = _status(feed)
    position = _position(feed, change)
    expected = change.expected_version
    try:
        cursors().set_cursor(feed, position, expected_version=expected, by=who.name)
    except CursorConflict:
        now = _status(feed)
        raise ApiError(
            409,
            f"The cursor of {feed} is at version {now.version}, not {expected}: it moved since you read it. "
            f"Read it again and send expectedVersion {now.version} if you still want the change.",
            current_version=now.version,
            current_cursor=now.cursor,
        ) from None
    after = _status(feed)
    logger.info(
        "An operator set a feed's cursor",
        extra={
            "feed": feed,
            "cursor_before": before.cursor,
            "cursor_after": position,
            "version": after.version,
            "resumed": before.stopped_reason is not None,
            "by": who.name,
            "principal": who.principal,
            "source_ip": who.source_ip,
        },
    )
    with single_metric(name="CursorSet", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension("feed", feed)
    return _view(after)


# The event carries no credential here, but logging events stays off whatever the environment says.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
