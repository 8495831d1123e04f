"""The Diadoc poller end to end: boxes registered in the cursor table (DynamoDB Local) as the admin
API registers them -> the Diadoc (and identity) simulators over HTTP -> the real handler with the
template's environment and a secret in moto, ticked by its one schedule -> SNS (moto) -> SQS queues
subscribed to the topic. Every message that reaches a queue is validated against the schema.

A box's trouble (Diadoc's answers, its access, its settings) fails no tick: it is recorded on the
box, counted, and every other box goes on. Between ticks, ``later`` lets the time pass until each
box's next poll (the poller's own intervals are a minute and more)."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.domain.errors import ConfigurationError, PublishError
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.boxes import box_id as canonical_box_id
from kontur_relay.feeds.diadoc.boxes import feed_id, filters_key
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.cursor import FROM_OLDEST, Position
from kontur_relay.feeds.diadoc.events import MESSAGE_EVENT_TYPE, PATCH_EVENT_TYPE
from kontur_relay.feeds.diadoc.ticks import to_rfc3339
from local_stack.context import LocalContext
from local_stack.scenarios import SimulatedDiadoc, SimulationOptions
from local_stack.simulators.base import Exchange
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.diadoc_events import (
    FUTURE_ATTACHMENT_TYPE,
    FUTURE_EVENT_FIELD,
    FUTURE_MESSAGE_FIELD,
    HEAD_DEPARTMENT,
    ticks,
)
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import ROOT, Stack, provision
from tests.conftest import load_handler
from tests.metric_contract import violations
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


def tick(handler: Any, **context: Any) -> dict[str, Any]:
    """One run of the poller, as its one schedule invokes it: no box named."""
    result: dict[str, Any] = handler({}, LocalContext(FUNCTION, **context))
    assert result["kind"] == "diadoc"
    return result


# -- the box registry, as the admin API writes it ----------------------------------------------------


def registry(stack: Stack) -> DynamoBoxRegistry:
    return DynamoBoxRegistry(boto3.resource("dynamodb").Table(stack.physical["CursorsTable"]))


def register(stack: Stack, box: str, **settings: Any) -> str:
    """Register a box (or change its settings) as PUT /diadoc/boxes/{boxId} will: the settings over
    the deployment's defaults, canonical; due at once. Raises ConfigurationError as the API refuses."""
    environment = stack.function(FUNCTION).environment
    defaults = {"start": environment["DIADOC_START"], "limit": environment["DIADOC_PAGE_SIZE"]}
    feed = box_feed({"boxId": canonical_box_id(box), **settings}, defaults)
    _store(stack, feed.feed_id, feed.stored(), filters_key(feed))
    return feed.feed_id


def register_by_hand(stack: Stack, box: str, settings: dict[str, Any]) -> str:
    """Settings written into the table without the admin API: stored as they are, however wrong."""
    feed = feed_id(box)
    _store(stack, feed, settings, "")
    return feed


def _store(stack: Stack, feed: str, settings: dict[str, Any], key: str) -> None:
    boxes = registry(stack)
    found = boxes.get(feed)
    version = found.cursor.version if found is not None else 0
    boxes.register(feed, settings, key, by="test", expected_version=version, restart=False, first_poll_at=0)


def later(stack: Stack) -> None:
    """The time passes until every registered box's next poll (its interval is a minute at least)."""
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    for found in registry(stack).registered():
        table.update_item(
            Key={"feed": found.feed},
            UpdateExpression="SET next_poll_at = :past",
            ConditionExpression="attribute_exists(box_settings)",
            ExpressionAttributeValues={":past": 0},
        )


