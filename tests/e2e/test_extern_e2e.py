"""The Extern poller end to end: the Extern simulator over HTTP -> the real handler, with the template's
environment -> SNS (moto) -> SQS queues subscribed to the topic; the cursor in DynamoDB Local."""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests

from kontur_relay.domain.errors import FeedRejected, FeedUnavailable, MalformedPage
from kontur_relay.feeds.extern.source import EXTERN_EVENT_TYPE
from local_stack.context import LocalContext
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import ROOT, Stack, provision
from tests.conftest import load_handler
from tests.metric_contract import violations
from tests.queues import bodies, cursors, receive, subscribe, validate_message

FUNCTION = "ExternPollerFunction"
CLIENT_ID = "feed-relay"
PAGE_SIZE = 50
SHARED_TYPES = ["urn:docflow:fns534-demand", "urn:docflow:pfr-report"]


@dataclass
class Kontur:
    identity: IdentitySimulator
    extern: ExternSimulator
    api_key: str
    username: str
    password: str

    def visible(self) -> list[str]:
        return self.extern.events_visible_to(CLIENT_ID)


@pytest.fixture
def kontur() -> Iterator[Kontur]:
    with IdentitySimulator(token_lifetime=600) as identity, ExternSimulator(identity, seed=3) as extern:
        kontur = Kontur(identity, extern, secrets.token_hex(16), "svc@integrator.example", secrets.token_urlsafe(16))
        extern.add_integrator(CLIENT_ID, kontur.api_key, username=kontur.username, password=kontur.password)
        accounts = extern.setup(CLIENT_ID, accounts=3)
        extern.add_account()  # an account that shares nothing: its events must never reach SNS
        # One account shares only two docflow types, through the API, with its administrator's token.
        answer = requests.post(
            f"{extern.url}/v1/{accounts[2].id}/share-events",
            json={"subscriber": CLIENT_ID, "events-filter": {"docflow-types": SHARED_TYPES}},
            headers={"Authorization": f"Bearer {extern.admin_token(accounts[2])}"},
            timeout=5,
        )
        assert answer.status_code == 200
        yield kontur


def poller(stack: Stack, kontur: Kontur, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The handler module, imported fresh (a cold container) with the template's environment."""
    name = f"extern-credentials-{uuid.uuid4().hex}"
    credentials = {
        "token_url": kontur.identity.token_url,
        "client_id": CLIENT_ID,
        "client_secret": kontur.api_key,
        "grant_type": "password",
        "username": kontur.username,
        "password": kontur.password,
        "scope": "extern.api",
        "api_key": kontur.api_key,
    }
    aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(credentials))
    return load_handler(
        stack.function(FUNCTION),
        monkeypatch,
        EXTERN_API_URL=kontur.extern.url,
        EXTERN_CREDENTIALS_SECRET=name,
        EXTERN_PAGE_SIZE=str(PAGE_SIZE),
    )


def attributes(message: dict[str, Any]) -> dict[str, str]:
    return {name: value["StringValue"] for name, value in message.get("MessageAttributes", {}).items()}


def test_every_shared_event_reaches_the_topic_as_a_valid_message(stack, kontur, aws, monkeypatch):
    kontur.extern.generate(120)
    everything = subscribe(aws, stack.physical["EventsTopic"])
    reports = subscribe(
        aws, stack.physical["EventsTopic"], filter_policy={"docflow_type": ["urn:docflow:fns534-report"]}
    )
    handler = poller(stack, kontur, aws, monkeypatch).handler

    result = handler({"feed": "extern"}, LocalContext(FUNCTION))

    expected = kontur.visible()
    assert 0 < len(expected) < 120, "some events are of accounts that share nothing or not that docflow type"
    assert result["outcome"] == "caught_up"
    assert result["events"] == len(expected)
    messages = receive(aws, everything)
    assert sorted(m["id"] for m in bodies(messages)) == sorted(expected)

    for message in messages:
        body = json.loads(message["Body"])
        validate_message(body)
        event = kontur.extern.event(body["id"])
        assert body["data"] == event  # every key as Extern sent it, unknown ones too
        assert body["type"] == EXTERN_EVENT_TYPE
        assert body["source"] == f"{kontur.extern.url}/v1/events"
        assert body["feed"] == "extern"
        assert body["time"] == event["event-date-time"]
        assert body["subject"] == event["docflow-id"]
        expected_attributes = {
            "source": "extern",
            "feed": "extern",
            "event_type": EXTERN_EVENT_TYPE,
            "account_id": event["account-id"],
            "docflow_type": event["docflow-type"],
            "new_state": event["new-state"],
            "inn": event["inn"],
            "kpp": event.get("kpp"),
            # The run's trace context, in the body and, where the attribute budget leaves room, beside it.
            "traceparent": body["traceparent"],
        }
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", body["traceparent"])
        assert attributes(message) == {k: v for k, v in expected_attributes.items() if v is not None}

    filtered = bodies(receive(aws, reports))
    assert sorted(b["id"] for b in filtered) == sorted(
        i for i in expected if kontur.extern.event(i)["docflow-type"] == "urn:docflow:fns534-report"
    )
    assert filtered

    # The cursor is the feed's own next-event-id; a later run relays exactly what arrived since.
    assert cursors(stack).load("extern").position == kontur.extern.end_id
    new = set(kontur.extern.generate(40)) & set(kontur.visible())
    again = handler({"feed": "extern"}, LocalContext(FUNCTION))
    assert again["events"] == len(new)
    assert {b["id"] for b in bodies(receive(aws, everything))} == new


