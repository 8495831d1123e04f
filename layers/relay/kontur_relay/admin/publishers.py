"""Admin API, publishers: the contract of its routes (parameters, bodies, what each answer means)
and the HTTP answer to each of Kontur's refusals.

Bodies are camelCase, as everywhere in the admin API; Kontur's own JSON passed through (its answer
in ``kontur``, ``GET /event-publishers``) keeps Kontur's kebab-case. share-events also accepts
Kontur's spelling of its body (``events-filter``, ``docflow-types``), which it took before.

``X-Kontur-Authorization`` carries an account administrator's own Kontur credential, since
``Authorization`` carries the caller's SigV4 signature: it is never logged, stored or echoed.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path
from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from kontur_relay.admin.api import answer
from kontur_relay.admin.problems import ApiError, CamelModel, responses
from kontur_relay.feeds.extern import publishers as extern

#: Printable ASCII but space: tokens, client ids and URNs are. Not ``\S``, which Python and JSON
#: Schema (ECMAScript) read differently (Python counts \x1c-\x1f and \x85 as whitespace).
PRINTABLE = "[!-~]"
GUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
#: Both classifiers' codes have seven digits: KND 1151001 (a VAT return), OKUD 0710001 (a balance sheet).
FORM_CODE = r"^[0-9]{7}$"

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


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _KonturInput(BaseModel):
    # Kontur's shape in the API's camelCase (what the description shows and the answer echoes), or
    # in Kontur's own kebab-case names, accepted as before. Unknown keys are refused: a misspelt
    # "eventsFilter" must not turn into sharing every event, nor two spellings of one field pass.
    model_config = ConfigDict(
        alias_generator=AliasGenerator(
            validation_alias=lambda name: AliasChoices(to_camel(name), _kebab(name)),
            serialization_alias=to_camel,
        ),
        extra="forbid",
    )


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
            raise ValueError("give docflowTypes or documentForms, or leave eventsFilter out to share every event")
        return self


class ShareEvents(_KonturInput):
    subscriber: str | None = Field(
        default=None,
        pattern=rf"^{PRINTABLE}+$",
        max_length=256,
        description="The integrator's client_id; by default the one in the relay's Extern credentials",
    )
    events_filter: EventsFilter | None = None

    def subscriber_or(self, default: str | None) -> str:
        """The subscriber named, else ``default``; a 400 when there is neither."""
        subscriber = self.subscriber or default
        if subscriber is None:
            raise ApiError(
                400,
                "Name the subscriber: the relay's Extern credentials have no client_id to default to",
                detail=[
                    {"loc": ["body", "subscriber"], "msg": "required: no client_id to default to", "type": "missing"}
                ],
            )
        return subscriber

    def given_filter(self) -> dict[str, Any] | None:
        """The filter as the caller gave it, in the API's names (what a request takes back); None: every event."""
        if self.events_filter is None:
            return None
        return self.events_filter.model_dump(by_alias=True, exclude_unset=True)

    def kontur_filter(self) -> dict[str, Any] | None:
        """The same filter in Kontur's names (its forms' names, knd and okud, are one word)."""
        if self.events_filter is None:
            return None
        return {_kebab(name): value for name, value in self.events_filter.model_dump(exclude_unset=True).items()}


class Shared(CamelModel):
    account_id: str
    subscriber: str = Field(description="Who the account's events are shared with now")
    events_filter: dict[str, Any] | None = Field(
        description="The filter Kontur was sent, in this API's names: send it back as eventsFilter to share "
        "the same events again; null: every event"
    )
    kontur: Any = Field(description="Kontur's answer, unchanged (null when it had no body)")
    trace_id: str | None = Field(description="Kontur's X-Kontur-Trace-Id")


# -- the routes' descriptions -----------------------------------------------------------------------

#: How every route that calls Kontur documents its throttling and its silence.
KONTUR_BUSY_OR_SILENT = {
    503: "Kontur is throttling the integrator's requests: retry later",
    504: "Kontur did not answer in time",
}

SHARE_EVENTS: dict[str, Any] = {
    "summary": "Share an account's events with the integrator, for its administrator",
    "description": "Calls Kontur's POST /v1/{accountId}/share-events with the administrator's own credential. "
    "Sharing again replaces the filter. The body is camelCase, as the answer's eventsFilter is, so an answer's "
    "filter can be sent back; Kontur's own spelling (events-filter, docflow-types, document-forms) is accepted "
    "too. The answer's kontur field is Kontur's JSON, unchanged.",
    "tags": ["publishers"],
    "responses": responses(
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
}

LIST_PUBLISHERS: dict[str, Any] = {
    "summary": "The accounts that share their events with the integrator (Kontur's answer, unchanged)",
    "tags": ["publishers"],
    "responses": responses(
        "Kontur's JSON, unchanged: its schema is not public",
        {
            502: "Kontur failed (5xx), refused the relay's own credentials, or answered something that is not JSON",
            **KONTUR_BUSY_OR_SILENT,
        },
        content={content_types.APPLICATION_JSON: {"schema": {}}},
    ),
}

DELETE_PUBLISHER: dict[str, Any] = {
    "summary": "Stop a publisher's events from appearing in the integrator's feed",
    "tags": ["publishers"],
    "responses": responses(
        "Kontur removed the publisher",
        {
            404: "Kontur knows no such publisher of this integrator",
            502: "Kontur failed (5xx), refused the relay's own credentials, or answered something unreadable",
            **KONTUR_BUSY_OR_SILENT,
        },
        status=204,
        content={},
    ),
}


# -- Kontur's refusals as answers -----------------------------------------------------------------

#: The answer to each kind of refusal; the descriptions above say the same to the caller.
STATUSES: dict[type[extern.PublishersError], int] = {
    extern.Rejected: 400,
    extern.AdministratorRefused: 403,
    extern.NotFound: 404,
    extern.Conflict: 409,
    extern.KonturFailed: 502,
    extern.Throttled: 503,
    extern.KonturSilent: 504,
}


def answer_kontur_refusals(app: APIGatewayRestResolver) -> None:
    """Make ``app`` answer each PublishersError as the routes' descriptions promise."""

    @app.exception_handler(extern.PublishersError)
    def refused(error: extern.PublishersError) -> Response[Any]:
        fields = {"error": error.error, "trace_id": error.trace_id}
        kept = {name: value for name, value in fields.items() if value is not None}
        return answer(app, ApiError(STATUSES[type(error)], error.message, **kept))


def trace_headers(trace_id: str | None) -> dict[str, str]:
    """Kontur's trace id, passed on for support requests to Kontur."""
    return {extern.TRACE_ID: trace_id} if trace_id else {}