def registered(stack: Stack, box: str) -> RegisteredBox:
    found = registry(stack).get(feed_id(box))
    assert found is not None
    return found


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
    """The metrics a run printed (EMF), each checked to be per feed kind: none has a feed dimension."""
    printed = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    for found in printed:
        for directive in found["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                assert "feed" not in dimensions, f"a metric per feed: {found}"
                assert "kind" in dimensions, f"a metric of no feed kind: {found}"
    return printed


def metric(printed: dict[str, Any], name: str) -> float | None:
    value = printed.get(name)
    return value[0] if isinstance(value, list) else value


def queried(diadoc: Diadoc, name: str) -> list[str | None]:
    """The value of a query parameter in each GetNewEvents request, as the simulator decoded it."""
    return [call.query.get(name) for call in polls(diadoc.sim)]


def assert_failed(stack: Stack, result: dict[str, Any], box: str, error: str, before: Any = None) -> str:
    """The tick went on past the box's failure: counted, recorded on the box as ``<class>: <message>``,
    and the box's cursor where it was. Returns the recorded message."""
    assert result["failed"] == 1
    assert result["outcome"] in ("caught_up", "out_of_time")
    found = registered(stack, box)
    assert found.last_error is not None
    assert found.last_error.startswith(f"{error}: "), found.last_error
    if before is not None:
        after = cursors(stack).load(feed_id(box))
        assert (after.position, after.version) == (before.position, before.version), "the cursor moved"
    return found.last_error.removeprefix(f"{error}: ")


def polls(sim: DiadocSimulator) -> list[Exchange]:
    """GetNewEvents from a box's cursor: the polls these tests are about. Reconciliation's reads of a
    box's window (from ``timestampFromTicks`` to ``timestampToTicks``) follow a turn that read the box
    to its end, and have tests of their own (tests/adapters/test_diadoc_reconciliation.py)."""
    return [call for call in sim.calls(EVENTS) if not _window(call)]


def _window(call: Exchange) -> bool:
    return "timestampFromTicks" in call.query and "timestampToTicks" in call.query


# -- the whole path ---------------------------------------------------------------------------------


def test_every_event_of_the_box_reaches_the_queue_as_diadoc_sent_it(stack, diadoc, aws, monkeypatch, capsys):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 120)
    future = sim.add_future_event(box)
    sim.generate(box, 129)
    expected = sim.event_ids(box)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    # Pages of 100 (the default is 500), so that the run pages through the box.
    assert register(stack, box, limit=100) == f"diadoc:{box}"
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = tick(handler)

    assert (result["outcome"], result["events"], len(polls(sim))) == ("caught_up", 250, 3)
    assert (result["boxes"], result["due"], result["polled"], result["with_events"], result["failed"]) == (
        1,
        1,
        1,
        1,
        0,
    )
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

    # Pages of 100 (the default limit), each after the IndexKey before the last page's final event,
    # which holds + / = and arrived intact, so requests percent-encoded it. That event comes again
    # first, and is dropped: a page is one larger for it.
    keys, events = sim.index_keys(box), sim.event_ids(box)
    assert queried(diadoc, "limit") == ["100", "101", "101"]
    assert queried(diadoc, "afterIndexKey") == [None, keys[98], keys[198]]
    assert all(c in keys[98] + keys[198] for c in "+/=")
    state = cursors(stack).load(f"diadoc:{box}")
    assert state.position == f"{keys[-2]}~seen:{events[-1]}"
    status = cursors(stack).status(f"diadoc:{box}")
    assert status is not None
    assert (status.events_relayed, status.backlog, status.backlog_capped, status.last_error) == (250, 0, False, None)
    printed = metrics_printed(capsys.readouterr().out)
    assert any(metric(m, "Backlog") == 0 and m.get("kind") == "diadoc" for m in printed)
    assert any(metric(m, "EventsPublished") == 250 and metric(m, "BoxesPolled") == 1 for m in printed)
    assert violations(printed) == [], "every metric as the alarms and the dashboard read it"

    # A tick before the box is due again asks Diadoc nothing.
    idle = tick(handler)
    assert (idle["boxes"], idle["due"], idle["polled"], idle["events"]) == (1, 0, 0, 0)
    assert len(polls(sim)) == 3

    # Once it is due, the tick relays exactly what arrived since, from the cursor.
    new = sim.generate(box, 7)
    later(stack)
    again = tick(handler)
    assert (again["outcome"], again["events"], again["polled"]) == ("caught_up", 7, 1)
    assert ids(receive(aws, queue)) == new
    assert queried(diadoc, "afterIndexKey")[-1] == keys[-2]


