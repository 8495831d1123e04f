"""The Diadoc poller end to end: the Diadoc (and identity) simulators over HTTP -> the real handler with
the template's environment and a secret in moto -> SNS (moto) -> SQS queues subscribed to the topic;
cursors in DynamoDB Local. Every message that reaches a queue is validated against the schema."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet

from kontur_relay.domain.errors import (
    ConfigurationError,
    FeedAuthError,
    FeedRejected,
    FeedStopped,
    FeedUnavailable,
    MalformedPage,
)
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.events import MESSAGE_EVENT_TYPE, PATCH_EVENT_TYPE
from kontur_relay.feeds.diadoc.source import FROM_OLDEST
from kontur_relay.feeds.diadoc.ticks import to_rfc3339
from local_stack.context import LocalContext
from local_stack.scenarios import SimulatedDiadoc, SimulationOptions
from local_stack.simulators.base import Fault
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.diadoc_events import (
    FUTURE_ATTACHMENT_TYPE,
    FUTURE_EVENT_FIELD,
    FUTURE_MESSAGE_FIELD,
    HEAD_DEPARTMENT,
    ticks,
)
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import ROOT, Stack, provision
from tests.conftest import load_handler
from tests.queues import bodies, cursors, receive, subscribe

FUNCTION = "DiadocPollerFunction"
EVENTS = "/V8/GetNewEvents"


@dataclass
class Diadoc:
    identity: IdentitySimulator
    sim: DiadocSimulator
    #: The legacy credentials of a user who sees both boxes whole (the secret's JSON).
    legacy: dict[str, str]
    boxes: list[str]

    @property
    def box(self) -> str:
        return self.boxes[0]


@pytest.fixture
def diadoc() -> Iterator[Diadoc]:
    with IdentitySimulator(token_lifetime=600) as identity, DiadocSimulator(identity, seed=5) as sim:
        legacy = sim.setup(boxes=2, backlog=0)
        yield Diadoc(identity, sim, legacy, list(sim.boxes))


def secret(aws: dict[str, Any], values: dict[str, str]) -> str:
    name = f"diadoc-credentials-{uuid.uuid4().hex}"
    aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(values))
    return name


def poller(
    stack: Stack,
    diadoc: Diadoc,
    aws: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    credentials: dict[str, str] | None = None,
    **environment: str,
) -> ModuleType:
    """The handler module, imported fresh (a cold container) with the template's environment."""
    return load_handler(
        stack.function(FUNCTION),
        monkeypatch,
        DIADOC_API_URL=diadoc.sim.url,
        DIADOC_CREDENTIALS_SECRET=secret(aws, credentials or diadoc.legacy),
        HTTP_BACKOFF_SECONDS="0.01",
        HTTP_RETRIES="3",
        **environment,
    )


def ids(messages: Sequence[dict[str, Any]]) -> list[str]:
    return [body["id"] for body in bodies(messages)]


def attributes(message: dict[str, Any]) -> dict[str, Any]:
    """SNS attributes as published: strings, and String.Array values as lists."""
    found: dict[str, Any] = {}
    for name, value in message.get("MessageAttributes", {}).items():
        text = value["StringValue"]
        found[name] = json.loads(text) if value["DataType"] == "String.Array" else text
    return found


def metrics_printed(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if '"_aws"' in line]


def metric(printed: dict[str, Any], name: str) -> float | None:
    value = printed.get(name)
    return value[0] if isinstance(value, list) else value


def queried(diadoc: Diadoc, name: str) -> list[str | None]:
    """The value of a query parameter in each GetNewEvents request, as the simulator decoded it."""
    return [call.query.get(name) for call in diadoc.sim.calls(EVENTS)]


# -- the whole path ---------------------------------------------------------------------------------


