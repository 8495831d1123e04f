"""What the admin API's Lambdas share: a validating REST resolver whose every failure is a JSON
answer the caller can act on (its models are in ``admin.problems``), and who asked.

API Gateway authenticates every route with IAM (SigV4) before a Lambda runs, so the principal in
``requestContext.identity`` is a verified caller: what an operator's change is recorded with.
Validation is Powertools' (pydantic models on the routes); this module only decides how a rejected
request reads: 422 naming each field and the rule it broke, never echoing the value (a header may
hold an administrator's credential).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from re import Match
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from typing_extensions import override

from kontur_relay.admin.problems import ApiError, FieldProblem, Problem
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.observability import logger, metrics


def problem(app: APIGatewayRestResolver, status: int, message: str, **fields: Any) -> Response[Any]:
    """A Problem answer, with the request id."""
    body = Problem(message=message, request_id=app.current_event.request_context.request_id, **fields)
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def answer(app: APIGatewayRestResolver, error: ApiError) -> Response[Any]:
    """The Problem answer to an ApiError, counted and logged (a failure of ours as a warning)."""
    _count(error.status)
    level = logger.warning if error.status >= 500 else logger.info
    level(error.message, extra={"status": error.status, **error.fields})
    return problem(app, error.status, error.message, **error.fields)


@dataclass(frozen=True)
class Caller:
    """The IAM principal API Gateway verified: a user's or an assumed role's ARN."""

    arn: str | None
    #: The access key's principal id (``AROA...:session`` for roles), when there is no ARN.
    principal: str | None
    source_ip: str | None

    @property
    def name(self) -> str | None:
        return self.arn or self.principal


def caller(app: APIGatewayRestResolver) -> Caller:
    identity = app.current_event.request_context.identity
    return Caller(arn=identity.user_arn, principal=identity.caller, source_ip=identity.source_ip)


def _field_problems(errors: Sequence[Mapping[str, Any]]) -> list[FieldProblem]:
    # pydantic's ``input`` and ``ctx`` are left out: the input may be a credential.
    found = []
    for error in errors:
        kind = str(error.get("type") or "invalid")
        loc = [part for part in error.get("loc", ()) if isinstance(part, str | int)]
        found.append(FieldProblem(loc=loc, msg=str(error.get("msg") or kind), type=kind))
    return found


def _summary(found: Sequence[FieldProblem]) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in item.loc)}: {item.msg}" for item in found)


def _count(status: int) -> None:
    with single_metric(name="AdminApiErrors", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension("status", str(status))


class AdminResolver(APIGatewayRestResolver):
    """Powertools' REST resolver, with two decisions of this API.

    The REST API passes the path percent-encoded (``diadoc:box@x.ru`` arrives as
    ``diadoc%3Abox%40x.ru``): routes match it as sent, so an encoded ``/`` stays inside its segment,
    and each path parameter is decoded once before it is validated and handed to the route.

    Bodies are JSON objects only. Powertools would also read form and multipart bodies into the
    models (and answers a multipart body without a boundary with a bare 500): those are refused with
    415 first. It would also read a JSON array as its first item (its rule for form fields), so that
    ``[null]`` passes for an absent body: every body of this API is an object, anything else is 422.
    A body nested deeper than ``MAX_DEPTH`` or holding a number Python will not read is 422 too, before
    anything recurses through it: a RecursionError would fail the invocation (API Gateway's 502).
    """

    @override
    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        body = event.get("body")
        if body and not _json_content(event.get("headers") or {}):
            return _refused(event, 415, JSON_ONLY)
        if body:
            try:
                parsed = _json_or_none(body)
            except Unreadable as error:
                return _unreadable(event, str(error))
            if isinstance(parsed, list):
                where = FieldProblem(loc=["body"], msg="Input should be an object", type="model_type")
                return _refused(event, 422, "The request is invalid: body: Input should be an object", detail=[where])
        return super().resolve(event, context)

    @override
    def _convert_matches_into_route_keys(self, match: Match[str]) -> dict[str, str]:
        return {name: urllib.parse.unquote(value) for name, value in match.groupdict().items()}


JSON_ONLY = "Send the body as JSON (Content-Type: application/json)"


def _refused(event: Mapping[str, Any], status: int, message: str, **fields: Any) -> dict[str, Any]:
    """A Problem answer given before Powertools reads the request."""
    request_id = (event.get("requestContext") or {}).get("requestId")
    body = Problem(message=message, request_id=request_id, **fields)
    logger.info("Refused a body", extra={"status": status, "reason": message})
    return {
        "statusCode": status,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": body.model_dump_json(by_alias=True, exclude_none=True),
        "isBase64Encoded": False,
    }


#: Deeper than any body of this API: four levels are the most a route reads. A body nested deeper is
#: refused before anything recurses through it (the JSON decoder, pydantic, a traceback's formatting).
MAX_DEPTH = 32


class Unreadable(ValueError):
    """JSON that is well formed but that this API will not read: what is wrong, never the body itself."""


def _json_or_none(body: str) -> Any:
    """The body's JSON; None when it is malformed (Powertools refuses that: 422 json_invalid, with
    where it broke). Raises Unreadable for JSON nested too deeply or with a number Python will not read."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise Unreadable(f"the body is JSON nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError:
        return None
    except ValueError:
        # Python refuses integers of more than 4,300 digits; a JSON number that long is nobody's value.
        raise Unreadable("the body holds a number too long to read") from None
    if _depth(value) > MAX_DEPTH:
        raise Unreadable(f"the body is JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deeply ``value`` nests arrays and objects, counted without recursion."""
    deepest, waiting = 0, [(value, 1)]
    while waiting:
        item, level = waiting.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        waiting.extend((child, level + 1) for child in children)
    return deepest


def _unreadable(event: Mapping[str, Any], why: str) -> dict[str, Any]:
    where = FieldProblem(loc=["body"], msg=why, type="json_invalid")
    return _refused(event, 422, f"The request is invalid: body: {why}", detail=[where])


def _json_content(headers: Mapping[str, Any]) -> bool:
    """No Content-Type (read as JSON, as Powertools does) or a JSON one."""
    given = next((str(value) for name, value in headers.items() if name.lower() == "content-type"), "")
    media = given.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or (media.startswith("application/") and media.endswith("+json"))


def resolver() -> AdminResolver:
    """A resolver with request validation whose every failure is a Problem."""
    app = AdminResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)
    def invalid(error: RequestValidationError) -> Response[Any]:
        found = _field_problems(error.errors())
        logger.info("Rejected an invalid request", extra={"problems": [p.model_dump() for p in found]})
        return problem(app, 422, f"The request is invalid: {_summary(found)}", detail=found)

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported(error: RequestUnsupportedContentType) -> Response[Any]:
        return problem(app, 415, JSON_ONLY)

    @app.not_found
    def no_route(error: NotFoundError) -> Response[Any]:
        event = app.current_event
        return problem(app, 404, f"No route {event.http_method} {event.path}")

    @app.exception_handler(ServiceError)
    def service_error(error: ServiceError) -> Response[Any]:
        return problem(app, error.status_code, str(error.msg))

    @app.exception_handler(ApiError)
    def api_error(error: ApiError) -> Response[Any]:
        return answer(app, error)

    @app.exception_handler(ConfigurationError)
    def misconfigured(error: ConfigurationError) -> Response[Any]:
        _count(500)
        logger.exception("The admin API is misconfigured")
        return problem(app, 500, f"The relay is misconfigured: {error}. Quote the request id to its operators.")

    @app.exception_handler(Exception)
    def unexpected(error: Exception) -> Response[Any]:
        _count(500)
        logger.exception("Unexpected error in the admin API")
        return problem(app, 500, "Unexpected error in the relay's admin API. Quote the request id to its operators.")

    return app
