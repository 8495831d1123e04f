"""A small IAM policy evaluator for the template tests: explicit deny over allow, actions and
resources as globs, the condition operators the template uses. Enough to judge the template's own
policies (roles, the topic's and the bucket's), not IAM at large: an operator it does not know fails
the test that meets it."""

from __future__ import annotations

import fnmatch
from typing import Any

from tests import rights

#: Item operations: the request names one item, whose partition key is ``dynamodb:LeadingKeys``.
ITEM_OPERATIONS = {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:DeleteItem"}


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _holds(operator: str, key: str, wanted: Any, context: dict[str, list[str]]) -> bool:
    qualifier, _, test = operator.rpartition(":")
    values = context.get(key)
    patterns = [str(item) for item in listed(wanted)]
    negated = test.replace("Not", "", 1) if "Not" in test else None
    base = negated or test
    if base in ("StringEquals", "ArnEquals"):
        match = lambda value: value in patterns  # noqa: E731
    elif base in ("StringLike", "ArnLike"):
        match = lambda value: any(fnmatch.fnmatchcase(value, p) for p in patterns)  # noqa: E731
    elif base == "Bool":
        match = lambda value: value.lower() in [p.lower() for p in patterns]  # noqa: E731
    else:
        raise AssertionError(f"the evaluator here does not know the condition operator {operator}")
    if qualifier == "ForAllValues":
        return all(match(value) for value in values or [])  # an absent key: true, as IAM has it
    if qualifier == "ForAnyValue":
        return any(match(value) for value in values or [])
    if negated:
        return values is None or not any(match(value) for value in values)  # absent: true
    return values is not None and len(values) == 1 and match(values[0])


def applies(
    statement: dict[str, Any], action: str, arn: str, context: dict[str, list[str]], principal: str | None = None
) -> bool:
    """Whether ``statement`` speaks of this request; ``principal``: the caller's ARN, for resource policies."""
    if not any(fnmatch.fnmatchcase(action.lower(), str(p).lower()) for p in listed(statement.get("Action", []))):
        return False
    if not any(fnmatch.fnmatchcase(arn, str(pattern)) for pattern in listed(statement.get("Resource", []))):
        return False
    if "Principal" in statement:
        named = statement["Principal"]
        everyone = named in ("*", {"AWS": "*"})
        if not everyone and principal not in listed(named.get("AWS", [])):
            return False
    return all(
        _holds(operator, key, wanted, context)
        for operator, tests in statement.get("Condition", {}).items()
        for key, wanted in tests.items()
    )


def decide(
    statements: list[dict[str, Any]], action: str, arn: str, context: dict[str, list[str]], principal: str | None = None
) -> str:
    """``denied`` (an explicit deny), ``allowed``, or ``silent`` (neither: the caller's own IAM decides)."""
    if any(s["Effect"] == "Deny" and applies(s, action, arn, context, principal) for s in statements):
        return "denied"
    if any(s["Effect"] == "Allow" and applies(s, action, arn, context, principal) for s in statements):
        return "allowed"
    return "silent"


def verdict(statements: list[dict[str, Any]], call: rights.Call, arn: str) -> bool:
    """Whether a role with ``statements`` may make ``call`` on ``arn``."""
    context: dict[str, list[str]] = {}
    if call.action in ITEM_OPERATIONS and call.key is not None:
        context["dynamodb:LeadingKeys"] = [call.key]
    if call.attributes:
        context["dynamodb:Attributes"] = sorted(call.attributes)
    return decide(statements, call.action, arn, context) == "allowed"