def test_every_event_of_the_box_reaches_the_queue_as_diadoc_sent_it(stack, diadoc, aws, monkeypatch, capsys):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 120)
    future = sim.add_future_event(box)
    sim.generate(box, 129)
    expected = sim.event_ids(box)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = handler({"boxId": box}, LocalContext(FUNCTION))

    assert (result["outcome"], result["events"], result["pages"]) == ("caught_up", 250, 3)
    messages = receive(aws, queue)
    assert sorted(ids(messages)) == sorted(expected)
    for message in messages:
        body = json.loads(message["Body"])
        raw = sim.raw_event(box, body["id"])
        event = pb.BoxEvent.FromString(raw)
        assert base64.b64decode(body["protobuf"]) == raw, "the BoxEvent's bytes exactly as Diadoc sent them"
        assert body["data"] == json_format.MessageToDict(event, preserving_proto_field_name=True)
        assert body["source"] == f"{sim.url}/boxes/{box}"
        assert body["feed"] == f"diadoc:{box}"
        inner = event.Message if event.HasField("Message") else event.Patch
        assert body["type"] == (MESSAGE_EVENT_TYPE if event.HasField("Message") else PATCH_EVENT_TYPE)
        assert body["subject"] == inner.MessageId
        assert body["time"] == to_rfc3339(inner.TimestampTicks)
        published = attributes(message)
        assert published["source"] == "diadoc"
        assert published["feed"] == f"diadoc:{box}"
        assert published["event_type"] == body["type"]
        assert published["box_id"] == box
        assert published["message_type"] in ("Letter", "Draft", "Template")
        assert len(published) <= 10
    assert {body["type"] for body in bodies(messages)} == {MESSAGE_EVENT_TYPE, PATCH_EVENT_TYPE}

    # The event from a newer schema: its unknown fields are gone from data, never from protobuf.
    newer = next(body for body in bodies(messages) if body["id"] == future)
    assert newer["data"]["Message"]["Entities"][-1].get("AttachmentType") is None
    raw = base64.b64decode(newer["protobuf"])
    assert pb.BoxEvent.FromString(raw).SerializeToString() != raw
    unknown = pb.BoxEvent.FromString(raw)
    assert [f.field_number for f in _unknown(unknown)] == [FUTURE_EVENT_FIELD]
    assert [f.field_number for f in _unknown(unknown.Message)] == [FUTURE_MESSAGE_FIELD]
    assert [(f.field_number, f.data) for f in _unknown(unknown.Message.Entities[-1])] == [(5, FUTURE_ATTACHMENT_TYPE)]

    # Pages of 100 (the default limit) after the last IndexKey of the page before, which holds
    # + / = and arrived intact, so requests percent-encoded it.
    keys = sim.index_keys(box)
    assert queried(diadoc, "limit") == ["100", "100", "100"]
    assert queried(diadoc, "afterIndexKey") == [None, keys[99], keys[199]]
    assert all(c in keys[99] + keys[199] for c in "+/=")
    state = cursors(stack).load(f"diadoc:{box}")
    assert state.position == keys[-1]
    status = cursors(stack).status(f"diadoc:{box}")
    assert status is not None
    assert (status.events_relayed, status.backlog, status.backlog_capped) == (250, 0, False)
    printed = metrics_printed(capsys.readouterr().out)
    assert any(metric(m, "Backlog") == 0 and m.get("feed") == f"diadoc:{box}" for m in printed)

    # The next tick relays exactly what arrived since, from the cursor.
    new = sim.generate(box, 7)
    again = handler({"boxId": box}, LocalContext(FUNCTION))
    assert (again["outcome"], again["events"]) == ("caught_up", 7)
    assert ids(receive(aws, queue)) == new
    assert queried(diadoc, "afterIndexKey")[-1] == keys[-1]