def test_a_backlog_larger_than_one_run_drains_over_several_runs(stack, kontur, aws, monkeypatch):
    kontur.extern.generate(300)
    expected = kontur.visible()
    assert len(expected) > 2 * PAGE_SIZE
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, kontur, aws, monkeypatch).handler

    outcomes = []
    for _ in range(10):
        # Time for one page: under the safety margin once the page is published.
        result = handler({"feed": "extern"}, LocalContext(FUNCTION, seconds_left=[10]))
        outcomes.append(result["outcome"])
        assert result["events"] <= PAGE_SIZE
        if result["outcome"] == "caught_up":
            break

    assert outcomes[:-1] == ["out_of_time"] * (len(outcomes) - 1)
    assert outcomes[-1] == "caught_up"
    # One run a page, then the run whose page is empty: only an empty page says the feed is drained.
    assert len(outcomes) == -(-len(expected) // PAGE_SIZE) + 1
    ids = [b["id"] for b in bodies(receive(aws, queue))]
    assert sorted(ids) == sorted(expected), "nothing lost, nothing twice"
    status = cursors(stack).status("extern")
    assert status is not None
    assert status.events_relayed == len(expected)
    assert status.cursor == kontur.extern.end_id


def test_a_failing_run_leaves_the_cursor_and_raises(stack, kontur, aws, monkeypatch, capsys):
    kontur.extern.generate(300)
    expected = kontur.visible()
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, kontur, aws, monkeypatch).handler
    first = handler({"feed": "extern"}, LocalContext(FUNCTION, seconds_left=[10]))
    assert (first["outcome"], first["events"]) == ("out_of_time", PAGE_SIZE)
    before = cursors(stack).load("extern")
    capsys.readouterr()

    kontur.extern.faults.add(Fault.server_error(400), prefix="/v1/events")
    with pytest.raises(FeedRejected) as raised:
        handler({"feed": "extern"}, LocalContext(FUNCTION))

    assert cursors(stack).load("extern") == before
    status = cursors(stack).status("extern")
    assert status is not None
    assert status.last_error is not None
    assert str(raised.value) in status.last_error
    assert "Extern answered 400 to GET /v1/events" in str(raised.value)
    assert "trace_id=" in str(raised.value)
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(
        m.get("Errors") in ([1.0], 1.0)
        for m in metrics
        if m.get("error") == "feed_rejected" and m.get("kind") == "extern"
    )

    rest = handler({"feed": "extern"}, LocalContext(FUNCTION))
    assert rest["outcome"] == "caught_up"
    ids = [b["id"] for b in bodies(receive(aws, queue))]
    assert sorted(ids) == sorted(expected)


