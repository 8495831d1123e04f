"""The admin API's models of its JSON (camelCase bodies, strict inputs) and of its error answers
(``Problem``), the ``ApiError`` a route raises for one, and the ``responses=`` that document them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import content_types
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """The admin API's JSON: camelCase on the wire, Python names in the code."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class StrictInput(BaseModel):
    """A request body: camelCase, and unknown keys refused, so that a misspelt key never turns into a
    silently different request."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


class FieldProblem(BaseModel):
    """One rule a request broke."""

    loc: list[str | int] = Field(description='Where: ["body", "eventsFilter", "docflowTypes", 0], ["path", "feedId"]')
    msg: str = Field(description="The rule, e.g. \"String should match pattern '^[0-9]{7}$'\"")
    type: str = Field(description="pydantic's error type, e.g. string_pattern_mismatch, missing, extra_forbidden")


class Problem(CamelModel):
    """Every error answer of the admin API."""

    message: str = Field(description="What went wrong and what to do about it")
    request_id: str | None = Field(default=None, description="API Gateway's request id: quote it when asking for help")
    error: str | None = Field(default=None, description="Kontur's error id (urn:error:...), when Kontur refused")
    trace_id: str | None = Field(default=None, description="Kontur's X-Kontur-Trace-Id, when Kontur answered")
    current_version: int | None = Field(default=None, description="409: the cursor's version now")
    current_cursor: str | None = Field(default=None, description="409: the cursor now")
    detail: list[FieldProblem] | None = Field(default=None, description="422: each rule the request broke")


class ApiError(Exception):
    """An answer other than success, raised from a route; ``fields`` are Problem's (snake_case)."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


#: What every route can answer; a route tells its own meanings of other statuses (and of 403).
INVALID = {422: "The request broke a rule: each field and the rule it broke are named"}
REFUSED_BY_IAM = "API Gateway refused the request: it is not signed (SigV4), or IAM does not allow the caller"


def responses(
    ok: str, errors: Mapping[int, str], *, status: int = 200, content: Mapping[str, Any] | None = None
) -> dict[int, Any]:
    """The ``responses=`` of a route: success (its body is the route's return type unless
    ``content`` says otherwise) and each error status with what it means on this route, its body a Problem."""
    success: dict[str, Any] = {"description": ok}
    if content is not None:
        success["content"] = dict(content)
    documented: dict[int, Any] = {status: success}
    meanings = {**INVALID, **errors}
    meanings[403] = f"{REFUSED_BY_IAM}; or: {errors[403]}" if 403 in errors else REFUSED_BY_IAM
    for code, meaning in meanings.items():
        documented[code] = {"description": meaning, "content": {content_types.APPLICATION_JSON: {"model": Problem}}}
    return documented
