"""The admin API end to end: SigV4-signed HTTP -> the local API Gateway front -> the real handlers with
the template's environment -> the Extern simulator over HTTP, or the cursor table in DynamoDB Local.

Publishers: sharing an account through the API makes its events appear in the Extern feed as the
real ExternSource reads it; removing its publisher makes them leave. Every error a caller can meet
is driven from the simulators (their fault plan for 5xx, throttling and timeouts).
"""

from __future__ import annotations

import json
import logging
import secrets
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import CursorConflict
from kontur_relay.feeds.diadoc import source as diadoc_source
from kontur_relay.feeds.diadoc.cursor import Position
from kontur_relay.feeds.diadoc.ticks import TICKS_PER_SECOND, to_ticks
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.source import ExternSource, read_extern_error
from kontur_relay.kontur import session as http
from kontur_relay.kontur.client import KonturApi
from kontur_relay.observability import logger as relay_logger
from local_stack import api_gateway, openapi
from local_stack.constants import ACCOUNT, REGION
from local_stack.context import LocalContext
from local_stack.services import LOCAL_CREDENTIALS
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.extern_events import Account
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import ROOT, Stack

CLIENT_ID = "feed-relay"
API_FUNCTIONS = ("FeedsApiFunction", "PublishersApiFunction", "DiadocBoxesApiFunction")
#: Short, so that a timeout test waits little; the simulator's slow answers take longer.
TIMEOUT = 0.5
SIGNER_ARN = f"arn:aws:iam::{ACCOUNT}:user/{LOCAL_CREDENTIALS['AWS_ACCESS_KEY_ID']}"


# -- the world the tests share (the OpenAPI fuzz test uses it too) --------------------------------------


class SignedClient:
    """Signs every request with SigV4 for execute-api, as awscurl does."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.credentials = Credentials(
            LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        )
        self.http = requests.Session()

    def request(
        self, method: str, path: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        data = None if json_body is None else json.dumps(json_body)
        wanted = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
        signed = AWSRequest(method=method, url=url, data=data, headers=wanted)
        SigV4Auth(self.credentials, "execute-api", REGION).add_auth(signed)
        return self.http.request(method, url, data=data, headers=dict(signed.headers.items()), timeout=30)


@dataclass
class AdminWorld:
    stack: Stack
    identity: IdentitySimulator
    extern: ExternSimulator
    front: api_gateway.ApiGatewayFront
    api: SignedClient
    secretsmanager: Any
    api_key: str
    #: Its user (in the Diadoc secret) sees the boxes of ``setup``; more are added per test.
    diadoc: DiadocSimulator

    @property
    def secret_id(self) -> str:
        return self.stack.physical["ExternCredentials"]

    def cursors(self) -> DynamoCursorStore:
        return DynamoCursorStore(boto3.resource("dynamodb").Table(self.stack.physical["CursorsTable"]))

    def share(self, account: Account, body: Any = None, credential: str | None = None) -> requests.Response:
        token = credential or f"Bearer {self.extern.admin_token(account)}"
        return self.api.request(
            "POST",
            f"/accounts/{account.id}/share-events",
            json_body=body,
            headers={"X-Kontur-Authorization": token},
        )

    def feed_accounts(self) -> list[str]:
        """The account of every event in the integrator's Extern feed, read with the real ExternSource."""
        secret = CredentialsSecret(self.secret_id, self.secretsmanager, max_age=0)
        session = http.session(retries=0)
        api = KonturApi(
            self.extern.url, session, extern_authenticator(secret, session), read_extern_error, name="Extern"
        )
        source = ExternSource(api, take=100)
        accounts, cursor = [], None
        while True:
            page = source.read_page(cursor)
            accounts += [str(event.data["account-id"]) for event in page.events]
            cursor = page.next_cursor or cursor
            if not page.more:
                return accounts


