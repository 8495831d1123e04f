"""Admin API, publishers: which Extern accounts share their events with the integrator.

``share-events`` acts for an account administrator with their own Kontur credential, sent here as
``X-Kontur-Authorization`` (``Authorization`` carries the caller's SigV4 signature) and forwarded
to Kontur as ``Authorization``: it is never logged, stored or echoed. The publisher routes use the
integrator's credentials from the Extern secret, as the poller does.

Kontur's answers become answers the caller can act on: its 400 is a 400 with Kontur's error id and
message, a refused administrator credential a 403, its 5xx a 502, its silence a 504, and every one
carries Kontur's trace id.
"""

from __future__ import annotations

import urllib.parse
from functools import cache
from typing import Annotated, Any

import requests
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kontur_relay import wiring
from kontur_relay.admin import api as admin_api
from kontur_relay.admin.api import ApiError, responses
from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import FeedAuthError, FeedTimeout, FeedUnavailable
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.source import read_extern_error
from kontur_relay.kontur import client as http
from kontur_relay.kontur.auth import StaticCredential
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import logger, tracer

app = admin_api.resolver()

#: Answers Kontur gives when it did what was asked (share-events' own code is not documented).
SUCCESS = frozenset({200, 201, 204})
#: Every status comes back to us: this module decides what each one means to the caller.
ANY_STATUS = range(100, 600)
#: One retry: API Gateway gives up on a Lambda after 29 s, so this API cannot wait as a poller can.
RETRIES = 1
#: A Retry-After longer than this is not waited for: the caller is told to retry later instead.
MAX_RETRY_AFTER = 2.0

#: Printable ASCII but space: tokens, client ids and URNs are. Not ``\S``, which Python and JSON
#: Schema (ECMAScript) read differently (Python counts \x1c-\x1f and \x85 as whitespace).
PRINTABLE = "[!-~]"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: Both classifiers' codes have seven digits: KND 1151001 (a VAT return), OKUD 0710001 (a balance sheet).
FORM_CODE = r"^[0-9]{7}$"
TRACE_HEADER = {"X-Kontur-Trace-Id": {"description": "Kontur's trace id", "schema": {"type": "string"}}}

AccountId = Annotated[str, Path(pattern=GUID, description="The Extern account (a GUID)")]
PublisherId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=512,
        description="A publisher's id as GET /event-publishers gave it (opaque; percent-encode it)",
    ),
]
AdminCredential = Annotated[
    str,
    Header(
        alias="X-Kontur-Authorization",
        pattern=rf"^(Bearer|auth\.sid) {PRINTABLE}+$",
        description="The account administrator's own Kontur credential: `Bearer <access token>` or "
        "`auth.sid <sid>`. Forwarded to Kontur as Authorization; never logged or stored.",
    ),
]


# -- the models -----------------------------------------------------------------------------------


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _KonturInput(BaseModel):
    # Kontur's own shape and names. Unknown keys are refused: a misspelt "events-filter" must not
    # turn into sharing every event.
    model_config = ConfigDict(alias_generator=_kebab, extra="forbid")


