"""Each sink as its consumer meets it, for the contract suite (``test_contract.py``).

A ``Harness`` builds the sink's publisher the way the pollers do (its module's ``from_env``), with
its transport behind ``faults.Faults``, and reads what a consumer got: SNS and EventBridge through a
queue subscribed or targeted (moto), SQS from the queue itself, the webhook from a receiver that
verifies every signature with Standard Webhooks' own library. Offloaded events are read back from
the payload bucket, and every envelope is validated against the message schema.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import urllib3

from kontur_relay.domain.ports import Publisher
from kontur_relay.settings import Env
from kontur_relay.sinks import eventbridge, sns, sqs, webhook
from kontur_relay.sinks.message import PAYLOAD_SIZE_ATTRIBUTE, POINTER_CLASS
from local_stack.receiver import WebhookReceiver
from local_stack.simulators.faults import Fault
from tests.queues import validate_message
from tests.sinks.faults import Faults, FaultyClient, FaultyHttp

#: Every sink and variant the suite runs against; a new sink is done when the suite passes with it here.
SINKS = ("sns", "sns-fifo", "eventbridge", "sqs", "sqs-fifo", "sqs-compatible", "webhook")
#: Those that promise order: per group (FIFO), or per feed (the webhook, one request after another).
ORDERED = ("sns-fifo", "sqs-fifo", "webhook")
#: The queue's own limit in the SQS variant (read from the queue), below SQS's default of 1 MiB.
QUEUE_LIMIT = 300_000


@dataclass
class Received:
    """A message as the consumer got it."""

    event: dict[str, Any]
    #: The filter fields it carries beside the envelope (arrays as lists); {} where the sink has none.
    attributes: dict[str, Any]
    #: The payload-offloading pointer it came as, if it did.
    pointer: list[Any] | None = None
    #: FIFO: its message group.
    group: str | None = None


@dataclass
class Harness:
    name: str
    aws: dict[str, Any]
    faults: Faults = field(default_factory=Faults)
    sleeps: list[float] = field(default_factory=list)
    bucket: str = ""
    #: Everything received so far, in the order received.
    got: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.bucket = f"payloads-{uuid.uuid4().hex[:12]}"
        self.aws["s3"].create_bucket(Bucket=self.bucket)

    # -- what each sink defines --------------------------------------------------------------------

    #: Bytes above which the sink offloads an event.
    limit: int = 262_144

    def publisher(self) -> Publisher:
        raise NotImplementedError

    def _drain(self) -> list[Received]:
        raise NotImplementedError

    def filtered(self, policy: dict[str, Any]) -> Any:
        """A consumer that receives only what ``policy`` (an SNS filter policy) matches, where the sink
        filters; None where it does not (the consumer filters what it receives)."""
        return None

    def refuse_requests(self, times: int, *, final: bool = False) -> None:
        """The webhook's receiver answers the next ``times`` requests with an error (others refuse entries)."""
        raise NotImplementedError

    def throttle_requests(self, times: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to stop but the webhook's receiver."""

    # -- shared ------------------------------------------------------------------------------------

    def received(self) -> list[Received]:
        """Everything the consumer got so far (it keeps reading: safe from any thread)."""
        with self._lock:
            self.got.extend(self._drain())
            return list(self.got)

    def ids(self) -> list[str]:
        return [message.event["id"] for message in self.received()]

    def _tune(self, publisher: Any) -> Any:
        """No real pauses between retries: what they were is kept in ``sleeps``."""
        publisher.delivery.sleep = self.sleeps.append
        return publisher

    def resolved(self, body: Any, attributes: dict[str, Any], group: str | None = None) -> Received:
        """A body as the consumer reads it: a pointer's object fetched from the payload bucket."""
        if isinstance(body, list) and body and body[0] == POINTER_CLASS:
            where = body[1]
            assert where["s3BucketName"] == self.bucket
            stored = self.aws["s3"].get_object(Bucket=where["s3BucketName"], Key=where["s3Key"])["Body"].read()
            if PAYLOAD_SIZE_ATTRIBUTE in attributes:
                assert int(attributes[PAYLOAD_SIZE_ATTRIBUTE]) == len(stored)
            event = json.loads(stored)
            validate_message(event)
            return Received(event, attributes, body, group)
        validate_message(body)
        return Received(body, attributes, None, group)

    def _queue(self, *, fifo: bool = False, attributes: dict[str, str] | None = None) -> tuple[str, str]:
        name = f"sink-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        queue_attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        url = self.aws["sqs"].create_queue(QueueName=name, Attributes={**queue_attributes, **(attributes or {})})
        arn = self.aws["sqs"].get_queue_attributes(QueueUrl=url["QueueUrl"], AttributeNames=["QueueArn"])
        return url["QueueUrl"], arn["Attributes"]["QueueArn"]

    def _read_queue(self, url: str) -> list[dict[str, Any]]:
        taken: list[dict[str, Any]] = []
        while True:
            batch = (
                self.aws["sqs"]
                .receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
                )
                .get("Messages", [])
            )
            if not batch:
                return taken
            taken += batch
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
            self.aws["sqs"].delete_message_batch(QueueUrl=url, Entries=entries)