def test_a_message_carries_its_documents_as_filterable_attributes(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 150)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    utd = subscribe(aws, stack.physical["EventsTopic"], filter_policy={"type_named_id": ["UniversalTransferDocument"]})

    poller(stack, diadoc, aws, monkeypatch).handler({"boxId": box}, LocalContext(FUNCTION))

    messages = receive(aws, queue)
    several = 0
    for message in messages:
        event = pb.BoxEvent.FromString(base64.b64decode(json.loads(message["Body"])["protobuf"]))
        entities = event.Message.Entities if event.HasField("Message") else event.Patch.Entities
        documents = [e.DocumentInfo for e in entities if e.HasField("DocumentInfo")]
        published = attributes(message)
        types = sorted({d.TypeNamedId for d in documents})
        assert published.get("type_named_id") == (types if len(types) > 1 else types[0] if types else None)
        several += len(types) > 1
        departments = sorted(
            {d.DepartmentId for d in documents if d.DepartmentId}
            | {p.MovedToDepartment for p in event.Patch.EntityPatches if p.MovedToDepartment}
        )
        assert published.get("department_id") == (
            departments if len(departments) > 1 else departments[0] if departments else None
        )
        if documents:
            assert published["document_direction"] == pb.DocumentDirection.Name(documents[0].DocumentDirection)
            assert published["counteragent_box_id"] == documents[0].CounteragentBoxId
    assert several, "some messages hold documents of several types: their attribute is an array"
    utds = [m for m in messages if "UniversalTransferDocument" in _as_list(attributes(m).get("type_named_id"))]
    assert sorted(ids(receive(aws, utd))) == sorted(ids(utds))
    assert utds


def test_each_box_is_a_feed_of_its_own_with_the_deployments_settings(stack, diadoc, aws, monkeypatch):
    sim, (first, second) = diadoc.sim, diadoc.boxes
    sim.generate(first, 30)
    sim.generate(second, 40)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    second_only = subscribe(aws, stack.physical["EventsTopic"], filter_policy={"box_id": [second]})
    settings = {second: {"messageType": "Letter", "documentDirection": ["Inbound", "Outbound"], "limit": 7}}
    module = poller(stack, diadoc, aws, monkeypatch, DIADOC_BOX_SETTINGS=json.dumps(settings))

    assert module.handler({"boxId": first}, LocalContext(FUNCTION))["events"] == 30
    result = module.handler({"boxId": second}, LocalContext(FUNCTION))

    wanted = sim.event_ids(second, messageType="Letter", documentDirection="Inbound,Outbound")
    assert 0 < len(wanted) < 40
    assert result["events"] == len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(sim.event_ids(first) + wanted)
    assert sorted(ids(receive(aws, second_only))) == sorted(wanted)
    second_calls = [c for c in sim.calls(EVENTS) if c.query["boxId"] == second]
    assert {(c.query["messageType"], c.query["documentDirection"], c.query["limit"]) for c in second_calls} == {
        ("Letter", "Inbound,Outbound", "7")
    }
    assert len(second_calls) == len(wanted) // 7 + 1, "pages until one is shorter than the limit"
    assert cursors(stack).load(f"diadoc:{first}").position == sim.index_keys(first)[-1]
    assert cursors(stack).load(f"diadoc:{second}").position is not None
    # The container keeps its relays and its token: a later tick of either box signs in no more.
    assert module.handler({"boxId": second}, LocalContext(FUNCTION))["events"] == 0
    assert sim.authentications == 1


FILTERS = [
    ("messageType", "Letter,Template"),
    ("typeNamedId", "UniversalTransferDocument,Invoice"),
    ("documentDirection", "Inbound"),
    ("counteragentBoxId", None),
    ("departmentId", None),
    ("timestampFromTicks", None),
    ("timestampToTicks", None),
    ("orderBy", "Descending"),
]