def test_a_message_carries_its_documents_as_filterable_attributes(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 150)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    utd = subscribe(aws, stack.physical["EventsTopic"], filter_policy={"type_named_id": ["UniversalTransferDocument"]})
    register(stack, box)

    assert tick(poller(stack, diadoc, aws, monkeypatch).handler)["events"] == 150

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


def test_each_box_is_a_feed_of_its_own_with_its_registered_settings(stack, diadoc, aws, monkeypatch):
    sim, (first, second) = diadoc.sim, diadoc.boxes
    sim.generate(first, 30)
    sim.generate(second, 40)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    second_only = subscribe(aws, stack.physical["EventsTopic"], filter_policy={"box_id": [second]})
    register(stack, first)
    register(stack, second, messageType="Letter", documentDirection=["Inbound", "Outbound"], limit=7)
    assert registered(stack, second).settings == {
        "messageType": "Letter",
        "documentDirection": "Inbound,Outbound",
        "limit": 7,
        "start": "oldest",
    }
    module = poller(stack, diadoc, aws, monkeypatch)

    result = tick(module.handler)

    wanted = sim.event_ids(second, messageType="Letter", documentDirection="Inbound,Outbound")
    assert 0 < len(wanted) < 40
    assert (result["boxes"], result["polled"], result["with_events"]) == (2, 2, 2)
    assert result["events"] == 30 + len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(sim.event_ids(first) + wanted)
    assert sorted(ids(receive(aws, second_only))) == sorted(wanted)
    first_calls = [c for c in polls(sim) if c.query["boxId"] == first]
    assert {(c.query.get("messageType"), c.query["limit"]) for c in first_calls} == {(None, "500")}
    second_calls = [c for c in polls(sim) if c.query["boxId"] == second]
    # Pages after the first are one larger: they start with the event the page before ended on.
    assert {(c.query["messageType"], c.query["documentDirection"], c.query["limit"]) for c in second_calls} == {
        ("Letter", "Inbound,Outbound", "7"),
        ("Letter", "Inbound,Outbound", "8"),
    }
    assert len(second_calls) == len(wanted) // 7 + 1, "pages until one is shorter than the limit"
    last = sim.event_ids(first)[-1]
    assert cursors(stack).load(f"diadoc:{first}").position == f"{sim.index_keys(first)[-2]}~seen:{last}"
    assert cursors(stack).load(f"diadoc:{second}").position is not None
    # The container keeps its relays and its token: a later tick of both boxes signs in no more.
    later(stack)
    assert tick(module.handler)["events"] == 0
    assert len(polls(sim)) == len(first_calls) + len(second_calls) + 2
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
    register(stack, box, limit=10, **{name: value})
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = tick(handler)

    wanted = sim.event_ids(box, **{name: value})
    if name == "orderBy":
        wanted = list(reversed(sim.event_ids(box)))
    assert 0 < len(wanted) <= 90
    if name != "orderBy":
        assert len(wanted) < 90, "the filter leaves some events out"
    assert result["events"] == len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(wanted)
    pages = len(polls(sim))
    assert queried(diadoc, name) == [value] * pages
    assert pages == len(wanted) // 10 + 1


def test_a_department_user_reads_its_department_and_is_stopped_outside_it(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 80)  # events from before 2017-03-15 and drafts have no department
    mine, other = sim.boxes[box].departments[1], sim.boxes[box].departments[2]
    login, password = f"dept-{uuid.uuid4().hex[:6]}@example.ru", secrets.token_urlsafe(10)
    sim.add_user(login, password, {box: [mine, HEAD_DEPARTMENT]})
    credentials = {**diadoc.legacy, "login": login, "password": password}
    register(stack, box, departmentId=mine)
    queue = subscribe(aws, stack.physical["EventsTopic"])

    result = tick(poller(stack, diadoc, aws, monkeypatch, credentials).handler)

    wanted = sim.event_ids(box, departmentId=mine)
    assert 0 < len(wanted) < 80
    assert (result["events"], result["failed"]) == (len(wanted), 0)
    assert sorted(ids(receive(aws, queue))) == sorted(wanted)

    # The whole box, or a department the user cannot see: 403, and the feed stops.
    for outside in ({}, {"departmentId": other}):
        fresh = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}"), aws)
        register(fresh, box, **outside)
        handler = poller(fresh, diadoc, aws, monkeypatch, credentials).handler
        before = cursors(fresh).load(feed_id(box))
        message = assert_failed(fresh, tick(handler), box, "FeedStopped", before)
        assert "answered 403" in message
        status = cursors(fresh).status(f"diadoc:{box}")
        assert status is not None
        assert status.stopped_reason == f"FeedStopped: {message}"
        assert tick(handler)["stopped"] == 1
    assert receive(aws, queue) == []


