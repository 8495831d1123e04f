"""The local admin front refuses what API Gateway and Lambda refuse: an event over Lambda's 6 MB
synchronous invocation limit never reaches a handler, and the caller gets API Gateway's 413."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from local_stack import api_gateway
from local_stack.admin_client import AdminClient
from local_stack.template import Stack

MB = 1024 * 1024


@pytest.fixture
def front() -> Iterator[tuple[AdminClient, list[dict[str, Any]]]]:
    """The template's routes on the front; each invocation's event recorded, answered 200."""
    events: list[dict[str, Any]] = []

    def invoke(function: str, event: dict[str, Any]) -> Mapping[str, Any]:
        events.append(event)
        return {"statusCode": 200, "body": "{}"}

    with api_gateway.start(Stack(), invoke, log=lambda message: None) as server:
        yield AdminClient(server.url), events


def cursor_of(size: int) -> dict[str, Any]:
    return {"cursor": "x" * size, "expectedVersion": 1}


@pytest.mark.parametrize("size", [7 * MB, 11 * MB, 6 * MB - 200], ids=["7 MB", "11 MB", "6 MB in an event over 6 MB"])
def test_an_event_over_lambdas_6_mb_is_refused_with_413_before_any_handler_runs(front, size):
    admin, events = front

    status, answer = admin.call("PUT", "/feeds/extern/cursor", cursor_of(size))

    assert status == 413
    assert answer == {"message": "Request Too Long"}
    assert events == []


def test_a_large_body_within_the_limit_reaches_its_handler_whole(front):
    admin, events = front

    status, _ = admin.call("PUT", "/feeds/extern/cursor", cursor_of(5 * MB))

    assert status == 200
    assert len(events) == 1
    assert len(events[0]["body"]) > 5 * MB