@pytest.mark.parametrize("case", FILTERS, ids=[name for name, _ in FILTERS])
def test_every_filter_of_the_method_is_sent_on_every_page_and_holds(stack, diadoc, aws, monkeypatch, case):
    name, value = case
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 90)
    events = [pb.BoxEvent.FromString(sim.raw_event(box, i)) for i in sim.event_ids(box)]
    middle = events[45].Message if events[45].HasField("Message") else events[45].Patch
    value = (
        value
        or {
            "counteragentBoxId": events[0].Message.Entities[0].DocumentInfo.CounteragentBoxId,
            "departmentId": sim.boxes[box].departments[1],
            "timestampFromTicks": str(middle.TimestampTicks),
            "timestampToTicks": str(middle.TimestampTicks),
        }[name]
    )
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch, DIADOC_PAGE_SIZE="10").handler

    result = handler({"boxId": box, name: value}, LocalContext(FUNCTION))

    wanted = sim.event_ids(box, **{name: value})
    if name == "orderBy":
        wanted = list(reversed(sim.event_ids(box)))
    assert 0 < len(wanted) <= 90
    if name != "orderBy":
        assert len(wanted) < 90, "the filter leaves some events out"
    assert result["events"] == len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(wanted)
    assert queried(diadoc, name) == [value] * result["pages"]
    assert result["pages"] == len(wanted) // 10 + 1


def test_a_department_user_reads_its_department_and_is_stopped_outside_it(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 80)  # events from before 2017-03-15 and drafts have no department
    mine, other = sim.boxes[box].departments[1], sim.boxes[box].departments[2]
    login, password = f"dept-{uuid.uuid4().hex[:6]}@example.ru", secrets.token_urlsafe(10)
    sim.add_user(login, password, {box: [mine, HEAD_DEPARTMENT]})
    credentials = {**diadoc.legacy, "login": login, "password": password}
    settings = json.dumps({box: {"departmentId": mine}})
    queue = subscribe(aws, stack.physical["EventsTopic"])

    result = poller(stack, diadoc, aws, monkeypatch, credentials, DIADOC_BOX_SETTINGS=settings).handler(
        {"boxId": box}, LocalContext(FUNCTION)
    )

    wanted = sim.event_ids(box, departmentId=mine)
    assert 0 < len(wanted) < 80
    assert result["events"] == len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(wanted)

    # The whole box, or a department the user cannot see: 403, and the feed stops.
    for outside in ({}, {box: {"departmentId": other}}):
        fresh = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}"), aws)
        handler = poller(fresh, diadoc, aws, monkeypatch, credentials, DIADOC_BOX_SETTINGS=json.dumps(outside)).handler
        with pytest.raises(FeedStopped) as raised:
            handler({"boxId": box}, LocalContext(FUNCTION))
        assert "answered 403" in str(raised.value)
        status = cursors(fresh).status(f"diadoc:{box}")
        assert status is not None
        assert status.stopped_reason == f"FeedStopped: {raised.value}"


# -- where a new feed starts ------------------------------------------------------------------------


def test_by_default_a_new_feed_starts_from_the_oldest_event(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 12)
    result = poller(stack, diadoc, aws, monkeypatch).handler({"boxId": diadoc.box}, LocalContext(FUNCTION))
    assert result["events"] == 12
    assert diadoc.sim.calls("/V2/GetLastEvent") == []


def test_now_starts_after_the_newest_event_and_the_cursor_then_stays_an_index_key(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 40)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch, DIADOC_START="now").handler

    first = handler({"boxId": box}, LocalContext(FUNCTION))

    assert (first["outcome"], first["events"]) == ("caught_up", 0)
    assert cursors(stack).load(f"diadoc:{box}").position == sim.index_keys(box)[-1]
    new = sim.generate(box, 5)
    assert handler({"boxId": box}, LocalContext(FUNCTION))["events"] == 5
    assert ids(receive(aws, queue)) == new
    assert len(sim.calls("/V2/GetLastEvent")) == 1, "the start is resolved once, on the first read"


