"""Admin API, Diadoc boxes: which boxes the relay polls, with which settings, and how their polls go.
The routes' contract is ``kontur_relay.admin.boxes`` and ``box_routes``; what they do,
``kontur_relay.admin.box_registration``, ``box_lookup`` and ``box_merge``."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay import wiring
from kontur_relay.admin import api as admin_api
from kontur_relay.admin import box_lookup, box_merge
from kontur_relay.admin import box_registration as registration
from kontur_relay.admin import box_routes as contract
from kontur_relay.admin.box_discovery import Discover, Discovered
from kontur_relay.admin.boxes import BoxChange, BoxId, BoxList, BoxView, MergeRequest
from kontur_relay.admin.paging import Limit, NextToken
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.feeds.diadoc.kind import DiadocSettings
from kontur_relay.feeds.diadoc.organizations import DiadocOrganizations
from kontur_relay.feeds.diadoc.source import DiadocApi
from kontur_relay.observability import logger, tracer
from kontur_relay.settings import Env

app = admin_api.resolver()


@cache
def registry() -> DynamoBoxRegistry:
    return DynamoBoxRegistry(wiring.table())


@cache
def defaults() -> registration.BoxDefaults:
    return registration.BoxDefaults.from_env(Env())


@cache
def diadoc() -> tuple[DiadocApi, str]:
    """The Diadoc client and API version; once per container, so the Diadoc token outlives an
    invocation. Two short tries fit API Gateway's 29 s."""
    settings = replace(DiadocSettings.from_env(Env()), http_retries=1, http_backoff=0.2)
    return settings.api(max_retry_after=2.0), settings.version


@app.get("/diadoc/boxes", **contract.LIST_BOXES)
def list_boxes(limit: Limit = 100, nextToken: NextToken = None) -> BoxList:
    return registration.page(registry(), limit, nextToken)


@app.get("/diadoc/boxes/<boxId>", **contract.GET_BOX)
def get_box(boxId: BoxId) -> BoxView:
    return registration.box_view(box_lookup.registered(registry(), boxId))


@app.put("/diadoc/boxes/<boxId>", **contract.PUT_BOX)
def put_box(boxId: BoxId, change: Annotated[BoxChange | None, Body()] = None) -> Response[BoxView]:
    found, who = box_lookup.lookup(registry(), boxId), admin_api.caller(app)
    box, created = registration.put(registry(), found.feed, change or BoxChange(), defaults(), who)
    body = registration.view(box, also_registered_as=found.also_registered_as)
    return Response(status_code=201 if created else 200, content_type=content_types.APPLICATION_JSON, body=body)


@app.delete("/diadoc/boxes/<boxId>", **contract.DELETE_BOX)
def delete_box(boxId: BoxId) -> Response[None]:
    registration.remove(registry(), boxId, admin_api.caller(app))
    return Response(status_code=204)


@app.post("/diadoc/boxes/<boxId>/merge", **contract.MERGE_BOX)
def merge_box(boxId: BoxId, asked: Annotated[MergeRequest | None, Body()] = None) -> BoxView:
    count = box_merge.diadoc_counter(*diadoc())
    found = box_merge.merge(registry(), boxId, asked or MergeRequest(), count, admin_api.caller(app))
    return registration.box_view(found)


@app.post("/diadoc/boxes/discover", **contract.DISCOVER)
def discover(body: Annotated[Discover | None, Body()] = None) -> Discovered:
    who, register = admin_api.caller(app), body is not None and body.register_new
    organizations = DiadocOrganizations(diadoc()[0])
    return registration.discover(organizations, registry(), defaults(), who, register=register)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
