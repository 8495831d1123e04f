"""SnsPublisher against moto's SNS, observed where a subscriber would see it: an SQS queue.

Faults SNS will not produce on demand (entries reported Failed, throttling) are injected by thin
wrappers around the real moto client; everything else is moto's SNS and SQS through their APIs.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError

from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.model import AttributeValue, Feed, FeedEvent
from kontur_relay.feeds.extern.source import EXTERN_EVENT_TYPE
from kontur_relay.sinks import delivery
from kontur_relay.sinks.message import Message, deduplication_id
from kontur_relay.sinks.message import message as sink_message
from kontur_relay.sinks.sns import MAX_PAYLOAD_BYTES, SnsPublisher

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

pytestmark = pytest.mark.slow

FEED = "extern"
SOURCE = "https://extern-api.test/v1/events"


def message(
    index: int,
    *,
    pad: int = 0,
    ordering_key: str | None = None,
    attributes: Mapping[str, AttributeValue | None] | None = None,
) -> Message:
    event_id = f"ev{index:04d}"
    event = FeedEvent(
        id=event_id,
        type=EXTERN_EVENT_TYPE,
        data={"id": event_id, "docflow-id": ordering_key, "pad": "x" * pad},
        time="2026-11-22T10:00:00.1234567Z",
        subject=ordering_key,
        attributes=attributes or {},
        ordering_key=ordering_key,
    )
    return sink_message(Feed(id=FEED, kind="extern", source_uri=SOURCE), event)


def message_of_size(index: int, size: int) -> Message:
    """A message SNS counts as exactly ``size`` bytes (body and attributes)."""
    bare = message(index)
    padded = message(index, pad=size - bare.size)
    assert padded.size == size
    return padded


def request_bytes(entries: list[dict[str, Any]]) -> int:
    """What SNS counts of a PublishBatch request, from the request itself: bodies and every
    attribute's name, data type and value."""
    total = 0
    for entry in entries:
        total += len(entry["Message"].encode())
        for name, value in entry.get("MessageAttributes", {}).items():
            total += len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
    return total


@dataclass
class Delivered:
    body: str
    #: name -> (data type, value), as the subscriber reads it.
    attributes: dict[str, tuple[str, str]]
    group_id: str | None = None
    deduplication_id: str | None = None


@dataclass
class Subscription:
    """A topic with one SQS queue subscribed, the way a consumer of the relay sets it up."""

    sqs: Any
    topic_arn: str
    queue_url: str
    raw: bool

    def receive(self, *, expected: int = 0) -> list[Delivered]:
        """Everything delivered so far, in the order SQS hands it out; each message deleted once read."""
        delivered: list[Delivered] = []
        empty_receives = 0
        while empty_receives < (2 if len(delivered) >= expected else 10):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
                WaitTimeSeconds=0 if len(delivered) >= expected else 1,
            )
            messages = response.get("Messages", [])
            empty_receives = 0 if messages else empty_receives + 1
            for received in messages:
                delivered.append(self._delivered(received))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=received["ReceiptHandle"])
        return delivered

    def _delivered(self, received: dict[str, Any]) -> Delivered:
        system = received.get("Attributes", {})
        if self.raw:
            body = received["Body"]
            attributes = {
                name: (value["DataType"], value["StringValue"])
                for name, value in received.get("MessageAttributes", {}).items()
            }
        else:
            notification = json.loads(received["Body"])
            body = notification["Message"]
            attributes = {
                name: (value["Type"], value["Value"])
                for name, value in notification.get("MessageAttributes", {}).items()
            }
        return Delivered(body, attributes, system.get("MessageGroupId"), system.get("MessageDeduplicationId"))


def subscribe(aws: dict[str, Any], *, raw: bool = True, fifo: bool = False) -> Subscription:
    suffix = ".fifo" if fifo else ""
    name = f"relay-{uuid.uuid4().hex[:10]}"
    topic_attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    topic_arn = aws["sns"].create_topic(Name=name + suffix, Attributes=topic_attributes)["TopicArn"]
    queue_url = aws["sqs"].create_queue(QueueName=name + suffix, Attributes={"FifoQueue": "true"} if fifo else {})[
        "QueueUrl"
    ]
    queue_arn = aws["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    aws["sns"].subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true" if raw else "false"},
    )
    return Subscription(aws["sqs"], topic_arn, queue_url, raw)


@dataclass
class Recording:
    """The real client, with each PublishBatch request kept for inspection."""

    client: Any
    calls: list[list[dict[str, Any]]] = field(default_factory=list)

    def publish_batch(self, **request: Any) -> Any:
        self.calls.append(list(request["PublishBatchRequestEntries"]))
        return self.client.publish_batch(**request)


