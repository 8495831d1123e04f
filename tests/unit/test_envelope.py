"""The message contract: every envelope the relay builds is valid against schemas/message.schema.json,
keeps the feed's event verbatim, and carries SNS attributes a filter policy can use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.feeds.extern.source import EXTERN_EVENT_TYPE, ExternSource
from kontur_relay.sinks.message import MAX_OWN_ATTRIBUTES, deduplication_id
from kontur_relay.sinks.message import message as sink_message

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "message.schema.json"
validate = fastjsonschema.compile(json.loads(SCHEMA_PATH.read_text()))

SOURCE = "https://extern-api.kontur.ru/v1/events"
#: The keys Extern documents for an event; anything else is a key Kontur added later.
KNOWN_KEYS = {
    "id",
    "account-id",
    "docflow-id",
    "docflow-type",
    "new-state",
    "event-date-time",
    "inn",
    "kpp",
    "docflow-link",
    "related-docflow-id",
    "related-document-id",
}
#: Attribute names the relay sets for Extern events.
EXTERN_ATTRIBUTES = {"source", "feed", "event_type", "account_id", "docflow_type", "new_state", "inn", "kpp"}

# Any text a JSON string can carry, including what SNS cannot: lone surrogates, U+FFFE and U+FFFF.
any_text = st.text(
    st.characters()
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
    | st.sampled_from(["\ufffe", "\uffff", "\x00", "\x1f"]),
    max_size=20,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=8,
)
guids = st.uuids().map(str)
urns = st.from_regex(r"urn:(docflow|transaction):[a-z0-9-]{1,30}", fullmatch=True)
# Kontur's format: seven fractional digits and Z; offsets and fewer digits are RFC 3339 too.
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
rfc3339_times = st.one_of(
    moments.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"),
    moments.map(lambda t: t.isoformat(timespec="seconds")),
    moments.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
)
extern_events = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.fixed_dictionaries(
        {"id": st.from_regex(r"[0-9a-f]{1,6}_[0-9a-f]{1,6}", fullmatch=True)},
        optional={
            "account-id": guids,
            "docflow-id": guids,
            "docflow-type": urns,
            "new-state": urns,
            "event-date-time": rfc3339_times | any_text,
            "inn": st.from_regex(r"\d{10}|\d{12}", fullmatch=True),
            "kpp": st.none() | st.from_regex(r"\d{9}", fullmatch=True),
            "docflow-link": st.fixed_dictionaries({"href": st.just("https://extern.test/v1/x/docflows/y")}),
            "related-docflow-id": st.none() | guids,
            "related-document-id": st.none() | guids,
        },
    ),
    st.dictionaries(any_text.filter(lambda key: key not in KNOWN_KEYS), json_values, max_size=4),
)


def build(item: dict[str, Any]) -> Any:
    """The envelope of an Extern event as the relay builds it from the feed's JSON."""
    return sink_message(Feed(id="extern", kind="extern", source_uri=SOURCE), ExternSource._event(item, trace_id=None))


@settings(max_examples=300, deadline=None)
@given(item=extern_events)
def test_every_extern_envelope_is_valid_and_keeps_the_event_verbatim(item: dict[str, Any]) -> None:
    message = build(item)
    envelope = json.loads(message.body)

    validate(envelope)
    assert envelope["data"] == item, "the event must reach consumers exactly as Extern sent it"
    assert (envelope["id"], envelope["source"], envelope["feed"]) == (item["id"], SOURCE, "extern")
    assert envelope["type"] == EXTERN_EVENT_TYPE
    assert envelope.get("subject") == item.get("docflow-id")
    time = item.get("event-date-time")
    if time is not None and envelope.get("time") is None:
        # Not RFC 3339: left out of the envelope, still in data.
        with pytest.raises(fastjsonschema.JsonSchemaException):
            validate({**envelope, "time": time})
    else:
        assert envelope.get("time") == time
    # SNS carries only UTF-8 text without U+FFFE/U+FFFF; the body must encode and size as sent.
    assert not {"\ufffe", "\uffff"} & set(message.body)
    message.body.encode()


@settings(max_examples=200, deadline=None)
@given(item=extern_events)
def test_every_extern_envelope_has_attributes_a_filter_policy_can_use(item: dict[str, Any]) -> None:
    attributes = build(item).attributes

    assert set(attributes) <= EXTERN_ATTRIBUTES
    assert len(attributes) <= MAX_OWN_ATTRIBUTES
    assert {name: attributes[name] for name in ("source", "feed", "event_type")} == {
        "source": "extern",
        "feed": "extern",
        "event_type": EXTERN_EVENT_TYPE,
    }
    assert all(isinstance(value, str) and value for value in attributes.values())
    if item.get("kpp") is None:
        assert "kpp" not in attributes, "a null kpp is left out: SNS rejects empty attribute values"
    else:
        assert attributes["kpp"] == item["kpp"]
    for name, key in {"inn": "inn", "account_id": "account-id", "docflow_type": "docflow-type"}.items():
        assert attributes.get(name) == item.get(key)