@contextmanager
def admin_world(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminWorld]:
    """The simulators, the integrator's credentials in the stack's Extern secret, both API functions'
    environment from the template, and the local front serving them in this process."""
    with (
        IdentitySimulator() as identity,
        ExternSimulator(identity, seed=11) as extern,
        DiadocSimulator(identity, seed=13) as diadoc,
    ):
        api_key = secrets.token_hex(16)
        username, password = "svc@integrator.example", secrets.token_urlsafe(16)
        extern.add_integrator(CLIENT_ID, api_key, username=username, password=password)
        secretsmanager = boto3.client("secretsmanager")
        credentials = {
            "token_url": identity.token_url,
            "client_id": CLIENT_ID,
            "client_secret": api_key,
            "grant_type": "password",
            "username": username,
            "password": password,
            "scope": "extern.api",
            "api_key": api_key,
        }
        secretsmanager.put_secret_value(
            SecretId=stack.physical["ExternCredentials"], SecretString=json.dumps(credentials)
        )
        diadoc_credentials = diadoc.setup(boxes=3, backlog=0)
        secretsmanager.put_secret_value(
            SecretId=stack.physical["DiadocCredentials"], SecretString=json.dumps(diadoc_credentials)
        )
        for function in API_FUNCTIONS:
            for name, value in stack.function(function).environment.items():
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("EXTERN_API_URL", extern.url)
        monkeypatch.setenv("DIADOC_API_URL", diadoc.url)
        monkeypatch.setenv("HTTP_TIMEOUT_SECONDS", str(TIMEOUT))
        with api_gateway.start(stack, log=lambda message: None) as front:
            yield AdminWorld(stack, identity, extern, front, SignedClient(front.url), secretsmanager, api_key, diadoc)


@pytest.fixture
def world(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminWorld]:
    with admin_world(stack, monkeypatch) as built:
        yield built


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every log line of every logger, formatted as the relay formats its own, at DEBUG."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            # botocore.auth is this test's own client signing its requests (its debug log prints the
            # signed headers); the relay signs nothing with the administrator's credential.
            if record.name != "botocore.auth":
                lines.append(self.format(record))

    capture = Capture(level=logging.DEBUG)
    capture.setFormatter(relay_logger.registered_formatter)
    # The root logger sees every library; the relay's Powertools logger does not propagate to it.
    targets = [logging.getLogger(), logging.getLogger(relay_logger.name)]
    levels = [target.level for target in targets]
    for target in targets:
        target.addHandler(capture)
        target.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for target, level in zip(targets, levels, strict=True):
            target.removeHandler(capture)
            target.setLevel(level)


def problem(answer: requests.Response, status: int) -> dict[str, Any]:
    """The Problem body of an error answer, after checking its status and that it is JSON."""
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = answer.json()
    assert body["message"]
    assert body["requestId"]
    return body


# -- publishers: sharing and unsharing, against the Extern simulator ------------------------------------


def test_sharing_an_account_puts_its_events_in_the_feed_and_removing_its_publisher_takes_them_out(world):
    shared, other = world.extern.add_account(), world.extern.add_account()

    answer = world.share(shared)  # no body: every event, to the integrator's own client_id

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accountId"] == shared.id
    assert body["subscriber"] == CLIENT_ID
    assert body["eventsFilter"] is None
    assert body["kontur"]["account-id"] == shared.id  # Kontur's answer, passed on
    assert body["traceId"]
    world.extern.generate(40)
    in_feed = set(world.feed_accounts())
    assert in_feed == {shared.id}, "the shared account's events, and only those"
    assert other.id not in in_feed

    publishers = world.api.request("GET", "/event-publishers")
    assert publishers.status_code == 200, publishers.text
    assert publishers.headers["X-Kontur-Trace-Id"]
    listed = publishers.json()["publishers"]
    assert [p["account-id"] for p in listed] == [shared.id]

    removed = world.api.request("DELETE", f"/event-publishers/{listed[0]['id']}")

    assert removed.status_code == 204, removed.text
    assert removed.content == b""
    world.extern.generate(20)
    assert world.feed_accounts() == []
    assert world.api.request("GET", "/event-publishers").json()["publishers"] == []