@dataclass
class FailingEntries:
    """The real client, except that entries ``fail`` picks are reported Failed and not sent: what SNS
    answers for entries it could not take (SenderFault false: its own trouble; true: the entry's)."""

    client: Any
    fail: Any  # (attempt number, entry) -> bool
    sender_fault: bool
    code: str = "InternalError"
    attempts: int = 0

    def publish_batch(self, *, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]) -> Any:
        self.attempts += 1
        failed = [entry for entry in PublishBatchRequestEntries if self.fail(self.attempts, entry)]
        passed = [entry for entry in PublishBatchRequestEntries if entry not in failed]
        response = (
            self.client.publish_batch(TopicArn=TopicArn, PublishBatchRequestEntries=passed)
            if passed
            else {"Successful": [], "Failed": []}
        )
        response["Failed"] = [
            *response.get("Failed", []),
            *(
                {"Id": entry["Id"], "Code": self.code, "Message": "injected", "SenderFault": self.sender_fault}
                for entry in failed
            ),
        ]
        return response


@dataclass
class Throttled:
    """The real client, except that the calls numbered in ``calls`` raise what boto3 raises once its
    own retries of a throttled request are spent."""

    client: Any
    calls: set[int]
    count: int = 0

    def publish_batch(self, **request: Any) -> Any:
        self.count += 1
        if self.count in self.calls:
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}},
                "PublishBatch",
            )
        return self.client.publish_batch(**request)


def wrapped(client: Recording | FailingEntries | Throttled) -> SNSClient:
    """A wrapper stands in for the client: it answers the one call the publisher makes."""
    return cast("SNSClient", client)


def event_id_of(body: str) -> str:
    return str(json.loads(body)["id"])


# -- delivery and attributes ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "sns-envelope"])
def test_every_message_arrives_once_with_its_attributes(aws, raw: bool) -> None:
    topic = subscribe(aws, raw=raw)
    messages = [
        message(
            i,
            attributes={
                "inn": "7700000000",
                "kpp": None,
                "tags": ["b", "a", "b"],
                "new-state": "urn:transaction:отчёт",
            },
        )
        for i in range(23)
    ]

    SnsPublisher(aws["sns"], topic.topic_arn).publish_messages(messages)

    delivered = topic.receive(expected=len(messages))
    assert sorted(d.body for d in delivered) == sorted(m.body for m in messages)
    for item in delivered:
        assert json.loads(item.attributes.pop("tags")[1]) == ["a", "b"]
        assert item.attributes == {
            "source": ("String", "extern"),
            "feed": ("String", FEED),
            "event_type": ("String", EXTERN_EVENT_TYPE),
            "inn": ("String", "7700000000"),
            "new-state": ("String", "urn:transaction:отчёт"),
        }, "kpp was null: a filter policy must not see it at all"


def test_string_array_attributes_are_typed_so_filter_policies_match_their_elements(aws) -> None:
    topic = subscribe(aws, raw=True)

    SnsPublisher(aws["sns"], topic.topic_arn).publish_messages(
        [message(0, attributes={"forms": ["1151001", "0710099"]})]
    )

    (item,) = topic.receive(expected=1)
    data_type, value = item.attributes["forms"]
    assert (data_type, json.loads(value)) == ("String.Array", ["0710099", "1151001"])


# -- batching -------------------------------------------------------------------------------------


def test_a_page_goes_out_in_calls_of_at_most_10_messages(aws) -> None:
    topic = subscribe(aws)
    recording = Recording(aws["sns"])
    messages = [message(i) for i in range(25)]

    SnsPublisher(wrapped(recording), topic.topic_arn).publish_messages(messages)

    assert sorted(len(call) for call in recording.calls) == [5, 10, 10]
    assert sorted(event_id_of(d.body) for d in topic.receive(expected=25)) == [m.event_id for m in messages]