def message_attributes(message: dict[str, Any]) -> dict[str, Any]:
    """SNS's and SQS's message attributes as a filter sees them: arrays as lists."""
    found: dict[str, Any] = {}
    for name, value in message.get("MessageAttributes", {}).items():
        text = value["StringValue"]
        found[name] = json.loads(text) if value["DataType"] == "String.Array" else text
    return found


class QueueHarness(Harness):
    """SNS and SQS: the consumer reads a queue's messages, their bodies and attributes."""

    url = ""

    def _drain(self) -> list[Received]:
        return [
            self.resolved(json.loads(m["Body"]), message_attributes(m), m.get("Attributes", {}).get("MessageGroupId"))
            for m in self._read_queue(self.url)
        ]


class SnsHarness(QueueHarness):
    def __init__(self, name: str, aws: dict[str, Any]) -> None:
        super().__init__(name, aws)
        fifo = name.endswith("fifo")
        topic_attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        topic = f"sink-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        self.topic = aws["sns"].create_topic(Name=topic, Attributes=topic_attributes)["TopicArn"]
        self.url = self._subscribe(None)

    def _subscribe(self, policy: dict[str, Any] | None) -> str:
        url, arn = self._queue(fifo=self.topic.endswith(".fifo"))
        attributes = {"RawMessageDelivery": "true", **({"FilterPolicy": json.dumps(policy)} if policy else {})}
        self.aws["sns"].subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        return url

    def publisher(self) -> Publisher:
        built = sns.from_env(Env({"EVENTS_TOPIC_ARN": self.topic, "PAYLOAD_BUCKET": self.bucket}))
        built.client = FaultyClient(built.client, "publish_batch", self.faults)  # type: ignore[assignment]
        return self._tune(built)

    def filtered(self, policy: dict[str, Any]) -> Any:
        url = self._subscribe(policy)
        return lambda: [self.resolved(json.loads(m["Body"]), message_attributes(m)) for m in self._read_queue(url)]


class SqsHarness(QueueHarness):
    def __init__(self, name: str, aws: dict[str, Any]) -> None:
        super().__init__(name, aws)
        limited = {"MaximumMessageSize": str(QUEUE_LIMIT)}
        self.url, _ = self._queue(fifo=name.endswith("fifo"), attributes=None if name == "sqs-compatible" else limited)
        self.limit = sqs.COMPATIBLE_MAX_BYTES if name == "sqs-compatible" else QUEUE_LIMIT

    def publisher(self) -> Publisher:
        settings = {"EVENTS_QUEUE_URL": self.url, "PAYLOAD_BUCKET": self.bucket}
        if self.name == "sqs-compatible":
            # moto stands in for the other service: its own endpoint, keys of its own from a secret.
            keys = {"aws_access_key_id": "yc-key", "aws_secret_access_key": "yc-secret", "region_name": "us-east-1"}
            secret = self.aws["secretsmanager"].create_secret(
                Name=f"yc-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(keys)
            )
            settings |= {
                "EVENTS_QUEUE_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
                "EVENTS_QUEUE_CREDENTIALS_SECRET": secret["ARN"],
            }
        built = sqs.from_env(Env(settings))
        built.client = FaultyClient(built.client, "send_message_batch", self.faults)  # type: ignore[assignment]
        return self._tune(built)