def test_event_publishers_passes_kontur_json_through_unchanged(world):
    for account in world.extern.setup(CLIENT_ID, accounts=2):
        assert account.id in {p.account_id for p in world.extern.publishers.values()}
    token = world.identity.issue("svc@integrator.example", CLIENT_ID)
    direct = requests.get(
        f"{world.extern.url}/v1/event-publishers", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )

    answer = world.api.request("GET", "/event-publishers")

    assert answer.status_code == 200
    assert answer.json() == direct.json()
    assert len(answer.json()["publishers"]) == 2


def test_a_filter_shares_only_the_events_it_names(world):
    account = world.extern.add_account()
    wanted = "urn:docflow:fns534-report"

    answer = world.share(account, {"eventsFilter": {"docflowTypes": [wanted]}})

    assert answer.status_code == 200, answer.text
    assert answer.json()["eventsFilter"] == {"docflowTypes": [wanted]}
    world.extern.generate(60)
    secret = CredentialsSecret(world.secret_id, world.secretsmanager, max_age=0)
    session = http.session(retries=0)
    api = KonturApi(world.extern.url, session, extern_authenticator(secret, session), read_extern_error)
    page = ExternSource(api, take=100).read_page(None)
    assert page.events
    assert {event.data["docflow-type"] for event in page.events} == {wanted}


def test_an_answer_sent_back_as_a_request_shares_the_same_events_again(world):
    account = world.extern.add_account()
    given = {"docflowTypes": ["urn:docflow:fns534-report"], "documentForms": [{"knd": "1151001"}]}
    first = world.share(account, {"eventsFilter": given})
    assert first.status_code == 200, first.text

    again = world.share(
        account, {"subscriber": first.json()["subscriber"], "eventsFilter": first.json()["eventsFilter"]}
    )

    assert again.status_code == 200, again.text
    assert again.json()["eventsFilter"] == first.json()["eventsFilter"] == given


def test_kontur_own_kebab_case_spelling_is_still_accepted_and_answered_in_camel_case(world):
    account = world.extern.add_account()
    old = {"events-filter": {"docflow-types": ["urn:docflow:fns534-report"], "document-forms": [{"okud": "0710001"}]}}

    answer = world.share(account, old)

    assert answer.status_code == 200, answer.text
    assert answer.json()["eventsFilter"] == {
        "docflowTypes": ["urn:docflow:fns534-report"],
        "documentForms": [{"okud": "0710001"}],
    }
    both = world.share(account, {**old, "eventsFilter": {"docflowTypes": ["urn:docflow:fns534-report"]}})
    assert problem(both, 422)["detail"], "two spellings of one field: which was meant?"


def test_a_legacy_auth_sid_administrator_can_share(world):
    account = world.extern.add_account()
    sid = world.extern.session(account.admin)

    answer = world.share(account, {"subscriber": CLIENT_ID}, credential=f"auth.sid {sid}")

    assert answer.status_code == 200, answer.text
    shared_with = world.extern.calls("/v1/", method="POST")[-1]
    assert shared_with.headers["x-kontur-apikey"] == world.api_key  # auth.sid needs the integrator's key


def test_the_administrator_credential_is_forwarded_and_never_logged_or_echoed(world):
    account = world.extern.add_account()
    token = world.extern.admin_token(account)
    with captured_logs() as lines:
        good = world.share(account, credential=f"Bearer {token}")
        refused = world.share(world.extern.add_account(), credential=f"Bearer {token}")  # not its admin
        invalid = world.share(account, credential=f"Basic {token}")

    assert good.status_code == 200
    forwarded = world.extern.calls("/v1/", method="POST")[0]
    assert forwarded.headers["authorization"] == f"Bearer {token}"
    assert refused.status_code == 403
    assert invalid.status_code == 422
    assert lines, "the capture saw the handlers' logging"
    for text in [*lines, good.text, refused.text, invalid.text]:
        assert token not in text


# -- publishers: every error a caller can meet ----------------------------------------------------------


