"""The simulators keep the promises the relay's tests and the local stack rely on: Kontur's protocol
as documented, the fault plan, and reproducible traffic."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local_stack.simulators.base import Response, Simulator
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.extern_events import KINDS
from local_stack.simulators.faults import Fault, FaultPlan
from local_stack.simulators.identity import IdentitySimulator

CLIENT, KEY, USER, PASSWORD = "relay", "relay-api-key", "svc@integrator.example", "svc-password"


@pytest.fixture
def identity() -> Iterator[IdentitySimulator]:
    with IdentitySimulator(token_lifetime=600) as identity:
        yield identity


@pytest.fixture
def extern(identity: IdentitySimulator) -> Iterator[ExternSimulator]:
    with ExternSimulator(identity, seed=5) as extern:
        extern.add_integrator(CLIENT, KEY, username=USER, password=PASSWORD)
        extern.setup(CLIENT, accounts=3, backlog=60)
        yield extern


def grant(identity: IdentitySimulator, **form: str) -> requests.Response:
    return requests.post(identity.token_url, data={"client_id": CLIENT, "client_secret": KEY, **form}, timeout=5)


def get(extern: ExternSimulator, path: str, token: str | None = None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or extern.identity.issue(USER, CLIENT)}"}
    return requests.get(f"{extern.url}{path}", params=params, headers=headers, timeout=5)


def share(extern: ExternSimulator, account_id: str, token: str, body: Any) -> requests.Response:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, str | bytes) else {"json": body}
    return requests.post(
        f"{extern.url}/v1/{account_id}/share-events", headers={"Authorization": f"Bearer {token}"}, timeout=5, **kwargs
    )


# -- identity ---------------------------------------------------------------------------------------


def test_password_grant_and_rotating_refresh_tokens(identity):
    identity.register_client(CLIENT, KEY)
    identity.register_user(USER, PASSWORD)
    first = grant(identity, grant_type="password", username=USER, password=PASSWORD, scope="extern.api offline_access")
    assert first.status_code == 200
    body = first.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 600)
    assert identity.principal(body["access_token"]) == (USER, CLIENT)

    second = grant(identity, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != body["refresh_token"]
    without_offline = grant(identity, grant_type="password", username=USER, password=PASSWORD)
    assert "refresh_token" not in without_offline.json()

    identity.expire_all()
    assert identity.principal(body["access_token"]) is None
    assert identity.refresh_token_is_valid(second.json()["refresh_token"])

    # The spent one presented again: refused, and the grant it belongs to is revoked (reuse detection).
    reused = grant(identity, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert (reused.status_code, reused.json()["error"]) == (400, "invalid_grant")
    assert not identity.refresh_token_is_valid(second.json()["refresh_token"])
    assert identity.presented[body["refresh_token"]] == 2


def test_behind_a_gateway_the_identity_provider_redeems_and_the_gateway_answers_502(identity):
    identity.register_client(CLIENT, KEY)
    first = identity.refresh_token_for(USER, CLIENT)
    identity.faults.add(Fault.after_acting(502), prefix="/connect/token")

    lost = grant(identity, grant_type="refresh_token", refresh_token=first)

    assert lost.status_code == 502
    assert not identity.refresh_token_is_valid(first), "redeemed, though the client never saw the answer"
    assert identity.issued["refresh_token"] == 1


def test_an_answer_lost_after_the_redemption_comes_too_late_for_the_client(identity):
    identity.register_client(CLIENT, KEY)
    first = identity.refresh_token_for(USER, CLIENT)
    identity.faults.add(Fault.answer_lost(delay=2), prefix="/connect/token")

    with pytest.raises(requests.Timeout):
        requests.post(
            identity.token_url,
            data={"client_id": CLIENT, "client_secret": KEY, "grant_type": "refresh_token", "refresh_token": first},
            timeout=0.3,
        )
    assert not identity.refresh_token_is_valid(first)


def test_token_endpoint_errors_are_oauth_errors(identity):
    identity.register_client(CLIENT, KEY)
    identity.register_user(USER, PASSWORD)
    wrong_password = grant(identity, grant_type="password", username=USER, password="nope")
    assert (wrong_password.status_code, wrong_password.json()["error"]) == (400, "invalid_grant")
    assert "nope" not in wrong_password.text
    wrong_secret = requests.post(
        identity.token_url, data={"client_id": CLIENT, "client_secret": "x", "grant_type": "password"}, timeout=5
    )
    assert (wrong_secret.status_code, wrong_secret.json()["error"]) == (401, "invalid_client")
    unsupported = grant(identity, grant_type="client_credentials")
    assert (unsupported.status_code, unsupported.json()["error"]) == (400, "unsupported_grant_type")

    basic = base64.b64encode(f"{CLIENT}:{KEY}".encode()).decode()
    with_basic = requests.post(
        identity.token_url,
        data={"grant_type": "password", "username": USER, "password": PASSWORD},
        headers={"Authorization": f"Basic {basic}"},
        timeout=5,
    )
    assert with_basic.status_code == 200


def test_tokens_expire_with_the_clock():
    now = [1000.0]
    with IdentitySimulator(token_lifetime=60, clock=lambda: now[0]) as identity:
        token = identity.issue(USER, CLIENT)
        now[0] += 59
        assert identity.principal(token) == (USER, CLIENT)
        now[0] += 1
        assert identity.principal(token) is None


# -- the events feed ----------------------------------------------------------------------------------


def test_pages_follow_the_documented_shape(extern):
    answer = get(extern, "/v1/events", fromId="0_0", take=10)
    body = answer.json()
    assert list(body) == [
        "first-event-id",
        "next-event-id",
        "requested-count",
        "returned-count",
        "api-events",
        "links",
    ]
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Kontur-Trace-Id"])
    events = body["api-events"]
    assert (body["requested-count"], body["returned-count"], len(events)) == (10, 10, 10)
    assert body["first-event-id"] == events[0]["id"]
    for event in events:
        assert re.fullmatch(r"[0-9a-f]+_[0-9a-f]+", event["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", event["event-date-time"])
        assert event["docflow-type"] in {k.type for k in KINDS}
        assert event["new-state"].startswith("urn:transaction:")
    # next-event-id names the next event: reading from it returns that event first.
    following = get(extern, "/v1/events", fromId=body["next-event-id"], take=1).json()
    assert following["api-events"][0]["id"] == body["next-event-id"]
    assert get(extern, "/v1/events", fromId="0_0", batchSize=3).json()["returned-count"] == 3


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"take": 0}, "urn:error:invalid-parameter"),
        ({"take": -5}, "urn:error:invalid-parameter"),
        ({"take": "ten"}, "urn:error:invalid-parameter"),
        ({"fromId": "not-an-id"}, "urn:error:events:invalid-event-id"),
        ({"fromId": "1_0"}, "urn:error:events:invalid-event-id"),
        ({"fromId": "fffff_12"}, "urn:error:events:invalid-event-id"),
    ],
)
def test_bad_requests_answer_konturs_error_body(extern, params, error):
    answer = get(extern, "/v1/events", **params)
    body = answer.json()
    assert answer.status_code == 400
    assert set(body) == {"id", "status-code", "message", "trace-id", "properties"}
    assert (body["id"], body["status-code"]) == (error, 400)
    assert body["trace-id"] == answer.headers["X-Kontur-Trace-Id"]


def test_an_old_server_answers_last_event_id_and_repeats_it(extern):
    extern.legacy_last_event_id = True
    first = get(extern, "/v1/events", fromId="0_0", take=5).json()
    assert "next-event-id" not in first
    assert first["last-event-id"] == first["api-events"][-1]["id"]
    again = get(extern, "/v1/events", fromId=first["last-event-id"], take=5).json()
    assert again["api-events"][0]["id"] == first["last-event-id"]


def test_the_feed_needs_credentials(extern, identity):
    assert requests.get(f"{extern.url}/v1/events", timeout=5).json()["id"] == "urn:error:unauthorized"
    expired = identity.issue(USER, CLIENT)
    identity.expire_all()
    assert get(extern, "/v1/events", token=expired).status_code == 401
    sid = extern.session(USER)
    legacy = requests.get(
        f"{extern.url}/v1/events",
        headers={"Authorization": f"auth.sid {sid}", "X-Kontur-Apikey": KEY},
        timeout=5,
    )
    assert legacy.status_code == 200
    no_key = requests.get(f"{extern.url}/v1/events", headers={"Authorization": f"auth.sid {sid}"}, timeout=5)
    assert no_key.status_code == 401


# -- sharing and publishers ---------------------------------------------------------------------------


def test_share_events_is_the_administrators_call_and_validates_its_body(extern, identity):
    account = extern.add_account()
    admin = extern.admin_token(account)
    assert share(extern, account.id, admin, b"").status_code == 400
    assert share(extern, account.id, admin, {"subscriber": ""}).json()["id"] == "urn:error:events:invalid-subscriber"
    assert share(extern, account.id, admin, {"subscriber": "nobody"}).status_code == 400
    assert share(extern, account.id, identity.issue(USER, CLIENT), {"subscriber": CLIENT}).status_code == 403
    assert share(extern, "00000000-0000-4000-8000-000000000000", admin, {"subscriber": CLIENT}).status_code == 404
    bad_filter = {"subscriber": CLIENT, "events-filter": {"document-forms": [{"knd": None, "okud": None}]}}
    assert share(extern, account.id, admin, bad_filter).status_code == 400

    before = set(extern.events_visible_to(CLIENT))
    filtered = {"subscriber": CLIENT, "events-filter": {"document-forms": [{"knd": "1151001", "okud": None}]}}
    answer = share(extern, account.id, admin, filtered)
    assert answer.status_code == 200
    assert answer.json()["account-id"] == account.id
    extern.generate(400)
    new = [extern.event(i) for i in set(extern.events_visible_to(CLIENT)) - before]
    mine = [e for e in new if e["account-id"] == account.id]
    assert mine
    assert {e["docflow-type"] for e in mine} == {"urn:docflow:fns534-report"}


def test_publishers_are_listed_and_deleted_by_the_integrator(extern, identity):
    publishers = get(extern, "/v1/event-publishers").json()
    assert publishers["total-count"] == 3
    first = publishers["publishers"][0]
    assert {"id", "account-id", "organizations", "events-filter"} <= set(first)
    token = identity.issue(USER, CLIENT)
    url = f"{extern.url}/v1/event-publishers/{first['id']}"

    other = identity.issue("other@example", "kontur.extern.web")
    assert requests.delete(url, headers={"Authorization": f"Bearer {other}"}, timeout=5).status_code == 404
    assert requests.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 204
    assert requests.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 404
    assert get(extern, "/v1/event-publishers").json()["total-count"] == 2

    feed = get(extern, "/v1/events", take=1000).json()["api-events"]
    assert feed
    assert all(e["account-id"] != first["account-id"] for e in feed)


# -- traffic ------------------------------------------------------------------------------------------


def test_traffic_is_reproducible_from_its_seed_and_realistic(identity):
    logs = []
    for _ in range(2):
        extern = ExternSimulator(identity, seed=42)
        extern.setup(CLIENT, accounts=4, backlog=300)
        logs.append([extern.event(i) for i in extern.events_visible_to(CLIENT)])
    assert logs[0] == logs[1]
    events = logs[0]
    assert len(events) == 300
    offset = 0
    for event in events:
        start, length = (int(part, 16) for part in event["id"].split("_"))
        assert start == offset, "ids are offsets into one append-only log"
        offset += length
    organisations = {(e["inn"], e.get("kpp")) for e in events if "inn" in e}
    assert any(len(inn) == 12 and kpp is None for inn, kpp in organisations)
    assert any(len(inn) == 10 and kpp and len(kpp) == 9 for inn, kpp in organisations)
    for inn, _ in organisations:
        assert _inn_is_valid(inn)
    assert len({e["docflow-type"] for e in events}) >= 5
    assert any("organization-id" in e for e in events)
    assert any("docflow-link" not in e or "kpp" not in e for e in events)


def test_advance_is_a_trickle_with_bursts(extern):
    counts = [extern.advance() for _ in range(200)]
    assert max(counts) >= 20
    assert sorted(counts)[100] <= 3


# -- the fault plan -----------------------------------------------------------------------------------


def test_queued_faults_match_prefix_and_method_and_run_out():
    plan = FaultPlan()
    plan.add(Fault.throttle(retry_after=2), prefix="/v1/events", times=2)
    plan.add(Fault.server_error(503), prefix="/v1", method="DELETE")
    assert plan.take("GET", "/v1/event-publishers") is None
    assert plan.take("DELETE", "/v1/event-publishers/x") == Fault.server_error(503)
    assert plan.take("GET", "/v1/events") == Fault.throttle(retry_after=2)
    assert plan.pending() == 1
    assert plan.take("GET", "/v1/events") is not None
    assert plan.take("GET", "/v1/events") is None
    assert plan.served == ["http_503", "throttle", "throttle"]


def test_random_faults_repeat_with_their_seed():
    runs = []
    for _ in range(2):
        plan = FaultPlan().randomly(0.2, seed=9)
        runs.append([getattr(plan.take("GET", "/v1/events"), "name", None) for _ in range(200)])
    assert runs[0] == runs[1]
    assert 10 < sum(1 for name in runs[0] if name) < 80


def test_faults_reach_clients_over_http():
    class Echo(Simulator):
        def __init__(self) -> None:
            super().__init__()
            self.route("GET", "/items/{item}", lambda request: Response.json({"item": request.params["item"]}))

    with Echo() as echo:
        assert echo.url.startswith("http://127.0.0.1:")
        echo.faults.add(Fault.throttle(retry_after=7)).add(Fault.html_error(502)).add(Fault.malformed(b"{"))
        throttled = requests.get(f"{echo.url}/items/1", timeout=5)
        assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "7")
        html = requests.get(f"{echo.url}/items/1", timeout=5)
        assert (html.status_code, html.headers["Content-Type"]) == (502, "text/html")
        assert requests.get(f"{echo.url}/items/1", timeout=5).text == "{"
        assert requests.get(f"{echo.url}/items/1", timeout=5).json() == {"item": "1"}
        assert requests.post(f"{echo.url}/items/1", timeout=5).status_code == 405
        assert requests.get(f"{echo.url}/nothing", timeout=5).status_code == 404
        echo.faults.add(Fault.slow(60))
        with pytest.raises(requests.Timeout):
            requests.get(f"{echo.url}/items/1", timeout=0.2)
    # stop() returned although a request was still asleep in its slow fault (woken, it answers 503).
    assert [e.status for e in echo.journal][:6] == [429, 502, 200, 200, 405, 404]


def _inn_is_valid(inn: str) -> bool:
    digits = [int(c) for c in inn]

    def check(weights: tuple[int, ...]) -> int:
        return sum(d * w for d, w in zip(digits, weights, strict=False)) % 11 % 10

    if len(inn) == 10:
        return check((2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[9]
    return (
        check((7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[10] and check((3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)) == digits[11]
    )


def test_random_faults_never_expire_a_token_got_since_the_last_expiry():
    """A token lives minutes: Kontur does not refuse one it has just issued. Random expiries a moment
    apart would refuse a fresh token twice in a row, which the relay rightly takes for a bad credential."""
    plan = FaultPlan().randomly(1.0, seed=1, faults=(Fault.expired_token(),))

    served = [plan.take("GET", "/v1/events") for _ in range(5)]

    assert [fault.name if fault else None for fault in served] == ["expired_token", None, None, None, None]
    queued = FaultPlan().add(Fault.expired_token(), times=2)
    assert [queued.take("GET", "/"), queued.take("GET", "/")] == [Fault.expired_token()] * 2, "queued: as queued"