def test_more_than_nine_attributes_are_refused_naming_the_event() -> None:
    # source, feed and event_type are always there: seven more make ten, and SNS's tenth is kept for
    # ExtendedPayloadSize, so that any event can still be offloaded.
    event = FeedEvent(id="e1", type=EXTERN_EVENT_TYPE, data={"id": "e1"}, attributes={f"a{n}": "v" for n in range(7)})

    with pytest.raises(ValueError, match="10 message attributes for event e1: SNS and SQS allow 10, one of them kept"):
        sink_message(Feed(id="extern", kind="extern", source_uri=SOURCE), event)


def test_empty_attributes_do_not_count_and_arrays_are_sets() -> None:
    attributes: dict[str, str | list[str] | None] = {f"a{n}": "v" for n in range(6)}
    attributes |= {"a7": None, "a8": [], "a5": ["b", "a", "b"]}
    event = FeedEvent(id="e1", type=EXTERN_EVENT_TYPE, data={"id": "e1"}, attributes=attributes)

    message = sink_message(Feed(id="extern", kind="extern", source_uri=SOURCE), event)

    assert len(message.attributes) == MAX_OWN_ATTRIBUTES
    assert message.attributes["a5"] == ["a", "b"]
    assert "a7" not in message.attributes
    assert "a8" not in message.attributes


def test_a_diadoc_envelope_carries_the_raw_protobuf() -> None:
    event = FeedEvent(
        id="9f0c",
        type="ru.kontur.diadoc.message",
        data={"EventId": "9f0c", "IndexKey": "0123", "Message": {"MessageId": "msg-1"}},
        time="2026-11-22T10:00:00Z",
        subject="msg-1",
        ordering_key="msg-1",
        extensions={"protobuf": "CgQ5ZjBj"},
    )

    message = sink_message(
        Feed(id="diadoc-box-1", kind="diadoc", source_uri="https://diadoc-api.kontur.ru/V8/GetNewEvents?boxId=box-1"),
        event,
    )

    envelope = json.loads(message.body)
    validate(envelope)
    assert envelope["protobuf"] == "CgQ5ZjBj"
    assert message.group_id == "msg-1"


def test_the_deduplication_id_is_stable_per_feed_and_event() -> None:
    event = FeedEvent(id="1_a", type=EXTERN_EVENT_TYPE, data={"id": "1_a"})

    first = sink_message(Feed(id="extern", kind="extern", source_uri=SOURCE), event)
    again = sink_message(Feed(id="extern", kind="extern", source_uri=SOURCE), event)
    other_feed = sink_message(Feed(id="extern-2", kind="extern", source_uri=SOURCE), event)

    assert first.deduplication_id == again.deduplication_id == deduplication_id("extern", "1_a")
    assert other_feed.deduplication_id != first.deduplication_id
    assert len(first.deduplication_id) <= 128, "SNS FIFO's limit"
    assert first.group_id == "extern", "no docflow: the feed's own order"


VALID = {
    "specversion": "1.0",
    "id": "1_a",
    "source": SOURCE,
    "type": EXTERN_EVENT_TYPE,
    "datacontenttype": "application/json",
    "feed": "extern",
    "time": "2026-11-22T10:00:00.1234567Z",
    "data": {"id": "1_a"},
}


def without(key: str) -> dict[str, Any]:
    return {name: value for name, value in VALID.items() if name != key}


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(without("id"), id="no-id"),
        pytest.param(without("source"), id="no-source"),
        pytest.param(without("feed"), id="no-feed"),
        pytest.param(without("data"), id="no-data"),
        pytest.param(without("specversion"), id="no-specversion"),
        pytest.param({**VALID, "id": ""}, id="empty-id"),
        pytest.param({**VALID, "specversion": "0.3"}, id="old-specversion"),
        pytest.param({**VALID, "type": "ru.kontur.extern.something-else"}, id="unknown-type"),
        pytest.param({**VALID, "datacontenttype": "application/protobuf"}, id="not-json"),
        pytest.param({**VALID, "time": "22.11.2026 10:00"}, id="time-not-rfc3339"),
        pytest.param({**VALID, "time": "2026-11-22T10:00:00"}, id="time-without-offset"),
        pytest.param({**VALID, "data": {"docflow-id": "no id"}}, id="extern-data-without-id"),
        pytest.param({**VALID, "data": "1_a"}, id="extern-data-not-an-object"),
        pytest.param({**VALID, "type": "ru.kontur.diadoc.message", "data": {"EventId": "x"}}, id="diadoc-no-protobuf"),
        pytest.param(
            {**VALID, "type": "ru.kontur.diadoc.patch", "protobuf": "AA==", "data": {"IndexKey": "1"}},
            id="diadoc-data-without-event-id",
        ),
    ],
)
def test_the_schema_rejects_a_broken_envelope(broken: dict[str, Any]) -> None:
    validate(VALID)
    with pytest.raises(fastjsonschema.JsonSchemaException):
        validate(broken)