@pytest.mark.parametrize(
    "case",
    [
        (Fault.altered("no-next-id", lambda body: body.pop("next-event-id")), "without next-event-id"),
        (Fault.altered("events-null", lambda body: body.update({"api-events": None})), "api-events null"),
        (Fault.reset_mid_body(), "broke off its answer"),
    ],
    ids=["next-id-missing", "events-null", "reset-mid-body"],
)
def test_a_page_the_relay_cannot_read_fails_the_run_and_loses_nothing(stack, kontur, aws, monkeypatch, case):
    fault, said = case
    kontur.extern.generate(200)
    expected = kontur.visible()
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, kontur, aws, monkeypatch).handler
    first = handler({"feed": "extern"}, LocalContext(FUNCTION, seconds_left=[10]))
    assert first["events"] == PAGE_SIZE
    before = cursors(stack).load("extern")

    # The second page (and, for a reset, each of its tries) comes back unreadable.
    kontur.extern.faults.add(fault, prefix="/v1/events", times=3)
    with pytest.raises((MalformedPage, FeedUnavailable)) as raised:
        handler({"feed": "extern"}, LocalContext(FUNCTION))
    assert said in str(raised.value)
    assert cursors(stack).load("extern") == before
    status = cursors(stack).status("extern")
    assert status is not None
    assert status.last_error is not None
    assert said in status.last_error

    kontur.extern.faults.clear()
    assert handler({"feed": "extern"}, LocalContext(FUNCTION))["outcome"] == "caught_up"
    ids = [b["id"] for b in bodies(receive(aws, queue))]
    assert set(expected) - set(ids) == set(), "no event lost"
    assert sorted(set(ids)) == sorted(expected)


def test_an_event_too_large_for_sns_is_delivered_through_the_payload_bucket(stack, kontur, aws, monkeypatch):
    kontur.extern.generate(120)
    expected = kontur.visible()
    queue = subscribe(aws, stack.physical["EventsTopic"])
    big_id = expected[3]

    def inflate(body: dict[str, Any]) -> None:
        # A key Extern might add one day, large enough to take the event over SNS's 256 KiB.
        body["api-events"][3]["attachment"] = "я" * 200_000

    kontur.extern.faults.add(Fault.altered("huge-event", inflate), prefix="/v1/events")
    result = poller(stack, kontur, aws, monkeypatch).handler({"feed": "extern"}, LocalContext(FUNCTION))

    assert (result["outcome"], result["events"]) == ("caught_up", len(expected))
    messages = receive(aws, queue)  # resolves pointers from S3 with plain boto3
    assert sorted(b["id"] for b in bodies(messages)) == sorted(expected), "the big one and every neighbour"
    (pointed,) = [m for m in messages if "Pointer" in m]
    body = json.loads(pointed["Body"])
    assert body["id"] == big_id
    assert body["data"] == {**kontur.extern.event(big_id), "attachment": "я" * 200_000}
    assert json.loads(pointed["Pointer"])[1]["s3BucketName"] == stack.physical["PayloadBucket"]
    assert cursors(stack).load("extern").position == kontur.extern.end_id


def test_a_fifo_topic_delivers_in_feed_order_per_docflow(kontur, aws, monkeypatch):
    stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters={"FifoTopic": "true"}), aws)
    topic = stack.physical["EventsTopic"]
    assert topic.endswith(".fifo")
    kontur.extern.generate(150)
    queue = subscribe(aws, topic)

    result = poller(stack, kontur, aws, monkeypatch).handler({"feed": "extern"}, LocalContext(FUNCTION))

    expected = kontur.visible()
    assert result["events"] == len(expected)
    messages = receive(aws, queue)
    assert sorted(b["id"] for b in bodies(messages)) == sorted(expected)
    groups: dict[str, list[str]] = {}
    for message in messages:
        body = json.loads(message["Body"])
        validate_message(body)
        assert message["Attributes"]["MessageGroupId"] == body["data"]["docflow-id"]
        assert message["Attributes"]["MessageDeduplicationId"]
        groups.setdefault(message["Attributes"]["MessageGroupId"], []).append(body["id"])
    assert len(groups) > 1
    for docflow, ids in groups.items():
        in_feed_order = [i for i in expected if kontur.extern.event(i)["docflow-id"] == docflow]
        assert ids == in_feed_order


def test_the_sam_local_event_is_the_schedules_input(stack):
    schedule = stack.function(FUNCTION).schedules[0]
    assert json.loads(Path(ROOT / "events" / "extern_poller.json").read_text()) == schedule.input