def test_invalid_requests_name_the_field_and_rule_and_nothing_reaches_kontur(world):
    account = world.extern.add_account()
    cases: list[tuple[str, Any, str | None, list[str | int], str | None]] = [
        # (path, body, header, where, error type)
        ("/accounts/not-a-guid/share-events", None, "Bearer x", ["path", "accountId"], "string_pattern_mismatch"),
        (f"/accounts/{account.id}/share-events", None, None, ["header", "x-kontur-authorization"], "missing"),
        (
            f"/accounts/{account.id}/share-events",
            None,
            "Basic x",
            ["header", "x-kontur-authorization"],
            "string_pattern_mismatch",
        ),
        (
            f"/accounts/{account.id}/share-events",
            {"events_filter": {"docflow-types": ["urn:docflow:fns534-report"]}},
            "Bearer x",
            ["body", "events_filter"],
            "extra_forbidden",
        ),
        (
            f"/accounts/{account.id}/share-events",
            {"eventsFilter": {"documentForms": [{"knd": "115100"}]}},
            "Bearer x",
            ["body", "eventsFilter", "documentForms", 0, "knd"],
            "string_pattern_mismatch",
        ),
        (
            f"/accounts/{account.id}/share-events",
            {"eventsFilter": {"documentForms": [{"knd": None, "okud": None}]}},
            "Bearer x",
            ["body", "eventsFilter", "documentForms", 0],
            "value_error",
        ),
        (
            f"/accounts/{account.id}/share-events",
            {"eventsFilter": {"docflowTypes": []}},
            "Bearer x",
            ["body", "eventsFilter", "docflowTypes"],
            "too_short",
        ),
        (
            f"/accounts/{account.id}/share-events",
            {"eventsFilter": {"docflowTypes": None}},
            "Bearer x",
            ["body", "eventsFilter", "docflowTypes"],
            "list_type",
        ),
        (
            f"/accounts/{account.id}/share-events",
            {"eventsFilter": {}},
            "Bearer x",
            ["body", "eventsFilter"],
            "value_error",
        ),
        (f"/accounts/{account.id}/share-events", {"subscriber": ""}, "Bearer x", ["body", "subscriber"], None),
    ]
    for path, body, header, where, kind in cases:
        headers = {"X-Kontur-Authorization": header} if header else {}
        answer = world.api.request("POST", path, json_body=body, headers=headers)
        found = problem(answer, 422)
        assert where in [item["loc"] for item in found["detail"]], (path, body, found)
        item = next(item for item in found["detail"] if item["loc"] == where)
        assert item["msg"]
        if kind:
            assert item["type"] == kind
        assert ".".join(str(part) for part in where) in found["message"]

    not_json = world.api.request(
        "POST",
        f"/accounts/{account.id}/share-events",
        headers={"X-Kontur-Authorization": "Bearer x", "Content-Type": "text/plain"},
    )
    assert not_json.status_code == 415
    assert world.extern.calls("/v1/", method="POST") == []


def test_kontur_errors_become_answers_the_caller_can_act_on(world):
    account = world.extern.add_account()

    unknown_subscriber = problem(world.share(account, {"subscriber": "nobody-we-know"}), 400)
    assert unknown_subscriber["error"] == "urn:error:events:invalid-subscriber"
    assert "nobody-we-know is not a registered client" in unknown_subscriber["message"]
    assert unknown_subscriber["traceId"]

    not_a_token = problem(world.share(account, credential="Bearer not-a-token"), 403)
    assert "refused the administrator's credential" in not_a_token["message"]
    assert not_a_token["error"] == "urn:error:unauthorized"
    assert not_a_token["traceId"]

    someone_else = world.extern.add_account()
    not_the_admin = problem(world.share(account, credential=f"Bearer {world.extern.admin_token(someone_else)}"), 403)
    assert "only the account's administrator" in not_the_admin["message"]

    ghost = Account(str(uuid.uuid4()), account.admin, account.password, account.organisations)
    no_account = problem(world.share(ghost, credential=f"Bearer {world.extern.admin_token(account)}"), 404)
    assert no_account["error"] == "urn:error:accounts:not-found"

    assert problem(world.api.request("DELETE", "/event-publishers/ep-unknown"), 404)["traceId"]