# -- where a new feed starts ------------------------------------------------------------------------


def test_by_default_a_new_feed_starts_from_the_oldest_event(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 12)
    register(stack, diadoc.box)
    assert registered(stack, diadoc.box).settings == {"start": "oldest", "limit": 500}
    result = tick(poller(stack, diadoc, aws, monkeypatch).handler)
    assert result["events"] == 12
    assert diadoc.sim.calls("/V2/GetLastEvent") == []


def test_now_starts_after_the_newest_event_and_the_cursor_then_stays_an_index_key(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 40)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, box, start="now")
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    first = tick(handler)

    assert (first["outcome"], first["events"], first["polled"]) == ("caught_up", 0, 1)
    # After the newest event; reconciliation never reads back before it.
    start = Position.parse(cursors(stack).load(f"diadoc:{box}").position)
    assert (start.after, start.seen, start.floor) == (sim.index_keys(box)[-1], (), sim.entries(box)[-1].ticks + 1)
    new = sim.generate(box, 5)
    later(stack)
    assert tick(handler)["events"] == 5
    assert ids(receive(aws, queue)) == new
    assert len(sim.calls("/V2/GetLastEvent")) == 1, "the start is resolved once, on the first read"


def test_now_on_an_empty_box_settles_on_its_first_event(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, box, start="now")
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    assert tick(handler)["events"] == 0
    assert [c.status for c in sim.calls("/V2/GetLastEvent")] == [204]
    assert cursors(stack).load(f"diadoc:{box}").position == FROM_OLDEST

    # What arrives before the next poll is not skipped by a second "now".
    arrived = sim.generate(box, 9)
    later(stack)
    assert tick(handler)["events"] == 9
    assert ids(receive(aws, queue)) == arrived
    assert len(sim.calls("/V2/GetLastEvent")) == 1
    assert cursors(stack).load(f"diadoc:{box}").position == f"{sim.index_keys(box)[-2]}~seen:{arrived[-1]}"


def test_a_point_in_time_starts_at_the_first_event_from_then(stack, diadoc, aws, monkeypatch):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 60)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, box, start="2017-03-15T12:00:00+03:00")

    result = tick(poller(stack, diadoc, aws, monkeypatch).handler)

    since = str(ticks(datetime(2017, 3, 15, 9, 0, tzinfo=UTC)))
    assert registered(stack, box).settings == {"timestampFromTicks": since, "limit": 500}
    wanted = sim.event_ids(box, timestampFromTicks=since)
    assert 0 < len(wanted) < 60
    assert result["events"] == len(wanted)
    assert sorted(ids(receive(aws, queue))) == sorted(wanted)
    assert set(queried(diadoc, "timestampFromTicks")) == {since}


# -- limit and versions ----------------------------------------------------------------------------


def test_the_documented_maximum_limit_is_accepted_and_more_is_refused(stack, diadoc, aws, monkeypatch, capsys):
    first, second = diadoc.boxes
    diadoc.sim.generate(first, 520)
    diadoc.sim.generate(second, 5)
    register(stack, first, limit=500)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = tick(handler)
    assert (result["events"], len(polls(diadoc.sim))) == (520, 2)
    assert queried(diadoc, "limit") == ["500", "500"]

    # What the admin API refuses to store...
    with pytest.raises(ConfigurationError, match="limit must be between 1 and 500"):
        register(stack, second, limit=501)
    with pytest.raises(ConfigurationError, match="unknown Diadoc feed settings afterEventId"):
        register(stack, second, afterEventId="x")
    # ...stored by hand fails that box's polls, each recorded on it, and reads nothing.
    capsys.readouterr()
    calls = len(polls(diadoc.sim))
    register_by_hand(stack, second, {"limit": 501})
    assert "limit must be between 1 and 500" in assert_failed(stack, tick(handler), second, "ConfigurationError")
    register_by_hand(stack, second, {"afterEventId": "x"})
    later(stack)
    outcome = tick(handler)
    assert "unknown Diadoc feed settings afterEventId" in assert_failed(stack, outcome, second, "ConfigurationError")
    assert (outcome["polled"], outcome["events"]) == (2, 0), "the other box is polled all the same"
    assert len(polls(diadoc.sim)) == calls + 1
    assert cursors(stack).load(feed_id(second)).position is None
    errors = [m for m in metrics_printed(capsys.readouterr().out) if m.get("error") == "configuration"]
    assert [m["kind"] for m in errors] == ["diadoc"] * 2


