"""Bodies the admin API cannot read, whatever their depth or size, answer 422 naming the body and
what is wrong with it: never a failed invocation (API Gateway's 502, counted by the 5XX alarm)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from local_stack.constants import REGION
from tests.e2e.test_admin_api import AdminWorld, problem, world

__all__ = ["world"]  # the fixture

BOX = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru"


def send(world: AdminWorld, method: str, path: str, body: str, headers: dict[str, str] | None = None) -> Any:
    """``body`` sent as it is (not JSON-encoded by the client), signed as awscurl would."""
    url = f"{world.api.base_url}{path}"
    wanted = {"Content-Type": "application/json", **(headers or {})}
    signed = AWSRequest(method=method, url=url, data=body.encode(), headers=wanted)
    SigV4Auth(world.api.credentials, "execute-api", REGION).add_auth(signed)
    return requests.request(method, url, data=body.encode(), headers=dict(signed.headers.items()), timeout=30)


def routes(world: AdminWorld) -> list[tuple[str, str, dict[str, str]]]:
    """Every route that reads a body, with the headers it needs besides."""
    account = world.extern.add_account()
    return [
        ("PUT", "/feeds/extern/cursor", {}),
        ("POST", f"/accounts/{account.id}/share-events", {"X-Kontur-Authorization": "Bearer x"}),
        ("PUT", f"/diadoc/boxes/{BOX}", {}),
        ("POST", "/diadoc/boxes/discover", {}),
    ]


UNREADABLE = {
    # The JSON decoder recurses once per level: this many exhausts Python's stack.
    "nested a hundred thousand deep": "[" * 100_000 + "]" * 100_000,
    "an object nested deep inside a field": '{"cursor": ' + '{"a": ' * 5_000 + "1" + "}" * 5_000 + "}",
    # Python refuses to read an integer of more than 4,300 digits (CVE-2020-10735).
    "a number of ten thousand digits": '{"expectedVersion": 1' + "0" * 10_000 + "}",
}


@pytest.mark.parametrize("body", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_body_too_deep_or_too_long_to_read_is_a_422_on_every_route_with_a_body(world: AdminWorld, body: str):
    for method, path, headers in routes(world):
        answer = send(world, method, path, body, headers)

        found = problem(answer, 422)
        assert found["detail"][0]["loc"] == ["body"], (path, found)
        assert found["detail"][0]["type"] == "json_invalid"
        assert "body" in found["message"]
        assert body[:50] not in answer.text, "the body is described, not echoed"
    assert world.extern.calls("/v1/", method="POST") == []


def test_a_body_just_inside_the_depth_limit_is_read_as_usual(world: AdminWorld):
    # Nested, but within what a request of this API can need: validated (and refused) as any other body.
    nested = json.dumps({"cursor": "0_0", "expectedVersion": 0, "extra": [[[[["deep"]]]]]})
    found = problem(send(world, "PUT", "/feeds/extern/cursor", nested), 422)
    assert [item["type"] for item in found["detail"]] == ["extra_forbidden"]