@pytest.mark.parametrize(
    ("fault", "status", "words"),
    [
        (Fault.server_error(500), 502, "Kontur failed"),
        (Fault.server_error(503), 502, "Kontur failed"),
        (Fault.html_error(502), 502, "Kontur failed"),
        (Fault.throttle(), 503, "throttling"),
        (Fault.slow(5.0), 504, "did not answer"),
    ],
    ids=["500", "503", "html-502", "429", "timeout"],
)
def test_kontur_failures_and_silence_are_gateway_answers(world, fault, status, words):
    account = world.extern.add_account()
    # Two of each: the first try and the one retry; but a POST is sent again only when it was turned
    # away (429, 503), not after an answer that may come after it was done (500, 502, a silence).
    retried = fault.status in http.REFUSED_BEFORE
    world.extern.faults.add(fault, prefix=f"/v1/{account.id}/share-events", times=2 if retried else 1)
    world.extern.faults.add(fault, prefix="/v1/event-publishers", times=2)

    shared = problem(world.share(account), status)
    listed = problem(world.api.request("GET", "/event-publishers"), status)

    for found in (shared, listed):
        assert words in found["message"]
        if fault.delay == 0 and fault.name != "html_502":
            assert found["traceId"], "Kontur's trace id of the failed answer"
    assert world.extern.faults.pending() == 0


def test_refused_integrator_credentials_are_a_gateway_failure_not_the_callers(world):
    world.secretsmanager.put_secret_value(
        SecretId=world.secret_id, SecretString=json.dumps({"access_token": "revoked", "client_id": CLIENT_ID})
    )

    found = problem(world.api.request("GET", "/event-publishers"), 502)

    assert "refused the relay's own credentials" in found["message"]
    assert found["error"] == "urn:error:unauthorized"


def test_without_a_client_id_to_default_to_the_subscriber_must_be_named(world):
    world.secretsmanager.put_secret_value(
        SecretId=world.secret_id, SecretString=json.dumps({"access_token": "t", "api_key": world.api_key})
    )
    account = world.extern.add_account()

    found = problem(world.share(account), 400)

    assert found["detail"][0]["loc"] == ["body", "subscriber"]
    assert world.share(account, {"subscriber": CLIENT_ID}).status_code == 200


def test_a_publisher_id_is_sent_percent_encoded(world):
    weird = "ep/../../v1/events?x=1"

    found = problem(world.api.request("DELETE", f"/event-publishers/{urllib.parse.quote(weird, safe='')}"), 404)

    assert found["traceId"]
    assert world.extern.calls("/v1/event-publishers/", method="DELETE")
    assert world.extern.calls("/v1/events") == []


# -- feeds: the cursor table in DynamoDB Local ------------------------------------------------------------

BOX = "diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru"
BOX_PATH = "/feeds/diadoc%3Aa1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d%40diadoc.ru"


def seed(world: AdminWorld) -> DynamoCursorStore:
    """Two feeds as pollers leave them: Extern ran and moved; a Diadoc box stopped on a 402."""
    cursors = world.cursors()
    cursors.advance(cursors.load("extern"), "1a4_c3", relayed=7)
    cursors.record_success("extern", backlog=None, backlog_capped=False)
    box = cursors.advance(cursors.load(BOX), "AAEC+/idx==", relayed=3)
    cursors.record_success(BOX, backlog=100000, backlog_capped=True)
    cursors.record_failure(BOX, "Diadoc answered 402: not paid", stop=True)
    assert box.version == 1
    return cursors