def test_the_deprecated_v7_method_is_read_alike(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 25)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, diadoc.box)
    result = tick(poller(stack, diadoc, aws, monkeypatch, DIADOC_API_VERSION="V7").handler)
    assert result["events"] == 25
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box))
    assert [c.path for c in diadoc.sim.calls("/V") if "timestampToTicks" not in c.query] == [
        "/V3/Authenticate",
        "/V7/GetNewEvents",
    ]


#: Remaining seconds as the run asks for them: its lease, the box's turn, then after each page; the
#: fourth page is not read.
OUT_OF_TIME_AFTER_THREE_PAGES = [300, 300, 300, 10]


def test_a_run_out_of_time_keeps_what_it_relayed_and_the_next_run_goes_on(stack, aws, monkeypatch, diadoc):
    diadoc.sim.count_cap = 50
    diadoc.sim.generate(diadoc.box, 120)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, diadoc.box, limit=20)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = tick(handler, seconds_left=OUT_OF_TIME_AFTER_THREE_PAGES)

    assert (result["outcome"], result["events"], result["failed"]) == ("out_of_time", 60, 0)
    assert len(receive(aws, queue)) == 60
    event = diadoc.sim.event_ids(diadoc.box)[59]
    assert cursors(stack).load(feed_id(diadoc.box)).position == f"{diadoc.sim.index_keys(diadoc.box)[58]}~seen:{event}"
    rest = tick(handler)
    assert (rest["outcome"], rest["events"]) == ("caught_up", 60)
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box)[60:])


def test_a_capped_total_count_is_kept_as_a_lower_bound(stack, aws, monkeypatch, diadoc, capsys):
    diadoc.sim.count_cap = 50
    diadoc.sim.generate(diadoc.box, 120)
    register(stack, diadoc.box, limit=20)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = tick(handler, seconds_left=OUT_OF_TIME_AFTER_THREE_PAGES)

    assert (result["outcome"], result["events"]) == ("out_of_time", 60)
    assert any(metric(m, "Backlog") == 29 for m in metrics_printed(capsys.readouterr().out))
    status = cursors(stack).status(f"diadoc:{diadoc.box}")
    assert status is not None
    # "At least 50" minus the page of 21 (20 new, and the event the page before ended on, read again).
    assert (status.backlog, status.backlog_capped) == (29, True)


def test_a_box_polled_again_waits_longer_while_idle_and_comes_back_with_events(stack, aws, monkeypatch, diadoc):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 3)
    register(stack, box)
    handler = poller(
        stack, diadoc, aws, monkeypatch, DIADOC_MIN_POLL_SECONDS="60", DIADOC_MAX_POLL_SECONDS="150"
    ).handler

    def poll() -> float:
        """One tick with the box due; the seconds until its next poll."""
        later(stack)
        assert tick(handler)["polled"] == 1
        found = registered(stack, box)
        assert found.last_poll_at is not None
        waits = found.next_poll_at - datetime.fromisoformat(found.last_poll_at.replace("Z", "+00:00")).timestamp()
        assert 0.9 * found.interval - 2 <= waits <= found.interval + 2, "a little jitter, never more than the interval"
        return found.interval

    assert poll() == 60  # events: the shortest interval
    assert [poll(), poll(), poll()] == [120, 150, 150]  # nothing: twice as long each time, up to the longest
    sim.generate(box, 1)
    assert poll() == 60
    assert registered(stack, box).last_events_at is not None