def test_now_on_an_empty_box_settles_on_its_first_event(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    assert handler({"boxId": box, "start": "now"}, LocalContext(FUNCTION))["events"] == 0
    assert [c.status for c in sim.calls("/V2/GetLastEvent")] == [204]
    assert cursors(stack).load(f"diadoc:{box}").position == FROM_OLDEST

    # What arrives before the next tick is not skipped by a second "now".
    arrived = sim.generate(box, 9)
    assert handler({"boxId": box, "start": "now"}, LocalContext(FUNCTION))["events"] == 9
    assert ids(receive(aws, queue)) == arrived
    assert len(sim.calls("/V2/GetLastEvent")) == 1
    assert cursors(stack).load(f"diadoc:{box}").position == sim.index_keys(box)[-1]


def test_a_point_in_time_starts_at_the_first_event_from_then(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 60)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    start = "2017-03-15T12:00:00+03:00"

    result = poller(stack, diadoc, aws, monkeypatch, DIADOC_START=start).handler({"boxId": box}, LocalContext(FUNCTION))

    since = str(ticks(datetime(2017, 3, 15, 9, 0, tzinfo=UTC)))
    wanted = sim.event_ids(box, timestampFromTicks=since)
    assert 0 < len(wanted) < 60
    assert result["events"] == len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(wanted)
    assert set(queried(diadoc, "timestampFromTicks")) == {since}


# -- limit and versions ----------------------------------------------------------------------------


def test_the_documented_maximum_limit_is_accepted_and_more_is_refused(stack, diadoc, aws, monkeypatch, capsys):
    diadoc.sim.generate(diadoc.box, 520)
    handler = poller(stack, diadoc, aws, monkeypatch, DIADOC_PAGE_SIZE="500").handler

    result = handler({"boxId": diadoc.box}, LocalContext(FUNCTION))
    assert (result["events"], result["pages"]) == (520, 2)
    assert queried(diadoc, "limit") == ["500", "500"]

    capsys.readouterr()
    with pytest.raises(ConfigurationError, match="limit must be between 1 and 500"):
        handler({"boxId": diadoc.boxes[1], "limit": 501}, LocalContext(FUNCTION))
    with pytest.raises(ConfigurationError, match="unknown Diadoc feed settings afterEventId"):
        handler({"boxId": diadoc.boxes[1], "afterEventId": "x"}, LocalContext(FUNCTION))
    errors = [m for m in metrics_printed(capsys.readouterr().out) if m.get("kind") == "configuration"]
    assert [m["feed"] for m in errors] == [f"diadoc:{diadoc.boxes[1]}"] * 2


def test_the_deprecated_v7_method_is_read_alike(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 25)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    result = poller(stack, diadoc, aws, monkeypatch, DIADOC_API_VERSION="V7").handler(
        {"boxId": diadoc.box}, LocalContext(FUNCTION)
    )
    assert result["events"] == 25
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box))
    assert [c.path for c in diadoc.sim.calls("/V")] == ["/V3/Authenticate", "/V7/GetNewEvents"]


def test_a_capped_total_count_is_kept_as_a_lower_bound(stack, aws, monkeypatch, diadoc, capsys):
    diadoc.sim.count_cap = 50
    diadoc.sim.generate(diadoc.box, 120)
    handler = poller(stack, diadoc, aws, monkeypatch, DIADOC_PAGE_SIZE="20").handler

    result = handler({"boxId": diadoc.box}, LocalContext(FUNCTION, seconds_left=[300, 300, 300, 10]))

    assert (result["outcome"], result["events"]) == ("out_of_time", 60)
    status = cursors(stack).status(f"diadoc:{diadoc.box}")
    assert status is not None
    assert (status.backlog, status.backlog_capped) == (30, True)  # "at least 50" minus the page of 20
    assert any(metric(m, "Backlog") == 30 for m in metrics_printed(capsys.readouterr().out))


# -- errors as the method documents them ------------------------------------------------------------