def test_feeds_show_every_feed_cursor_and_health(world):
    assert world.api.request("GET", "/feeds").json() == {"feeds": [], "nextToken": None}
    seed(world)

    answer = world.api.request("GET", "/feeds")

    assert answer.status_code == 200
    feeds = {feed["feed"]: feed for feed in answer.json()["feeds"]}
    assert list(feeds) == sorted(feeds)
    extern = feeds["extern"]
    assert extern["kind"] == "extern"
    assert (extern["cursor"], extern["version"], extern["eventsRelayed"]) == ("1a4_c3", 1, 7)
    assert extern["lastSuccessAt"]
    assert (extern["stopped"], extern["stoppedReason"], extern["lastError"]) == (False, None, None)
    assert extern["backlog"] is None
    assert extern["running"] is False
    box = feeds[BOX]
    assert (box["kind"], box["cursor"], box["backlog"], box["backlogCapped"]) == ("diadoc", "AAEC+/idx==", 100000, True)
    assert box["stopped"] is True
    assert box["stoppedReason"] == box["lastError"] == "Diadoc answered 402: not paid"
    assert box["lastErrorAt"]


def test_feeds_list_the_diadoc_pollers_own_row_and_the_description_says_what_it_is(world):
    seed(world)
    world.cursors().mark_not_configured("diadoc", "the credentials secret diadoc-credentials is empty")

    rows = {feed["feed"]: feed for feed in world.api.request("GET", "/feeds").json()["feeds"]}

    poller = rows["diadoc"]
    assert (poller["kind"], poller["cursor"], poller["configured"]) == ("diadoc", None, False)
    refused = problem(
        world.api.request("PUT", "/feeds/diadoc/cursor", json_body={"cursor": "x", "expectedVersion": 0}), 422
    )
    assert "diadoc:<boxId>" in refused["message"]
    described = json.loads(openapi.OPENAPI.read_text())
    listing = described["paths"]["/feeds"]["get"]["description"]
    assert "`diadoc`" in listing
    assert "poller" in listing
    assert "`diadoc`" in described["components"]["schemas"]["FeedView"]["properties"]["feed"]["description"]