# -- errors as the method documents them: the box's, not the run's -----------------------------------


def test_a_cursor_diadoc_refuses_is_recorded_on_the_box_and_stays(stack, diadoc, aws, monkeypatch, capsys):
    first, second = diadoc.boxes
    diadoc.sim.generate(first, 10)
    diadoc.sim.generate(second, 4)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    feed = register(stack, first)
    register(stack, second)
    store = cursors(stack)
    bad = "not+a/key="
    store.set_cursor(feed, bad, expected_version=registered(stack, first).cursor.version, by="operator")
    before = store.load(feed)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    result = tick(handler)

    message = assert_failed(stack, result, first, "FeedRejected", before)
    assert "Diadoc answered 400 to GET /V8/GetNewEvents: cursor must have valid value" in message
    assert "error=Http.BadRequest" in message
    assert [c.query.get("afterIndexKey") for c in polls(diadoc.sim) if c.query["boxId"] == first] == [bad]
    assert store.load(feed).position == bad
    status = store.status(feed)
    assert status is not None
    assert status.last_error == f"FeedRejected: {message}"
    assert status.stopped_reason is None
    errors = [m for m in metrics_printed(capsys.readouterr().out) if m.get("error") == "feed_rejected"]
    assert [m["kind"] for m in errors] == ["diadoc"], "one error, counted by kind and error, not by box"
    # The other box was relayed all the same, and the refused one is polled again on later ticks.
    assert (result["polled"], result["events"]) == (2, 4)
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(second))
    later(stack)
    assert tick(handler)["failed"] == 1
    assert [c.query.get("afterIndexKey") for c in polls(diadoc.sim) if c.query["boxId"] == first] == [bad] * 2


@pytest.mark.parametrize("cause", ["not_paid", "no_box_access"])
def test_402_and_403_stop_the_box_until_an_operator_resumes_it(stack, diadoc, aws, monkeypatch, cause):
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 15)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    if cause == "not_paid":
        sim.set_paid(box, False)
    else:
        sim.set_access(diadoc.legacy["login"], box, False)
    feed = register(stack, box)
    before = cursors(stack).load(feed)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    message = assert_failed(stack, tick(handler), box, "FeedStopped", before)

    status, code = (402, "Billing.ServiceIsNotPaid") if cause == "not_paid" else (403, "Authorization.BoxAccessDenied")
    assert f"Diadoc answered {status}" in message
    assert f"error={code}" in message
    state = cursors(stack).load(feed)
    assert state.stopped_reason == f"FeedStopped: {message}"
    assert receive(aws, queue) == []
    calls = len(polls(sim))

    # Later ticks skip the box without asking Diadoc, even once the cause is gone.
    sim.set_paid(box, True)
    sim.set_access(diadoc.legacy["login"], box, None)
    later(stack)
    skipped = tick(handler)
    assert (skipped["boxes"], skipped["stopped"], skipped["due"], skipped["polled"]) == (1, 1, 0, 0)
    assert len(polls(sim)) == calls

    cursors(stack).set_cursor(feed, state.position, expected_version=state.version, by="operator@example")
    later(stack)
    resumed = tick(handler)
    assert (resumed["outcome"], resumed["events"], resumed["stopped"], resumed["failed"]) == ("caught_up", 15, 0, 0)
    assert sorted(ids(receive(aws, queue))) == sorted(sim.event_ids(box))


def test_a_401_gets_one_fresh_token(stack, diadoc, aws, monkeypatch):
    register(stack, diadoc.box)
    diadoc.sim.generate(diadoc.box, 10)
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    assert tick(handler)["events"] == 10
    diadoc.sim.generate(diadoc.box, 3)

    diadoc.sim.faults.add(Fault.expired_token(), prefix=EVENTS)
    later(stack)
    assert tick(handler)["events"] == 3
    assert diadoc.sim.authentications == 2
    assert [c.status for c in polls(diadoc.sim)] == [200, 401, 200]

    diadoc.sim.faults.add(Fault.expired_token(), prefix=EVENTS, times=2)
    before = cursors(stack).load(feed_id(diadoc.box))
    later(stack)
    message = assert_failed(stack, tick(handler), diadoc.box, "FeedAuthError", before)
    assert "Diadoc answered 401" in message
    assert diadoc.sim.authentications == 3, "one renewal per poll, not a loop"