class EventBridgeHarness(Harness):
    #: Everything the relay puts on the bus.
    EVERYTHING = {"source": [{"prefix": "ru.kontur."}]}

    def __init__(self, name: str, aws: dict[str, Any]) -> None:
        super().__init__(name, aws)
        self.bus = f"sink-{uuid.uuid4().hex[:12]}"
        aws["events"].create_event_bus(Name=self.bus)
        self.url = self._rule(self.EVERYTHING)

    def _rule(self, pattern: dict[str, Any]) -> str:
        url, arn = self._queue()
        rule = f"rule-{uuid.uuid4().hex[:8]}"
        self.aws["events"].put_rule(Name=rule, EventBusName=self.bus, EventPattern=json.dumps(pattern))
        self.aws["events"].put_targets(Rule=rule, EventBusName=self.bus, Targets=[{"Id": "queue", "Arn": arn}])
        return url

    def publisher(self) -> Publisher:
        built = eventbridge.from_env(Env({"EVENT_BUS_NAME": self.bus, "PAYLOAD_BUCKET": self.bucket}))
        built.client = FaultyClient(built.client, "put_events", self.faults)
        return self._tune(built)

    def _events(self, url: str) -> list[Received]:
        found = []
        for message in self._read_queue(url):
            entry = json.loads(message["Body"])
            assert entry["source"] == f"ru.kontur.{entry['detail']['attributes']['source']}"
            assert entry["detail-type"] == entry["detail"]["attributes"]["event_type"]
            found.append(self.resolved(entry["detail"]["event"], entry["detail"]["attributes"]))
        return found

    def _drain(self) -> list[Received]:
        return self._events(self.url)

    def filtered(self, policy: dict[str, Any]) -> Any:
        # A rule matches what an SNS filter policy matches, the policy put under detail.attributes.
        url = self._rule({"detail": {"attributes": policy}})
        return lambda: self._events(url)


class WebhookHarness(Harness):
    def __init__(self, name: str, aws: dict[str, Any]) -> None:
        super().__init__(name, aws)
        self.limit = webhook.MAX_BODY_BYTES
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.receiver = WebhookReceiver(self.secret).start()
        self.secret_arn = aws["secretsmanager"].create_secret(
            Name=f"webhook-{uuid.uuid4().hex[:8]}", SecretString=self.secret
        )["ARN"]
        self._read = 0

    def publisher(self) -> Publisher:
        env = {"WEBHOOK_URL": self.receiver.endpoint, "WEBHOOK_SECRET": self.secret_arn, "PAYLOAD_BUCKET": self.bucket}
        built = webhook.from_env(Env(env))
        built.http = FaultyHttp(built.http, self.faults)  # type: ignore[assignment]
        built.timeout = urllib3.Timeout(connect=1, read=1)
        return self._tune(built)

    def _drain(self) -> list[Received]:
        events = self.receiver.events()
        fresh, self._read = events[self._read :], len(events)
        return [self.resolved(event, {}) for event in fresh]

    def refuse_requests(self, times: int, *, final: bool = False) -> None:
        fault = Fault.server_error(400) if final else Fault.server_error(503)
        self.receiver.faults.add(fault, times=times)

    def throttle_requests(self, times: int) -> None:
        self.receiver.faults.add(Fault.throttle(retry_after=1), times=times)

    def slow_requests(self, times: int, seconds: float) -> None:
        self.receiver.faults.add(Fault.slow(seconds), times=times)

    def close(self) -> None:
        self.receiver.stop()


def harness(name: str, aws: dict[str, Any]) -> Harness:
    if name.startswith("sns"):
        return SnsHarness(name, aws)
    if name.startswith("sqs"):
        return SqsHarness(name, aws)
    if name == "eventbridge":
        return EventBridgeHarness(name, aws)
    return WebhookHarness(name, aws)