class DocumentForm(_KonturInput):
    """A form by its KND code (tax forms) or OKUD code (statistics, the Central Bank), or both."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["knd"], "properties": {"knd": {"type": "string"}}},
                {"required": ["okud"], "properties": {"okud": {"type": "string"}}},
            ]
        },
    )

    knd: str | None = Field(default=None, pattern=FORM_CODE, examples=["1151001"])
    okud: str | None = Field(default=None, pattern=FORM_CODE, examples=["0710001"])

    @model_validator(mode="after")
    def _names_a_form(self) -> DocumentForm:
        if self.knd is None and self.okud is None:
            raise ValueError("a document form needs knd or okud")
        return self


DocflowType = Annotated[str, Field(pattern=rf"^urn:docflow:{PRINTABLE}+$", max_length=200)]


class EventsFilter(_KonturInput):
    """Which events the account shares; leave the filter out to share them all."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    # Absent is not null: a list must be given or the key left out (what Kontur makes of null is not
    # documented). The empty default is never sent: only the keys the caller gave are.
    docflow_types: list[DocflowType] = Field(
        default_factory=list, min_length=1, max_length=100, examples=[["urn:docflow:fns534-report"]]
    )
    document_forms: list[DocumentForm] = Field(default_factory=list, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _filters_something(self) -> EventsFilter:
        if not self.model_fields_set & {"docflow_types", "document_forms"}:
            raise ValueError("give docflow-types or document-forms, or leave events-filter out to share every event")
        return self


class ShareEvents(_KonturInput):
    subscriber: str | None = Field(
        default=None,
        pattern=rf"^{PRINTABLE}+$",
        max_length=256,
        description="The integrator's client_id; by default the one in the relay's Extern credentials",
    )
    events_filter: EventsFilter | None = None


class Shared(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    account_id: str
    subscriber: str = Field(description="Who the account's events are shared with now")
    events_filter: dict[str, Any] | None = Field(description="The filter sent to Kontur; null: every event")
    kontur: Any = Field(description="Kontur's answer, unchanged (null when it had no body)")
    trace_id: str | None = Field(description="Kontur's X-Kontur-Trace-Id")


# -- Kontur ---------------------------------------------------------------------------------------


class Extern:
    """The Extern API as this Lambda calls it: one connection pool, two kinds of credential."""

    def __init__(self) -> None:
        self.url = wiring.setting("EXTERN_API_URL", "https://extern-api.kontur.ru")
        self.timeout = wiring.number("HTTP_TIMEOUT_SECONDS", 5)
        self.secret: CredentialsSecret = wiring.credentials("EXTERN_CREDENTIALS_SECRET")
        self.http = http.session(retries=RETRIES, backoff=0.2, max_retry_after=MAX_RETRY_AFTER)
        self._integrator: KonturApi | None = None

    def integrator(self) -> KonturApi:
        """The integrator's own credentials, from the secret; tokens are kept across invocations."""
        if self._integrator is None:
            auth = extern_authenticator(self.secret, self.http, timeout=self.timeout)
            self._integrator = self._api(auth)
        return self._integrator

    def administrator(self, credential: str) -> KonturApi:
        """An account administrator's credential, for this one request; a 401 is final."""
        headers = {"Authorization": credential}
        api_key = self.secret.values().get("api_key")
        if api_key:
            headers["X-Kontur-Apikey"] = str(api_key)
        return self._api(StaticCredential(headers))

    def client_id(self) -> str | None:
        value = self.secret.values().get("client_id")
        return str(value) if value else None

    def call(self, api: KonturApi, method: str, path: str, *, whose: str, **kwargs: Any) -> requests.Response:
        """Kontur's successful answer, or the ApiError that tells the caller what happened."""
        try:
            response = api.request(method, path, ok=ANY_STATUS, **kwargs)
        except FeedTimeout as error:
            raise ApiError(
                504, f"Kontur did not answer {method} {path} within {self.timeout:g} s, {RETRIES + 1} tries"
            ) from error
        except FeedUnavailable as error:
            raise ApiError(502, f"Kontur could not be reached: {error}") from error
        except FeedAuthError as error:
            raise ApiError(
                502, f"Kontur's identity provider refused the relay's own credentials (the Extern secret): {error}"
            ) from error
        if response.status_code in SUCCESS:
            return response
        raise _refusal(response, whose)

    def _api(self, auth: Any) -> KonturApi:
        return KonturApi(self.url, self.http, auth, read_extern_error, timeout=self.timeout, name="Extern")


#: Kontur's refusals that mean the same whoever asked: (our status, what it means to the caller).
_REFUSALS = {
    400: (400, "Kontur rejected the request."),
    422: (400, "Kontur rejected the request."),
    404: (404, "Kontur knows no such resource."),
    409: (409, "Kontur refused the change."),
    429: (503, "Kontur is throttling the integrator's requests; retry later."),
}


def _refusal(response: requests.Response, whose: str) -> ApiError:
    """What Kontur's error means to the caller; Kontur's error id and trace id travel along."""
    details = read_extern_error(response)
    status = response.status_code
    fields = {"error": details.code, "trace_id": details.trace_id}
    said = f"Kontur answered {status}: {details.message}"
    if status in (401, 403) and whose == "administrator":
        return ApiError(
            403, f"Kontur refused the administrator's credential (X-Kontur-Authorization). {said}", **fields
        )
    if status in (401, 403):
        return ApiError(
            502,
            f"Kontur refused the relay's own credentials (the Extern secret). {said}. Check the secret, and "
            "that Kontur switched the events API on for the integrator",
            **fields,
        )
    ours, meaning = _REFUSALS.get(status, (502, "Kontur failed."))
    return ApiError(ours, f"{meaning} {said}", **fields)


@cache
def extern() -> Extern:
    return Extern()


def _trace(response: requests.Response) -> dict[str, str]:
    """Kontur's trace id, passed on for support requests to Kontur."""
    trace_id = response.headers.get("X-Kontur-Trace-Id")
    return {"X-Kontur-Trace-Id": trace_id} if trace_id else {}


def _json(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ApiError(
            502,
            f"Kontur answered {response.status_code} with a body that is not JSON",
            trace_id=response.headers.get("X-Kontur-Trace-Id"),
        ) from None


#: How every route that calls Kontur documents its throttling and its silence.
KONTUR_BUSY_OR_SILENT = {
    503: "Kontur is throttling the integrator's requests: retry later",
    504: "Kontur did not answer in time",
}


# -- the routes -----------------------------------------------------------------------------------


@app.post(
    "/accounts/<accountId>/share-events",
    summary="Share an account's events with the integrator, for its administrator",
    description="Calls Kontur's POST /v1/{accountId}/share-events with the administrator's own credential. "
    "Sharing again replaces the filter.",
    tags=["publishers"],
    responses=responses(
        "Kontur accepted: the account's events appear in the integrator's feed from now on",
        {
            400: "Kontur rejected the request (its error id and message are in the answer), or no subscriber "
            "was given and the relay's credentials name none",
            403: "Kontur refused the administrator's credential",
            404: "Kontur knows no such account",
            409: "Kontur refused the change",
            502: "Kontur failed (5xx) or answered something unreadable",
            **KONTUR_BUSY_OR_SILENT,
        },
    ),
)
def share_events(
    accountId: AccountId,
    credential: AdminCredential,
    body: Annotated[ShareEvents | None, Body()] = None,
) -> Shared:
    extern_api = extern()
    request = body or ShareEvents()
    subscriber = request.subscriber or extern_api.client_id()
    if subscriber is None:
        raise ApiError(
            400,
            "Name the subscriber: the relay's Extern credentials have no client_id to default to",
            detail=[{"loc": ["body", "subscriber"], "msg": "required: no client_id to default to", "type": "missing"}],
        )
    sent: dict[str, Any] = {"subscriber": subscriber}
    if request.events_filter is not None:
        sent["events-filter"] = request.events_filter.model_dump(by_alias=True, exclude_unset=True)
    path = f"/v1/{accountId}/share-events"
    response = extern_api.call(extern_api.administrator(credential), "POST", path, whose="administrator", json=sent)
    trace_id = response.headers.get("X-Kontur-Trace-Id")
    logger.info(
        "An account shared its events",
        extra={
            "account_id": accountId,
            "subscriber": subscriber,
            "events_filter": sent.get("events-filter"),
            "by": admin_api.caller(app).name,
            "trace_id": trace_id,
        },
    )
    return Shared(
        account_id=accountId,
        subscriber=subscriber,
        events_filter=sent.get("events-filter"),
        kontur=_json(response),
        trace_id=trace_id,
    )


@app.get(
    "/event-publishers",
    summary="The accounts that share their events with the integrator (Kontur's answer, unchanged)",
    tags=["publishers"],
    responses=responses(
        "Kontur's JSON, unchanged: its schema is not public",
        {
            502: "Kontur failed (5xx), refused the relay's own credentials, or answered something that is not JSON",
            **KONTUR_BUSY_OR_SILENT,
        },
        content={content_types.APPLICATION_JSON: {"schema": {}}},
    ),
)
def list_publishers() -> Response[Any]:
    extern_api = extern()
    response = extern_api.call(extern_api.integrator(), "GET", "/v1/event-publishers", whose="integrator")
    _json(response)  # refuse to pass on what is not JSON
    return Response(
        status_code=200, content_type=content_types.APPLICATION_JSON, body=response.text, headers=_trace(response)
    )


@app.delete(
    "/event-publishers/<publisherId>",
    summary="Stop a publisher's events from appearing in the integrator's feed",
    tags=["publishers"],
    responses=responses(
        "Kontur removed the publisher",
        {
            404: "Kontur knows no such publisher of this integrator",
            502: "Kontur failed (5xx), refused the relay's own credentials, or answered something unreadable",
            **KONTUR_BUSY_OR_SILENT,
        },
        status=204,
        content={},
    ),
)
def delete_publisher(publisherId: PublisherId) -> Response[None]:
    segment = urllib.parse.quote(publisherId, safe="")
    if segment in (".", ".."):
        # A dot segment would be resolved away by the HTTP client, deleting something else.
        segment = segment.replace(".", "%2E")
    extern_api = extern()
    response = extern_api.call(extern_api.integrator(), "DELETE", f"/v1/event-publishers/{segment}", whose="integrator")
    logger.info(
        "A publisher was removed",
        extra={
            "publisher_id": publisherId,
            "by": admin_api.caller(app).name,
            "trace_id": response.headers.get("X-Kontur-Trace-Id"),
        },
    )
    return Response(status_code=204, headers=_trace(response))


# Never log the event: its X-Kontur-Authorization header is an administrator's credential.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