def test_refused_login_and_password_are_recorded_on_the_box_as_auth_errors(stack, diadoc, aws, monkeypatch):
    register(stack, diadoc.box)
    diadoc.sim.generate(diadoc.box, 3)
    handler = poller(stack, diadoc, aws, monkeypatch, {**diadoc.legacy, "password": "wrong"}).handler
    message = assert_failed(stack, tick(handler), diadoc.box, "FeedAuthError", cursors(stack).load(feed_id(diadoc.box)))
    assert "error=Authorization.InvalidCredentials" in message
    assert "wrong" not in message
    assert polls(diadoc.sim) == []
    assert registered(stack, diadoc.box).cursor.stopped_reason is None


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
    register(stack, box)
    handler = poller(stack, diadoc, aws, monkeypatch, credentials).handler

    assert tick(handler)["events"] == 20
    sim.faults.add(Fault.expired_token(), prefix=EVENTS)
    sim.generate(box, 2)
    later(stack)
    assert tick(handler)["events"] == 2
    assert diadoc.identity.issued["password"] == 2
    assert {c.headers["authorization"].split()[0] for c in polls(sim)} == {"Bearer"}
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
    register(stack, box, limit=20)
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    sim.faults.add(fault, prefix=EVENTS, times=2)
    assert tick(handler)["events"] == 30
    assert [c.status for c in polls(sim)] == [fault.status, fault.status, 200, 200]
    assert sorted(ids(receive(aws, queue))) == sorted(sim.event_ids(box))

    sim.generate(box, 5)
    sim.faults.add(fault, prefix=EVENTS, times=10)
    before = cursors(stack).load(f"diadoc:{box}")
    later(stack)
    message = assert_failed(stack, tick(handler), box, "FeedUnavailable", before)
    assert f"Diadoc answered {fault.status}" in message
    if fault.body is None:
        assert "error=Http." in message, "X-Diadoc-ErrorCode is reported"
    else:
        assert "an HTML page (502)" in message
    assert receive(aws, queue) == []


@pytest.mark.parametrize(
    "case",
    [(b"\xff\xff\xff\xff", "application/x-protobuf"), (b"<html><title>Login</title></html>", "text/html")],
    ids=["not-protobuf", "html-with-200"],
)
def test_a_page_that_is_not_a_box_event_list_is_recorded_on_the_box(stack, diadoc, aws, monkeypatch, case):
    body, content_type = case
    diadoc.sim.generate(diadoc.box, 5)
    diadoc.sim.faults.add(Fault("malformed", status=200, body=body, content_type=content_type), prefix=EVENTS)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, diadoc.box)
    before = cursors(stack).load(feed_id(diadoc.box))
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    message = assert_failed(stack, tick(handler), diadoc.box, "MalformedPage", before)
    assert "instead of protobuf" in message or "is not a BoxEventList" in message
    assert cursors(stack).load(f"diadoc:{diadoc.box}").position is None
    assert receive(aws, queue) == []
    # The next poll reads the same page, answered properly: not one event lost.
    later(stack)
    assert tick(handler)["events"] == 5
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box))


def test_a_topic_that_refuses_events_fails_the_run_and_every_box_is_read_again(stack, diadoc, aws, monkeypatch):
    """SNS is the deployment's, not a box's: its failure fails the run (for the failure destination),
    and no box's cursor moves past what was not published."""
    first, second = diadoc.boxes
    diadoc.sim.generate(first, 6)
    diadoc.sim.generate(second, 8)
    register(stack, first)
    register(stack, second)
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    topic = stack.physical["EventsTopic"]
    aws["sns"].delete_topic(TopicArn=topic)

    with pytest.raises(PublishError):
        tick(handler)

    for box in diadoc.boxes:
        assert cursors(stack).load(feed_id(box)).position is None
        assert registered(stack, box).last_error is None, "no box is to blame"
    assert aws["sns"].create_topic(Name=topic.rsplit(":", 1)[1])["TopicArn"] == topic
    queue = subscribe(aws, topic)
    result = tick(handler)  # no box waits: the failed run scheduled none
    assert (result["polled"], result["events"], result["failed"]) == (2, 14, 0)
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(first) + diadoc.sim.event_ids(second))