def test_a_cursor_diadoc_refuses_fails_the_run_and_stays(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 10)
    feed = f"diadoc:{diadoc.box}"
    store = cursors(stack)
    bad = "not+a/key="
    store.set_cursor(feed, bad, expected_version=0, by="operator")
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    with pytest.raises(FeedRejected) as raised:
        handler({"boxId": diadoc.box}, LocalContext(FUNCTION))

    assert "Diadoc answered 400 to GET /V8/GetNewEvents: cursor must have valid value" in str(raised.value)
    assert "error=Http.BadRequest" in str(raised.value)
    assert queried(diadoc, "afterIndexKey") == [bad]
    assert store.load(feed).position == bad
    status = store.status(feed)
    assert status is not None
    assert status.last_error == f"FeedRejected: {raised.value}"
    assert status.stopped_reason is None


@pytest.mark.parametrize("cause", ["not_paid", "no_box_access"])
def test_402_and_403_stop_the_feed_until_an_operator_resumes_it(stack, diadoc, aws, monkeypatch, cause):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 15)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    if cause == "not_paid":
        sim.set_paid(box, False)
    else:
        sim.set_access(diadoc.legacy["login"], box, False)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    with pytest.raises(FeedStopped) as raised:
        handler({"boxId": box}, LocalContext(FUNCTION))

    status, code = (402, "Billing.ServiceIsNotPaid") if cause == "not_paid" else (403, "Authorization.BoxAccessDenied")
    assert f"Diadoc answered {status}" in str(raised.value)
    assert f"error={code}" in str(raised.value)
    feed = f"diadoc:{box}"
    state = cursors(stack).load(feed)
    assert state.stopped_reason == f"FeedStopped: {raised.value}"
    calls = len(sim.calls(EVENTS))

    # Later ticks skip the feed without asking Diadoc, even once the cause is gone.
    sim.set_paid(box, True)
    sim.set_access(diadoc.legacy["login"], box, None)
    assert handler({"boxId": box}, LocalContext(FUNCTION))["outcome"] == "stopped"
    assert len(sim.calls(EVENTS)) == calls

    cursors(stack).set_cursor(feed, state.position, expected_version=state.version, by="operator@example")
    resumed = handler({"boxId": box}, LocalContext(FUNCTION))
    assert (resumed["outcome"], resumed["events"]) == ("caught_up", 15)
    assert sorted(ids(receive(aws, queue))) == sorted(sim.event_ids(box))


def test_a_401_gets_one_fresh_token(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 10)
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    assert handler({"boxId": diadoc.box}, LocalContext(FUNCTION))["events"] == 10
    diadoc.sim.generate(diadoc.box, 3)

    diadoc.sim.faults.add(Fault.expired_token(), prefix=EVENTS)
    assert handler({"boxId": diadoc.box}, LocalContext(FUNCTION))["events"] == 3
    assert diadoc.sim.authentications == 2
    assert [c.status for c in diadoc.sim.calls(EVENTS)] == [200, 401, 200]

    diadoc.sim.faults.add(Fault.expired_token(), prefix=EVENTS, times=2)
    with pytest.raises(FeedAuthError) as raised:
        handler({"boxId": diadoc.box}, LocalContext(FUNCTION))
    assert "Diadoc answered 401" in str(raised.value)
    assert diadoc.sim.authentications == 3, "one renewal per run, not a loop"


def test_refused_login_and_password_fail_the_run_as_auth_errors(stack, diadoc, aws, monkeypatch):
    handler = poller(stack, diadoc, aws, monkeypatch, {**diadoc.legacy, "password": "wrong"}).handler
    with pytest.raises(FeedAuthError) as raised:
        handler({"boxId": diadoc.box}, LocalContext(FUNCTION))
    assert "error=Authorization.InvalidCredentials" in str(raised.value)
    assert "wrong" not in str(raised.value)
    assert diadoc.sim.calls(EVENTS) == []