def test_one_feed_by_id_percent_encoded_or_not(world):
    seed(world)

    for path in (BOX_PATH, f"/feeds/{BOX}", "/feeds/diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d%40diadoc.ru"):
        answer = world.api.request("GET", path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["feed"] == BOX

    assert world.api.request("GET", "/feeds/extern").json()["cursor"] == "1a4_c3"
    assert "No feed diadoc:nobody" in problem(world.api.request("GET", "/feeds/diadoc%3Anobody"), 404)["message"]
    assert problem(world.api.request("GET", "/feeds/%20bad%20id"), 422)["detail"][0]["loc"] == ["path", "feedId"]


def test_setting_a_cursor_replays_records_who_and_resumes_a_stopped_feed(world):
    cursors = seed(world)

    with captured_logs() as lines:
        replay = world.api.request("PUT", "/feeds/extern/cursor", json_body={"cursor": "0_0", "expectedVersion": 1})
    resume = world.api.request("PUT", f"{BOX_PATH}/cursor", json_body={"cursor": "AAEC+/idx==", "expectedVersion": 1})

    assert replay.status_code == 200, replay.text
    assert (replay.json()["cursor"], replay.json()["version"]) == ("0_0", 2)
    assert replay.json()["updatedBy"] == SIGNER_ARN
    assert cursors.load("extern").position == "0_0"
    record = next(json.loads(line) for line in lines if "An operator set a feed's cursor" in line)
    assert (record["feed"], record["cursor_before"], record["cursor_after"]) == ("extern", "1a4_c3", "0_0")
    assert (record["by"], record["version"]) == (SIGNER_ARN, 2)
    assert record["correlation_id"], "the API Gateway request id"
    assert resume.status_code == 200, resume.text
    assert resume.json()["stopped"] is False
    assert cursors.load(BOX).stopped_reason is None
    reset = world.api.request("PUT", "/feeds/extern/cursor", json_body={"cursor": None, "expectedVersion": 2})
    assert reset.json()["cursor"] is None
    assert cursors.load("extern").position is None


def test_a_stale_version_is_refused_and_names_the_current_one(world):
    cursors = seed(world)
    poller = cursors.load("extern")
    cursors.advance(poller, "2b0_10", relayed=2)  # a run moved the cursor after the operator read it

    found = problem(
        world.api.request("PUT", "/feeds/extern/cursor", json_body={"cursor": "0_0", "expectedVersion": 1}), 409
    )

    assert (found["currentVersion"], found["currentCursor"]) == (2, "2b0_10")
    assert "expectedVersion 2" in found["message"]
    assert cursors.load("extern").position == "2b0_10"


def test_a_run_that_read_the_cursor_before_an_operator_changed_it_cannot_write_over_the_change(world):
    cursors = seed(world)
    running = cursors.load("extern")  # a poller is mid-run with this state

    skip = world.api.request("PUT", "/feeds/extern/cursor", json_body={"cursor": "9f0_1", "expectedVersion": 1})

    assert skip.status_code == 200
    with pytest.raises(CursorConflict):
        cursors.advance(running, "2b0_10", relayed=5)
    assert cursors.load("extern").position == "9f0_1"


def test_cursor_changes_are_validated_before_anything_is_written(world):
    cursors = seed(world)
    cases = [
        ("/feeds/extern/cursor", {"cursor": "0_0"}, ["body"]),
        ("/feeds/extern/cursor", {"cursor": "0_0", "expectedVersion": -1}, ["body", "expectedVersion"]),
        ("/feeds/extern/cursor", {"cursor": "0_0", "expectedVersion": True}, ["body", "expectedVersion"]),
        ("/feeds/extern/cursor", {"expectedVersion": 1}, ["body"]),
        (
            "/feeds/extern/cursor",
            {"cursor": "0_0", "timestamp": "2024-05-01T00:00:00Z", "expectedVersion": 1},
            ["body"],
        ),
        ("/feeds/extern/cursor", {"cursor": "not an event id", "expectedVersion": 1}, ["body", "cursor"]),
        ("/feeds/extern/cursor", {"timestamp": "2024-05-01T00:00:00Z", "expectedVersion": 1}, ["body", "timestamp"]),
        (f"{BOX_PATH}/cursor", {"timestamp": "2024-05-01T00:00:00", "expectedVersion": 1}, ["body"]),
        (f"{BOX_PATH}/cursor", {"cursor": "", "expectedVersion": 1}, ["body"]),
    ]
    for path, body, where in cases:
        found = problem(world.api.request("PUT", path, json_body=body), 422)
        assert any(item["loc"][: len(where)] == where for item in found["detail"]), (body, found)
    assert problem(
        world.api.request("PUT", "/feeds/nothing-here/cursor", json_body={"cursor": "0_0", "expectedVersion": 0}), 404
    )
    assert cursors.load("extern").version == 1
    assert cursors.load(BOX).version == 1
    assert cursors.status("nothing-here") is None


def test_unknown_routes_and_unsigned_requests_answer_as_api_gateway_does(world):
    assert world.api.request("GET", "/nowhere").status_code == 403
    assert world.api.request("POST", "/feeds").json() == {"message": "Missing Authentication Token"}
    unsigned = requests.get(f"{world.front.url}/feeds", timeout=5)
    assert (unsigned.status_code, unsigned.json()) == (403, {"message": "Missing Authentication Token"})
    assert world.api.request("GET", "/feeds").status_code == 200


# -- the sample events in events/ ------------------------------------------------------------------------

#: What each sample answers against the seeded world (the share-events sample's token is a placeholder).
SAMPLE_STATUSES = {
    "admin_list_feeds": 200,
    "admin_get_feed": 200,
    "admin_set_cursor": 409,
    "admin_share_events": 403,
    "admin_list_publishers": 200,
    "admin_delete_publisher": 404,
    "admin_list_boxes": 200,
    "admin_get_box": 404,
    "admin_put_box": 201,
    "admin_delete_box": 404,
    "admin_discover_boxes": 200,
    "admin_merge_box": 404,
}


def test_every_route_has_a_sample_event_that_its_handler_answers(world):
    seed(world)
    routes = {(route.method, route.resource): route.function for route in api_gateway.api_routes(world.stack)}
    handlers = api_gateway.load_handlers(world.stack)
    seen = set()
    for path in sorted((ROOT / "events").glob("admin_*.json")):
        event = json.loads(path.read_text())
        route = (event["httpMethod"], event["resource"])
        assert route in routes, f"{path.name} names no route of template.yaml"
        assert event["requestContext"]["identity"]["userArn"]
        seen.add(route)
        function = routes[route]
        result = handlers[function](event, LocalContext(function))
        assert result["statusCode"] == SAMPLE_STATUSES[path.stem], (path.name, result["body"])
    assert seen == set(routes), "every route has a sample"


def test_a_cursor_change_without_an_iam_principal_is_refused(world):
    seed(world)
    event = json.loads((ROOT / "events" / "admin_set_cursor.json").read_text())
    event["requestContext"]["identity"] |= {"userArn": None, "caller": None, "user": None, "accessKey": None}
    event["body"] = json.dumps({"cursor": "0_0", "expectedVersion": 1})
    handler = api_gateway.load_handlers(world.stack)["FeedsApiFunction"]

    result = handler(event, LocalContext("FeedsApiFunction"))

    assert result["statusCode"] == 403
    assert "No IAM principal" in json.loads(result["body"])["message"]
    assert world.cursors().load("extern").position == "1a4_c3"


def test_a_diadoc_feed_moves_to_a_point_in_time_as_the_diadoc_source_keeps_it(world):
    cursors = seed(world)
    module = api_gateway.load_modules(world.stack)["FeedsApiFunction"]
    event = json.loads((ROOT / "events" / "admin_set_cursor.json").read_text())
    event["path"] = BOX_PATH + "/cursor"
    event["body"] = json.dumps({"timestamp": "2024-05-01T03:00:00+03:00", "expectedVersion": 1})

    result = module.handler(event, LocalContext("FeedsApiFunction"))

    assert result["statusCode"] == 200, result["body"]
    # What the Diadoc source reads as "from this moment on": the UTC moment in .NET ticks.
    assert cursors.load(BOX).position == diadoc_source.cursor_at(datetime(2024, 5, 1, tzinfo=UTC))
    assert cursors.load(BOX).position == "~since:638501184000000000"


def test_a_diadoc_cursor_the_box_could_not_read_is_refused_and_says_what_a_cursor_is(world):
    cursors = seed(world)
    for cursor in ("~since:abc", "~since:0", "~yesterday", "~seen:5944aa2f", "XKL/+Dd=~floor:soon", "a~seen:b~seen:c"):
        answer = world.api.request("PUT", f"{BOX_PATH}/cursor", json_body={"cursor": cursor, "expectedVersion": 1})
        found = problem(answer, 422)
        assert found["detail"][0]["loc"] == ["body", "cursor"], cursor
        assert "an IndexKey Diadoc gave" in found["message"]
        assert "~since:<.NET ticks>" in found["message"]
    assert cursors.load(BOX).version == 1, "nothing was written"


def test_a_diadoc_cursor_as_get_feeds_shows_it_resumes_where_it_is_and_a_key_alone_skips(world):
    cursors = seed(world)
    shown = "XKL/+DdR9NPixD1Bxue2t44=~seen:5944aa2f-a029-4065-8c2b-30235e791c0a~floor:638324326627158244"
    resumed = world.api.request("PUT", f"{BOX_PATH}/cursor", json_body={"cursor": shown, "expectedVersion": 1})
    assert resumed.status_code == 200, resumed.text
    assert cursors.load(BOX).position == shown

    skipped = world.api.request("PUT", f"{BOX_PATH}/cursor", json_body={"cursor": "CNvIl9RK0Ik=", "expectedVersion": 2})
    assert skipped.status_code == 200, skipped.text
    # A key alone: read after it, and reconciliation never reaches back before this change.
    position = Position.parse(cursors.load(BOX).position)
    assert (position.after, position.seen) == ("CNvIl9RK0Ik=", ())
    assert position.floor is not None
    assert abs(position.floor - to_ticks(datetime.now(UTC))) < 60 * TICKS_PER_SECOND