def test_a_connection_reset_mid_body_is_retried_then_unavailable(stack, diadoc, aws, monkeypatch):
    diadoc.sim.generate(diadoc.box, 5)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, diadoc.box)
    handler = poller(stack, diadoc, aws, monkeypatch).handler
    diadoc.sim.faults.add(Fault.reset_mid_body(), prefix=EVENTS, times=3)
    before = cursors(stack).load(feed_id(diadoc.box))
    message = assert_failed(stack, tick(handler), diadoc.box, "FeedUnavailable", before)
    assert "Diadoc broke off its answer to GET /V8/GetNewEvents on every try" in message
    diadoc.sim.faults.add(Fault.reset_mid_body(), prefix=EVENTS, times=2)
    later(stack)
    assert tick(handler)["events"] == 5
    assert sorted(ids(receive(aws, queue))) == sorted(diadoc.sim.event_ids(diadoc.box))


# -- FIFO -------------------------------------------------------------------------------------------


def test_a_fifo_topic_keeps_each_messages_events_in_order(diadoc, aws, monkeypatch):
    stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters={"FifoTopic": "true"}), aws)
    sim, box = diadoc.sim, diadoc.box
    sim.generate(box, 80)
    queue = subscribe(aws, stack.physical["EventsTopic"])
    register(stack, box)

    result = tick(poller(stack, diadoc, aws, monkeypatch).handler)

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


# -- the template's schedule -----------------------------------------------------------------------


def test_the_sam_local_event_is_the_schedules_input_and_polls_every_registered_box(stack, diadoc, aws, monkeypatch):
    event = json.loads(Path(ROOT / "events" / "diadoc_poller.json").read_text())
    assert event == {}
    assert [s.input for s in stack.function(FUNCTION).schedules] == [event]
    for box in diadoc.boxes:
        diadoc.sim.generate(box, 4)
        register(stack, box)
    result = poller(stack, diadoc, aws, monkeypatch).handler(event, LocalContext(FUNCTION))
    assert (result["boxes"], result["polled"], result["events"]) == (2, 2, 8)


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
def test_the_local_stacks_diadoc_is_relayed_through_the_registered_boxes_and_the_one_schedule(
    aws, monkeypatch, scheme, fault_rate
):
    options = SimulationOptions(seed=7, backlog=60, traffic_interval=0.05, fault_rate=fault_rate, token_lifetime=300)
    simulated = SimulatedDiadoc(options, scheme=scheme)
    try:
        parameters = {"DiadocApiUrl": simulated.diadoc.url}
        stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters=parameters), aws)
        queue = subscribe(aws, stack.physical["EventsTopic"])
        for box, filters in simulated.relayed.items():
            register(stack, box, **filters)
        handler = load_handler(
            stack.function(FUNCTION),
            monkeypatch,
            DIADOC_CREDENTIALS_SECRET=secret(aws, simulated.credentials),
            HTTP_BACKOFF_SECONDS="0.01",
        ).handler
        (schedule,) = stack.function(FUNCTION).schedules
        assert schedule.input == {}

        simulated.start_traffic()
        delivered: set[tuple[str, str]] = set()
        for round_ in range(8):
            if round_ == 2:
                simulated.stop_traffic()
            # A box whose poll failed (a fault outlasting the retries) is polled from the same cursor later.
            result = handler(schedule.input, LocalContext(FUNCTION))
            assert (result["boxes"], result["polled"]) == (2, 2)
            delivered |= {(body["feed"], body["id"]) for body in bodies(receive(aws, queue))}
            if round_ >= 2 and simulated.served() <= delivered:
                break
            later(stack)

        # What Diadoc serves late is reconciliation's (test_diadoc_reconciliation), not this test's.
        assert simulated.served() <= delivered, "every event of the relayed boxes, as filtered"
        assert not delivered & simulated.withheld()
        assert len(simulated.expected()) > 60
        if fault_rate:
            assert {"throttle", "http_409", "html_502", "expired_token"} <= set(simulated.faults_served())
    finally:
        simulated.close()
