"""Admin API, feeds: every feed's cursor and health, and deliberate replay or skip.

``PUT /feeds/{feedId}/cursor`` is guarded by the cursor's version, the same condition the pollers
write under: a change made against a version a poller has since moved answers 409 and changes
nothing, and a poller that read the cursor before an operator's change loses its own write and
stops. Either way no one's write is silently overwritten.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay import wiring
from kontur_relay.admin import api as admin_api
from kontur_relay.admin import feeds
from kontur_relay.admin.feeds import CursorChange, FeedId, FeedList, FeedView, feed_view
from kontur_relay.admin.paging import Limit, NextToken
from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.observability import logger, tracer

app = admin_api.resolver()


@cache
def cursors() -> DynamoCursorStore:
    return wiring.cursor_store()


@app.get("/feeds", summary="Every feed's cursor and health, a page at a time", **feeds.LIST)
def list_feeds(limit: Limit = 100, nextToken: NextToken = None) -> FeedList:
    return feeds.page(cursors(), limit, nextToken)


@app.get("/feeds/<feedId>", summary="One feed's cursor and health", tags=["feeds"], responses=feeds.GET_RESPONSES)
def get_feed(feedId: FeedId) -> FeedView:
    return feed_view(feeds.status(cursors(), feedId))


@app.put(
    "/feeds/<feedId>/cursor",
    summary="Replay or skip: set a feed's cursor (also resumes a stopped feed)",
    description=feeds.SET_CURSOR,
    tags=["feeds"],
    responses=feeds.SET_CURSOR_RESPONSES,
)
def set_cursor(feedId: FeedId, change: Annotated[CursorChange, Body()]) -> FeedView:
    return feed_view(feeds.set_cursor(cursors(), feedId, change, admin_api.caller(app)))


# The event carries no credential here, but logging events stays off whatever the environment says.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
