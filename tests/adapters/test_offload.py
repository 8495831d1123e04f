"""Events over SNS's 256 KiB, offloaded to the stack's payload bucket and published as pointers:
moto's S3, SNS and SQS through their APIs, the bucket and topic provisioned from template.yaml."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.feeds.diadoc.kind import source_uri
from kontur_relay.settings import Env
from kontur_relay.sinks import sns
from kontur_relay.sinks.message import POINTER_CLASS
from kontur_relay.sinks.message import message as sink_message
from kontur_relay.sinks.offload import PayloadOffloader
from kontur_relay.sinks.sns import MAX_PAYLOAD_BYTES, SnsPublisher
from local_stack.template import Stack
from tests.queues import receive, subscribe

pytestmark = pytest.mark.slow

FEED = Feed(
    id="diadoc:5bc8fbbcbde540998164d8399f767c45@diadoc.ru",
    kind="diadoc",
    source_uri=source_uri("https://diadoc-api.kontur.ru", "5bc8fbbcbde540998164d8399f767c45@diadoc.ru"),
)
#: Nine attributes of the event's own (with source, feed, event_type): the most an event may have.
ATTRIBUTES = {
    "box_id": "5bc8fbbcbde540998164d8399f767c45@diadoc.ru",
    "message_type": "Letter",
    "document_direction": "Inbound",
    "type_named_id": ["UniversalTransferDocument", "Nonformalized"],
    "counteragent_box_id": "c8c2a1550ef74229bedcdb676c015aa9@diadoc.ru",
    "department_id": "a6eb8c9e-bd69-4e29-976d-4330f1446bea",
}


def event(index: int, pad: int = 0) -> FeedEvent:
    event_id = f"9f0c-{index:03d}"
    return FeedEvent(
        id=event_id,
        type="ru.kontur.diadoc.message",
        # Cyrillic: SNS counts bytes, not characters, and the stored payload must be byte-identical.
        data={
            "EventId": event_id,
            "Message": {"MessageId": f"msg-{index}", "FromTitle": "Ромашка"},
            "pad": "ж" * pad,
        },
        subject=f"msg-{index}",
        attributes=ATTRIBUTES,
        ordering_key=f"msg-{index}",
        extensions={"protobuf": base64.b64encode(event_id.encode()).decode()},
    )


def page() -> list[FeedEvent]:
    """A page whose middle event is about 600 KB as UTF-8, between ordinary ones."""
    return [event(0), event(1), event(2, pad=300_000), event(3), event(4)]


def publisher(topic: str, bucket: str | None = None) -> SnsPublisher:
    """The SNS sink as the pollers build it from their environment."""
    return sns.from_env(Env({"EVENTS_TOPIC_ARN": topic, **({"PAYLOAD_BUCKET": bucket} if bucket else {})}))


def objects(aws: dict[str, Any], bucket: str) -> list[str]:
    return [o["Key"] for o in aws["s3"].list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_an_oversized_event_arrives_as_a_pointer_to_its_exact_bytes_and_its_neighbours_arrive_too(stack: Stack, aws):
    bucket, topic = stack.physical["PayloadBucket"], stack.physical["EventsTopic"]
    queue = subscribe(aws, topic)
    filtered = subscribe(aws, topic, filter_policy={"message_type": ["Letter"], "type_named_id": ["Nonformalized"]})
    events = page()
    big = sink_message(FEED, events[2])
    assert big.size > MAX_PAYLOAD_BYTES

    publisher(topic, bucket).publish(FEED, events)

    for url in (queue, filtered):
        messages = receive(aws, url)  # pointers resolved from S3 as a consumer would
        assert sorted(json.loads(m["Body"])["id"] for m in messages) == sorted(e.id for e in events)
        (pointed,) = [m for m in messages if "Pointer" in m]
        assert pointed["Body"].encode() == big.body.encode(), "the payload is the message, byte for byte"
        kind, where = json.loads(pointed["Pointer"])
        assert kind == POINTER_CLASS
        assert where["s3BucketName"] == bucket
        attributes = pointed["MessageAttributes"]
        assert attributes["ExtendedPayloadSize"] == {"DataType": "Number", "StringValue": str(len(big.body.encode()))}
        assert len(attributes) == 10
        assert attributes["message_type"]["StringValue"] == "Letter", "filter attributes stay on the pointer"
    assert len(objects(aws, bucket)) == 1


def test_a_republished_page_overwrites_its_payload_instead_of_adding_one(stack: Stack, aws):
    bucket, topic = stack.physical["PayloadBucket"], stack.physical["EventsTopic"]
    queue = subscribe(aws, topic)
    sink = publisher(topic, bucket)

    sink.publish(FEED, page())
    first = objects(aws, bucket)
    sink.publish(FEED, page())  # a crash before the cursor write: the same page once more

    assert objects(aws, bucket) == first
    messages = receive(aws, queue)
    pointers = [m["Pointer"] for m in messages if "Pointer" in m]
    assert len(pointers) == 2
    assert pointers[0] == pointers[1], "the same key: a duplicate a consumer drops by (source, id)"


def test_a_payload_that_cannot_be_stored_fails_the_page_before_anything_is_published(stack: Stack, aws):
    topic = stack.physical["EventsTopic"]
    queue = subscribe(aws, topic)
    missing = f"{stack.name}-no-such-bucket"
    publisher = SnsPublisher(aws["sns"], topic, offloader=PayloadOffloader(aws["s3"], missing))

    with pytest.raises(
        PublishError, match=f"event 9f0c-002 is .* bytes, over SNS's 262144, and writing it to s3://{missing}"
    ):
        publisher.publish(FEED, page())

    assert receive(aws, queue) == [], "no neighbour went ahead of the page, no pointer to nothing"
    with pytest.raises(ClientError):
        aws["s3"].head_bucket(Bucket=missing)


def test_without_a_payload_bucket_an_oversized_event_is_still_refused_whole(stack: Stack, aws):
    topic = stack.physical["EventsTopic"]
    queue = subscribe(aws, topic)
    with pytest.raises(PublishError, match="no payload bucket \\(PAYLOAD_BUCKET\\) is configured"):
        publisher(topic).publish(FEED, page())
    assert receive(aws, queue) == []