@pytest.mark.parametrize(
    ("sizes", "calls"),
    [
        # Two halves of 256 KiB fill one call exactly; one byte more needs a second.
        ([MAX_PAYLOAD_BYTES // 2, MAX_PAYLOAD_BYTES // 2], [2]),
        ([MAX_PAYLOAD_BYTES // 2, MAX_PAYLOAD_BYTES // 2 + 1], [1, 1]),
        ([100_000] * 5, [2, 2, 1]),
        ([MAX_PAYLOAD_BYTES, 1_000, 1_000], [1, 2]),
    ],
    ids=["two-halves", "one-byte-over", "100k-each", "one-at-the-limit"],
)
def test_a_call_never_carries_more_than_256_kib(aws, sizes: list[int], calls: list[int]) -> None:
    topic = subscribe(aws)
    recording = Recording(aws["sns"])
    messages = [message_of_size(i, size) for i, size in enumerate(sizes)]

    SnsPublisher(wrapped(recording), topic.topic_arn, parallel_batches=1).publish_messages(messages)

    assert [len(call) for call in recording.calls] == calls
    assert all(request_bytes(call) <= MAX_PAYLOAD_BYTES for call in recording.calls)
    # What the publisher measured is what SNS counts, to the byte.
    assert request_bytes(recording.calls[0]) == sum(sizes[: calls[0]])
    assert sorted(event_id_of(d.body) for d in topic.receive(expected=len(sizes))) == [m.event_id for m in messages]


def test_without_a_payload_bucket_an_oversized_event_fails_the_page_before_anything_of_it_is_published(aws) -> None:
    """Without a bucket to offload to (the template always gives one: tests/adapters/test_offload.py),
    nothing of the page is sent: the cursor cannot move past the event, and every tick would
    otherwise republish its neighbours. The error names the event, its size and the missing setting."""
    topic = subscribe(aws)
    recording = Recording(aws["sns"])
    messages = [message(0), message_of_size(1, MAX_PAYLOAD_BYTES + 1), message(2)]

    with pytest.raises(PublishError, match=f"event ev0001 is {MAX_PAYLOAD_BYTES + 1} bytes"):
        SnsPublisher(wrapped(recording), topic.topic_arn).publish_messages(messages)

    assert recording.calls == []
    assert topic.receive() == []


# -- FIFO -----------------------------------------------------------------------------------------


def test_a_fifo_topic_keeps_each_docflow_in_order_and_a_republished_page_keeps_its_deduplication_ids(aws) -> None:
    topic = subscribe(aws, fifo=True)
    recording = Recording(aws["sns"])
    messages = [message(i, ordering_key=f"docflow-{i % 3}") for i in range(30)]
    publisher = SnsPublisher(wrapped(recording), topic.topic_arn)

    publisher.publish_messages(messages)

    # One call after another, in the page's order: a FIFO topic orders what it is given.
    assert [entry["Message"] for call in recording.calls for entry in call] == [m.body for m in messages]
    delivered = topic.receive(expected=30)
    by_group: dict[str | None, list[str]] = defaultdict(list)
    for item in delivered:
        event_id = event_id_of(item.body)
        assert item.deduplication_id == deduplication_id(FEED, event_id)
        by_group[item.group_id].append(event_id)
    assert by_group == {
        f"docflow-{g}": [m.event_id for m in messages if m.group_id == f"docflow-{g}"] for g in range(3)
    }

    # The same page again, as after a crash before the cursor write: the same deduplication ids, which
    # SNS FIFO drops within its 5-minute window (moto does not model that window, so it delivers them).
    first = {event_id_of(item.body): item.deduplication_id for item in delivered}
    publisher.publish_messages(messages)
    again = {event_id_of(item.body): item.deduplication_id for item in topic.receive(expected=30)}
    assert again == first


# -- entries SNS reports as Failed ----------------------------------------------------------------


def test_entries_sns_failed_are_retried_with_growing_backoff_until_accepted(aws, monkeypatch) -> None:
    monkeypatch.setattr(delivery.random, "uniform", lambda low, high: high)  # the backoff's ceiling
    topic = subscribe(aws)
    flaky_ids = {"ev0003", "ev0007"}
    client = FailingEntries(
        aws["sns"], lambda attempt, entry: attempt <= 3 and event_id_of(entry["Message"]) in flaky_ids, False
    )
    sleeps: list[float] = []
    messages = [message(i) for i in range(10)]

    SnsPublisher(wrapped(client), topic.topic_arn, base_delay=0.2, sleep=sleeps.append).publish_messages(messages)

    assert client.attempts == 4
    assert sleeps == [0.4, 0.8, 1.6]
    assert sorted(event_id_of(d.body) for d in topic.receive(expected=10)) == [m.event_id for m in messages]


def test_an_entry_that_keeps_failing_ends_in_a_publish_error_naming_it(aws) -> None:
    topic = subscribe(aws)
    client = FailingEntries(aws["sns"], lambda attempt, entry: event_id_of(entry["Message"]) == "ev0003", False)
    sleeps: list[float] = []
    messages = [message(i) for i in range(10)]

    with pytest.raises(PublishError, match=r"did not accept 1 of 10 messages after 5 attempts \(first: event ev0003\)"):
        SnsPublisher(wrapped(client), topic.topic_arn, attempts=5, sleep=sleeps.append).publish_messages(messages)

    assert client.attempts == 5
    assert len(sleeps) == 4, "no pause after the last attempt"
    # The others were accepted once; the page is republished on the next tick (at least once).
    assert sorted(event_id_of(d.body) for d in topic.receive(expected=9)) == [
        m.event_id for m in messages if m.event_id != "ev0003"
    ]


def test_an_entry_sns_rejects_as_the_senders_fault_is_not_retried(aws) -> None:
    topic = subscribe(aws)
    client = FailingEntries(
        aws["sns"], lambda attempt, entry: event_id_of(entry["Message"]) == "ev0003", True, code="InvalidParameter"
    )
    sleeps: list[float] = []

    with pytest.raises(PublishError, match=r"SNS rejected event ev0003: InvalidParameter: injected \(1 of 10"):
        SnsPublisher(wrapped(client), topic.topic_arn, sleep=sleeps.append).publish_messages(
            [message(i) for i in range(10)]
        )

    assert (client.attempts, sleeps) == (1, [])
    assert len(topic.receive(expected=9)) == 9


# -- errors the client raises ---------------------------------------------------------------------


def test_throttling_that_outlasts_boto3s_retries_is_a_publish_error(aws) -> None:
    topic = subscribe(aws)

    with pytest.raises(PublishError, match=r"Throttling.*Rate exceeded") as raised:
        SnsPublisher(wrapped(Throttled(aws["sns"], {1})), topic.topic_arn).publish_messages(
            [message(i) for i in range(3)]
        )

    assert isinstance(raised.value.__cause__, ClientError)
    assert topic.receive() == []


def test_one_throttled_batch_among_parallel_ones_fails_the_page(aws) -> None:
    topic = subscribe(aws)
    client = Throttled(aws["sns"], {2})

    with pytest.raises(PublishError, match="Throttling"):
        SnsPublisher(wrapped(client), topic.topic_arn, parallel_batches=4).publish_messages(
            [message(i) for i in range(35)]
        )

    # Every other batch ran to its end before the error was raised; none was abandoned mid-call.
    assert client.count == 4
    assert len(topic.receive(expected=25)) == 25


# -- what SNS refuses in an attribute ----------------------------------------------------------------

#: The characters SNS takes in a message attribute's value (XML's), as the real service checks them.
_SENDABLE = re.compile("^[\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")


@dataclass
class StrictAttributes:
    """The real client, refusing what SNS refuses and moto lets through: an attribute value with a
    character outside XML's (a control character, U+FFFE) or one that is not text at all (a lone
    surrogate, which cannot even be encoded as UTF-8)."""

    client: Any

    def publish_batch(self, **request: Any) -> Any:
        for entry in request["PublishBatchRequestEntries"]:
            for name, value in entry.get("MessageAttributes", {}).items():
                if not _SENDABLE.match(value["StringValue"]):
                    why = f"attribute {name}: invalid characters"
                    raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": why}}, "PublishBatch")
        return self.client.publish_batch(**request)


def test_an_attribute_with_what_sns_refuses_is_cleaned_and_the_body_keeps_the_event_as_it_came(aws) -> None:
    topic = subscribe(aws)
    odd = {"id": "0_1", "inn": "7700\x07000000\ud800", "docflow-type": "urn:docflow:fns534-report\x00\ufffe"}
    event = FeedEvent(
        id="0_1",
        type=EXTERN_EVENT_TYPE,
        data=odd,
        attributes={"inn": odd["inn"], "docflow_type": odd["docflow-type"], "forms": ["\x01", "1151001\x1f"]},
    )

    SnsPublisher(cast("SNSClient", StrictAttributes(aws["sns"])), topic.topic_arn).publish(
        Feed(id=FEED, kind="extern", source_uri=SOURCE), [event]
    )

    (item,) = topic.receive(expected=1)
    assert json.loads(item.body)["data"] == odd, "the event exactly as it came, its odd characters escaped"
    assert item.attributes["inn"] == ("String", "7700000000")
    assert item.attributes["docflow_type"] == ("String", "urn:docflow:fns534-report")
    assert item.attributes["forms"] == ("String.Array", '["1151001"]'), "an element left empty is dropped"


def test_an_attribute_left_empty_by_cleaning_is_left_out() -> None:
    event = FeedEvent(id="0_1", type=EXTERN_EVENT_TYPE, data={}, attributes={"kpp": "\x00\ud800", "forms": ["\x02"]})
    built = sink_message(Feed(id=FEED, kind="extern", source_uri=SOURCE), event)
    assert set(built.attributes) == {"source", "feed", "event_type"}
