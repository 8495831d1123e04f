"""The AWS calls each function makes while the tests drive it, recorded through botocore's event hooks
on the default session (the one every handler's clients come from), for tests/template/test_rights.py.

A call is the function's when it is made inside the function's handler, or in a thread started from
there (the pollers' page readers, box turns and cursor writers). The resource it names is recorded
by the environment variable that names it (``CURSORS_TABLE``, ``EXTERN_CREDENTIALS_SECRET``, ...): the
proof maps that back to the template, whatever physical name the test gave it.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3

_current = threading.local()
_lock = threading.Lock()


@dataclass(frozen=True)
class Call:
    function: str
    #: The IAM action, e.g. ``dynamodb:UpdateItem``.
    action: str
    #: The variable of the function's environment naming the resource (None: none does), and the name.
    variable: str | None
    resource: str
    #: DynamoDB: the item's partition key (``dynamodb:LeadingKeys``) and the attributes the request names.
    key: str | None = None
    attributes: frozenset[str] = frozenset()
    #: S3: the object's key.
    object_key: str | None = None
    #: The sink the function was deployed with (its SINK; ``sqs-compatible`` with a queue endpoint):
    #: its calls are judged against the template as that sink's parameters make it.
    sink: str | None = None


CALLS: list[Call] = []
#: Operations whose IAM action is named otherwise.
ACTIONS = {
    ("sns", "PublishBatch"): "sns:Publish",
    ("s3", "HeadObject"): "s3:GetObject",
    ("sqs", "SendMessageBatch"): "sqs:SendMessage",
}
#: The parameter that names the resource, per service.
RESOURCE_PARAMETERS = {
    "dynamodb": "TableName",
    "secretsmanager": "SecretId",
    "sns": "TopicArn",
    "s3": "Bucket",
    "sqs": "QueueUrl",
    "events": "EventBusName",
}
_WORDS = {"SET", "REMOVE", "ADD", "DELETE", "AND", "OR", "NOT", "IN", "BETWEEN"}


def current_function() -> str | None:
    return getattr(_current, "function", None)


@contextmanager
def acting_as(function: str) -> Iterator[None]:
    previous = current_function()
    _current.function = function
    try:
        yield
    finally:
        _current.function = previous


def attributed(function: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler``, its AWS calls recorded as ``function``'s."""

    @functools.wraps(handler)
    def invoke(*args: Any, **kwargs: Any) -> Any:
        with acting_as(function):
            return handler(*args, **kwargs)

    return invoke


def install() -> None:
    """Record from now on (idempotent): the hook on the default session, threads inheriting the function."""
    if getattr(install, "done", False):
        return
    install.done = True  # type: ignore[attr-defined]
    session = boto3._get_default_session()._session
    session.register("provide-client-params", _record)  # type: ignore[arg-type]
    start = threading.Thread.start
    run = threading.Thread.run

    def started(thread: threading.Thread) -> None:
        thread._relay_function = current_function()  # type: ignore[attr-defined]
        start(thread)

    def running(thread: threading.Thread) -> None:
        _current.function = getattr(thread, "_relay_function", None)
        run(thread)

    threading.Thread.start = started  # type: ignore[method-assign,assignment]
    threading.Thread.run = running  # type: ignore[method-assign,assignment]


#: What IAM authorizes each part of a TransactWriteItems as.
TRANSACT_ACTIONS = {
    "Update": "UpdateItem",
    "Put": "PutItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _record(params: dict[str, Any], model: Any, **_: Any) -> None:
    function = current_function()
    if function is None:
        return
    service, operation = model.service_model.service_name, model.name
    if (service, operation) == ("dynamodb", "TransactWriteItems"):
        # IAM authorizes each item of a transaction as the single-item action it is.
        parts = [(TRANSACT_ACTIONS[kind], part) for item in params["TransactItems"] for kind, part in item.items()]
    elif (service, operation) == ("dynamodb", "BatchGetItem"):
        parts = [
            (operation, {"TableName": table, "Key": key, **{k: v for k, v in read.items() if k != "Keys"}})
            for table, read in params["RequestItems"].items()
            for key in read["Keys"]
        ]
    else:
        parts = [(operation, params)]
    for name, part in parts:
        _note(function, service, name, part)


def _note(function: str, service: str, operation: str, params: dict[str, Any]) -> None:
    name = str(params.get(RESOURCE_PARAMETERS.get(service, ""), ""))
    if service == "events":
        # PutEvents names its bus in each entry.
        entries: list[dict[str, Any]] = params.get("Entries", [])
        name = str(entries[0].get("EventBusName", "")) if entries else ""
    variable = next((key for key, value in os.environ.items() if value == name and name), None)
    key = None
    if service == "dynamodb":
        item_key = params.get("Key") or params.get("Item") or {}
        value = next(iter(item_key.values()), None) if item_key else None
        # The low-level client's values are typed ({"S": ...}); the resource's are plain.
        key = value.get("S") if isinstance(value, dict) else (str(value) if value is not None else None)
    call = Call(
        function=function,
        action=ACTIONS.get((service, operation), f"{service}:{operation}"),
        variable=variable,
        resource=name,
        key=key,
        attributes=frozenset(_attributes(params)) if service == "dynamodb" else frozenset(),
        object_key=params.get("Key") if service == "s3" else None,
        sink=deployed_sink(),
    )
    with _lock:
        CALLS.append(call)


def deployed_sink() -> str | None:
    sink = os.environ.get("SINK")
    return "sqs-compatible" if sink == "sqs" and os.environ.get("EVENTS_QUEUE_ENDPOINT_URL") else sink


def _attributes(params: dict[str, Any]) -> set[str]:
    """The top-level attributes a request names: IAM's ``dynamodb:Attributes`` for it."""
    names = dict(params.get("ExpressionAttributeNames", {}))
    found = set(params.get("Key", {}))
    for part in ("UpdateExpression", "ConditionExpression", "ProjectionExpression"):
        for token in re.findall(r"[#:]?[A-Za-z_][A-Za-z0-9_]*", params.get(part, "")):
            if token.startswith("#"):
                found.add(names[token])
            elif not token.startswith(":") and token not in _WORDS and not token.startswith("attribute_"):
                found.add(token)
    found -= {"if_not_exists", "begins_with", "size", "contains", "list_append"}
    return found