def test_openid_connect_bearer_tokens(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 20)
    diadoc.identity.register_client("relay", "client-secret")
    credentials = {
        "token_url": diadoc.identity.token_url,
        "client_id": "relay",
        "client_secret": "client-secret",
        "grant_type": "password",
        "username": diadoc.legacy["login"],
        "password": diadoc.legacy["password"],
    }
    handler = poller(stack, diadoc, aws, monkeypatch, credentials).handler

    assert handler({"boxId": box}, LocalContext(FUNCTION))["events"] == 20
    sim.faults.add(Fault.expired_token(), prefix=EVENTS)
    sim.generate(box, 2)
    assert handler({"boxId": box}, LocalContext(FUNCTION))["events"] == 2
    assert diadoc.identity.issued["password"] == 2
    assert {c.headers["authorization"].split()[0] for c in sim.calls(EVENTS)} == {"Bearer"}
    assert sim.authentications == 0


TRANSIENT = [
    Fault.server_error(405),
    Fault.server_error(409),
    Fault.throttle(retry_after=0),
    Fault.throttle(),
    Fault.server_error(500),
    Fault.html_error(502),
    Fault.server_error(503),
    Fault.server_error(504),
]


@pytest.mark.parametrize(
    "fault", TRANSIENT, ids=["405", "409", "429-retry-after", "429", "500", "502-html", "503", "504"]
)
def test_transient_answers_are_retried_and_outlasting_ones_keep_the_cursor(stack, diadoc, aws, monkeypatch, fault):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 30)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch, DIADOC_PAGE_SIZE="20").handler

    sim.faults.add(fault, prefix=EVENTS, times=2)
    assert handler({"boxId": box}, LocalContext(FUNCTION))["events"] == 30
    assert [c.status for c in sim.calls(EVENTS)] == [fault.status, fault.status, 200, 200]
    assert sorted(ids(receive(aws, queue))) == sorted(sim.event_ids(box))

    sim.generate(box, 5)
    sim.faults.add(fault, prefix=EVENTS, times=10)
    before = cursors(stack).load(f"diadoc:{box}")
    with pytest.raises(FeedUnavailable) as raised:
        handler({"boxId": box}, LocalContext(FUNCTION))
    assert f"Diadoc answered {fault.status}" in str(raised.value)
    if fault.body is None:
        assert "error=Http." in str(raised.value), "X-Diadoc-ErrorCode is reported"
    else:
        assert "an HTML page (502)" in str(raised.value)
    assert cursors(stack).load(f"diadoc:{box}") == before
    assert receive(aws, queue) == []


@pytest.mark.parametrize(
    "case",
    [(b"\xff\xff\xff\xff", "application/x-protobuf"), (b"<html><title>Login</title></html>", "text/html")],
    ids=["not-protobuf", "html-with-200"],
)
def test_a_page_that_is_not_a_box_event_list_fails_the_run(stack, diadoc, aws, monkeypatch, case):
    body, content_type = case
    diadoc.sim.generate(diadoc.box, 5)
    diadoc.sim.faults.add(Fault("malformed", status=200, body=body, content_type=content_type), prefix=EVENTS)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    with pytest.raises(MalformedPage) as raised:
        handler({"boxId": diadoc.box}, LocalContext(FUNCTION))
    assert "instead of protobuf" in str(raised.value) or "is not a BoxEventList" in str(raised.value)
    assert cursors(stack).load(f"diadoc:{diadoc.box}").position is None
    assert receive(aws, queue) == []
    # The next tick reads the same page, answered properly: not one event lost.
    assert handler({"boxId": diadoc.box}, LocalContext(FUNCTION))["events"] == 5
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box))


def test_a_connection_reset_mid_body_is_retried_then_unavailable(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 5)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    diadoc.sim.faults.add(Fault.reset_mid_body(), prefix=EVENTS, times=3)
    with pytest.raises(FeedUnavailable, match="Diadoc broke off its answer to GET /V8/GetNewEvents on every try"):
        handler({"boxId": diadoc.box}, LocalContext(FUNCTION))
    assert cursors(stack).load(f"diadoc:{diadoc.box}").position is None
    diadoc.sim.faults.add(Fault.reset_mid_body(), prefix=EVENTS, times=2)
    assert handler({"boxId": diadoc.box}, LocalContext(FUNCTION))["events"] == 5
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box))