def test_a_feed_whose_secret_is_still_empty_is_not_configured_not_failing(
    stack, kontur, aws, monkeypatch, capsys, logs
):
    """The stack creates the secret empty; until someone fills it, each tick says so once and ends
    well: nothing for FailedRunsQueue, nothing for the failure alarm."""
    handler = load_handler(stack.function(FUNCTION), monkeypatch, EXTERN_API_URL=kontur.extern.url).handler

    for _ in range(2):
        result = handler({"feed": "extern"}, LocalContext(FUNCTION))
        assert result == {"kind": "extern", "outcome": "not_configured"}

    warnings = [message for message in logs.messages() if "is not configured" in message]
    assert len(warnings) == 2, "one clear line a tick"
    assert "secret" in warnings[0]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emitted
    # What the notice alarm reads, and nothing a page reads (tests/template/test_alarm_timeline.py).
    assert {m["Name"] for line in emitted for block in line["_aws"]["CloudWatchMetrics"] for m in block["Metrics"]} == {
        "NotConfigured"
    }
    assert violations(emitted) == []
    status = cursors(stack).status("extern")
    assert status is not None
    assert status.not_configured is not None
    assert kontur.extern.calls("/v1/events") == [], "not a request to Kontur"

    # Filled in, the next cold container runs, and the row says it is configured.
    kontur.extern.generate(30)
    assert poller(stack, kontur, aws, monkeypatch).handler({"feed": "extern"}, LocalContext(FUNCTION))["outcome"] == (
        "caught_up"
    )
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert {"RunSucceeded", "EventsPublished", "KonturRequests", "LagSeconds"} <= {
        metric["Name"]
        for document in emitted
        for block in document["_aws"]["CloudWatchMetrics"]
        for metric in block["Metrics"]
    }
    assert violations(emitted) == [], "every metric as the alarms and the dashboard read it"
    status = cursors(stack).status("extern")
    assert status is not None
    assert status.not_configured is None


def test_an_event_with_characters_sns_refuses_in_an_attribute_does_not_hold_the_feed_up(
    stack, kontur, aws, monkeypatch
):
    kontur.extern.generate(60)
    expected = kontur.visible()
    queue = subscribe(aws, stack.physical["EventsTopic"])
    odd = expected[2]

    def spoil(body: dict[str, Any]) -> None:
        # Fields that become filter attributes: a control character, a lone surrogate (escaped in JSON).
        event = next(item for item in body["api-events"] if item["id"] == odd)
        event["inn"] += "\x07\ud800"
        event["docflow-type"] += "\x00"

    kontur.extern.faults.add(Fault.altered("odd-characters", spoil), prefix="/v1/events")
    result = poller(stack, kontur, aws, monkeypatch).handler({"feed": "extern"}, LocalContext(FUNCTION))

    assert (result["outcome"], result["events"]) == ("caught_up", len(expected))
    messages = {json.loads(m["Body"])["id"]: m for m in receive(aws, queue)}
    assert sorted(messages) == sorted(expected)
    original = kontur.extern.event(odd)
    data = json.loads(messages[odd]["Body"])["data"]
    assert (data["inn"], data["docflow-type"]) == (original["inn"] + "\x07\ud800", original["docflow-type"] + "\x00")
    assert attributes(messages[odd])["inn"] == original["inn"]
    assert attributes(messages[odd])["docflow_type"] == original["docflow-type"]
    assert cursors(stack).load("extern").position == kontur.extern.end_id


def test_a_retry_after_longer_than_a_run_is_kept_on_the_feed_and_the_next_runs_wait_for_it(
    stack, kontur, aws, monkeypatch
):
    kontur.extern.generate(30)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, kontur, aws, monkeypatch).handler
    kontur.extern.faults.add(Fault.throttle(retry_after=3600), prefix="/v1/events")

    with pytest.raises(FeedUnavailable, match="Kontur asks to wait 3600 s"):
        handler({"feed": "extern"}, LocalContext(FUNCTION))
    assert len(kontur.extern.calls("/v1/events")) == 1, "not retried: a run cannot wait an hour"
    state = cursors(stack).load("extern")
    assert state.not_before is not None
    assert state.not_before > time.time() + 3500

    again = handler({"feed": "extern"}, LocalContext(FUNCTION))
    assert again["outcome"] == "waiting"
    assert len(kontur.extern.calls("/v1/events")) == 1, "the next run does not ask Kontur before then"

    # The hour is over (moved on the row as time would move it; a container of its own): runs go on.
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    table.update_item(
        Key={"feed": "extern"}, UpdateExpression="SET not_before = :past", ExpressionAttributeValues={":past": 1}
    )
    later = poller(stack, kontur, aws, monkeypatch).handler
    assert later({"feed": "extern"}, LocalContext(FUNCTION))["outcome"] == "caught_up"
    assert sorted(b["id"] for b in bodies(receive(aws, queue))) == sorted(kontur.visible())
