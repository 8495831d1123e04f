"""Admin API, publishers: which Extern accounts share their events with the integrator.

The routes compose: their contract is ``kontur_relay.admin.publishers``', the calls to Kontur and
what its answers mean ``kontur_relay.feeds.extern.publishers``'. The administrator's
``X-Kontur-Authorization`` credential goes to Kontur and nowhere else: never logged, stored or echoed.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay import wiring
from kontur_relay.admin import api as admin_api
from kontur_relay.admin import publishers as contract
from kontur_relay.admin.publishers import AccountId, AdminCredential, PublisherId, Shared, ShareEvents
from kontur_relay.feeds.extern.kind import ExternSettings
from kontur_relay.feeds.extern.publishers import ExternPublishers
from kontur_relay.observability import logger, tracer
from kontur_relay.settings import Env

app = admin_api.resolver()
contract.answer_kontur_refusals(app)


@cache
def extern() -> ExternPublishers:
    # Once per container: the connection pool and the integrator's tokens outlive an invocation.
    settings = ExternSettings.from_env(Env())
    return ExternPublishers(
        settings.api_url, wiring.credentials(settings.credentials_secret, "extern"), timeout=settings.http_timeout
    )


@app.post("/accounts/<accountId>/share-events", **contract.SHARE_EVENTS)
def share_events(
    accountId: AccountId, credential: AdminCredential, body: Annotated[ShareEvents | None, Body()] = None
) -> Shared:
    request = body or ShareEvents()
    subscriber = request.subscriber_or(extern().client_id())
    kontur = extern().share_events(accountId, credential, subscriber, request.kontur_filter())
    shared = Shared(
        account_id=accountId,
        subscriber=subscriber,
        events_filter=request.given_filter(),
        kontur=kontur.body,
        trace_id=kontur.trace_id,
    )
    by = admin_api.caller(app).name
    logger.info("An account shared its events", extra={**shared.model_dump(exclude={"kontur"}), "by": by})
    return shared


@app.get("/event-publishers", **contract.LIST_PUBLISHERS)
def list_publishers() -> Response[Any]:
    listed = extern().publishers()
    headers = contract.trace_headers(listed.trace_id)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=listed.text, headers=headers)


@app.delete("/event-publishers/<publisherId>", **contract.DELETE_PUBLISHER)
def delete_publisher(publisherId: PublisherId) -> Response[None]:
    trace_id = extern().remove(publisherId)
    by = admin_api.caller(app).name
    logger.info("A publisher was removed", extra={"publisher_id": publisherId, "by": by, "trace_id": trace_id})
    return Response(status_code=204, headers=contract.trace_headers(trace_id))


# Never log the event: its X-Kontur-Authorization header is an administrator's credential.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