# -- FIFO -------------------------------------------------------------------------------------------


def test_a_fifo_topic_keeps_each_messages_events_in_order(diadoc, aws, monkeypatch):
    stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters={"FifoTopic": "true"}), aws)
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 80)
    queue = subscribe(aws, stack.physical["EventsTopic"])

    result = poller(stack, diadoc, aws, monkeypatch).handler({"boxId": box}, LocalContext(FUNCTION))

    assert result["events"] == 80
    messages = receive(aws, queue)
    groups: dict[str, list[str]] = {}
    for message in messages:
        body = json.loads(message["Body"])
        assert message["Attributes"]["MessageGroupId"] == body["subject"]
        groups.setdefault(body["subject"], []).append(body["id"])
    assert any(len(events) > 1 for events in groups.values())
    for message_id, events in groups.items():
        in_feed = [i for i in sim.event_ids(box) if _message_id(sim.raw_event(box, i)) == message_id]
        assert events == in_feed


# -- the template's schedules ----------------------------------------------------------------------


def test_the_sam_local_event_is_a_boxs_schedule_input(aws):
    event = json.loads(Path(ROOT / "events" / "diadoc_poller.json").read_text())
    stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters={"DiadocBoxIds": event["boxId"]}), aws)
    assert [s.input for s in stack.function(FUNCTION).schedules] == [event]


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else value


def _message_id(raw: bytes) -> str:
    event = pb.BoxEvent.FromString(raw)
    return event.Message.MessageId or event.Patch.MessageId


def _unknown(message: Any) -> list[Any]:
    fields = UnknownFieldSet(message)
    return [fields[i] for i in range(len(fields))]


# -- the local stack's Diadoc -----------------------------------------------------------------------


@pytest.mark.parametrize(("scheme", "fault_rate"), [("diadocauth", 0.05), ("oidc", 0.0)], ids=["diadocauth", "oidc"])
def test_the_local_stacks_diadoc_is_relayed_box_by_box_through_the_templates_schedules(
    aws, monkeypatch, scheme, fault_rate
):
    options = SimulationOptions(seed=7, backlog=60, traffic_interval=0.05, fault_rate=fault_rate, token_lifetime=300)
    simulated = SimulatedDiadoc(options, scheme=scheme)
    try:
        stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters=simulated.parameters), aws)
        queue = subscribe(aws, stack.physical["EventsTopic"])
        handler = load_handler(
            stack.function(FUNCTION),
            monkeypatch,
            DIADOC_CREDENTIALS_SECRET=secret(aws, simulated.credentials),
            HTTP_BACKOFF_SECONDS="0.01",
        ).handler
        schedules = stack.function(FUNCTION).schedules
        assert [s.input for s in schedules] == [{"boxId": box} for box in simulated.relayed]

        simulated.start_traffic()
        delivered: set[tuple[str, str]] = set()
        for tick in range(8):
            if tick == 2:
                simulated.stop_traffic()
            for schedule in schedules:
                with contextlib.suppress(FeedUnavailable):  # the next tick retries from the same cursor
                    handler(schedule.input, LocalContext(FUNCTION))
            delivered |= {(body["feed"], body["id"]) for body in bodies(receive(aws, queue))}
            if tick >= 2 and simulated.expected() <= delivered:
                break

        assert simulated.expected() <= delivered, "every event of the relayed boxes, as filtered"
        assert not delivered & simulated.withheld()
        assert len(simulated.expected()) > 60
        if fault_rate:
            assert {"throttle", "http_409", "html_502", "expired_token"} <= set(simulated.faults_served())
    finally:
        simulated.close()
