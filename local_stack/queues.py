"""Demo SQS queues that take the relay's events, and the consumer that drains them.

A queue is subscribed to the topic (SNS), targeted by a rule on the bus (EventBridge), or is the
sink's own queue (SQS); the webhook's receiver hands its events to a queue without a URL. Each queue
is read by a thread that records every message (the CloudEvents envelope inside the SNS notification
or the EventBridge event, and the filter fields beside it) and deletes it, so the live view can show
what arrives and the summary can check that every generated event did.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError


@dataclass(frozen=True)
class Received:
    queue: str
    feed: str
    id: str
    type: str
    subject: str | None
    attributes: dict[str, str]
    at: float


@dataclass
class DemoQueue:
    """A queue subscribed to a topic or targeted by a rule, with or without a filter policy."""

    name: str
    #: The short name the view shows: ``all``, ``extern-filtered``.
    label: str
    #: Empty for the webhook receiver's record: nothing to drain, the receiver hands events over.
    url: str
    arn: str
    #: The topic or bus it takes events from; empty for the sink's own queue and the receiver.
    source_arn: str
    filter_policy: dict[str, Any] | None
    subscription_arn: str = ""
    received: Counter[tuple[str, str]] = field(default_factory=Counter)
    recent: deque[Received] = field(default_factory=lambda: deque(maxlen=50))
    #: Messages whose body was not a relay envelope (should never happen; shown in the summary).
    unreadable: int = 0
    #: Messages the filter policy should have kept out (checked for exact string values only).
    outside_filter: int = 0
    #: Receive or delete errors (the queue was unreachable for a moment); the consumer keeps going.
    errors: int = 0
    last_error: str | None = None

    @property
    def messages(self) -> int:
        return sum(self.received.values())

    def counts(self, feeds: Callable[[str], bool]) -> dict[tuple[str, str], int]:
        """How often each (feed, event id) of the feeds ``feeds`` accepts arrived."""
        return {key: count for key, count in list(self.received.items()) if feeds(key[0])}

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in list(self.received.values()))


def matches(policy: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    """An SNS filter policy of exact string values, evaluated locally; other operators count as a match."""
    for name, allowed in policy.items():
        exact = [value for value in allowed if isinstance(value, str)]
        if len(exact) != len(allowed):
            continue
        value = attributes.get(name)
        # A String.Array attribute matches when any of its values does.
        values = json.loads(value) if value and value.startswith("[") else [value]
        if not set(exact) & set(values):
            return False
    return True


def create_queue(sqs: Any, name: str, *, fifo: bool, service: str, source_arn: str) -> tuple[str, str]:
    """A queue (URL, ARN) that ``service`` (``sns``, ``events``) may send to from ``source_arn``:
    what a real account needs and moto ignores."""
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    statement = {
        "Effect": "Allow",
        "Principal": {"Service": f"{service}.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": source_arn}},
    }
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    return url, arn


def create_demo_queues(
    sns: Any,
    sqs: Any,
    topic_arn: str,
    prefix: str,
    filters: Iterable[tuple[str, dict[str, Any]]],
) -> list[DemoQueue]:
    """One queue per ``(label, filter policy)`` and one with no filter (``<prefix>-all``), each
    subscribed to ``topic_arn``; FIFO queues for a FIFO topic."""
    fifo = topic_arn.endswith(".fifo")
    queues = []
    for label, policy in [("all", None), *filters]:
        name = f"{prefix}-{label}" + (".fifo" if fifo else "")
        url, arn = create_queue(sqs, name, fifo=fifo, service="sns", source_arn=topic_arn)
        subscription_attributes = {"FilterPolicy": json.dumps(policy)} if policy else {}
        subscription = sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes=subscription_attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        queues.append(DemoQueue(name, label, url, arn, topic_arn, policy, subscription))
    return queues


def delete_demo_queues(sns: Any, sqs: Any, queues: Iterable[DemoQueue]) -> None:
    """Unsubscribe and delete: used where the queues were made in a real account for one run."""
    for queue in queues:
        if queue.subscription_arn:
            sns.unsubscribe(SubscriptionArn=queue.subscription_arn)
        sqs.delete_queue(QueueUrl=queue.url)


def parse(queue: str, body: str | dict[str, Any], at: float) -> Received | None:
    """The relay message inside an SNS notification or an EventBridge event, or delivered raw (the
    sink's own queue, the webhook's events); None when it is none of them."""
    try:
        outer = json.loads(body) if isinstance(body, str) else body
        if isinstance(outer, dict) and outer.get("Type") == "Notification":
            envelope = json.loads(outer["Message"])
            attributes = {
                name: str(value.get("Value")) for name, value in (outer.get("MessageAttributes") or {}).items()
            }
        elif isinstance(outer, dict) and "detail-type" in outer:
            envelope = outer["detail"]["event"]
            attributes = {
                name: value if isinstance(value, str) else json.dumps(value)
                for name, value in outer["detail"]["attributes"].items()
            }
        else:
            envelope, attributes = outer, {}
        return Received(
            queue=queue,
            feed=str(envelope["feed"]),
            id=str(envelope["id"]),
            type=str(envelope["type"]),
            subject=envelope.get("subject"),
            attributes=attributes,
            at=at,
        )
    except (ValueError, KeyError, TypeError):
        return None


class QueueConsumer:
    """Drains demo queues in background threads, one per queue."""

    def __init__(self, sqs: Any, queues: Iterable[DemoQueue]) -> None:
        self.sqs = sqs
        self.queues = list(queues)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: When the last message arrived on any queue: the catch-up phase waits for quiet.
        self.last_message_at = time.monotonic()

    def start(self) -> None:
        for queue in self.queues:
            if not queue.url:
                continue
            thread = threading.Thread(target=self._drain, args=(queue,), name=f"consume-{queue.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def settle(self, *, quiet: float, limit: float) -> None:
        """Wait until no message arrived for ``quiet`` seconds, or ``limit`` seconds passed."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and time.monotonic() - self.last_message_at < quiet:
            self._stop.wait(0.1)

    def latest(self, count: int) -> list[Received]:
        with self._lock:
            merged = [message for queue in self.queues for message in queue.recent]
        return sorted(merged, key=lambda message: message.at)[-count:]

    def take(self, queue: DemoQueue, bodies: Iterable[str | dict[str, Any]]) -> None:
        """Record what arrived on ``queue``: each message's body, or each event the receiver took."""
        now = time.time()
        with self._lock:
            for body in bodies:
                received = parse(queue.label, body, now)
                if received is None:
                    queue.unreadable += 1
                    continue
                queue.received[(received.feed, received.id)] += 1
                if queue.filter_policy and not matches(queue.filter_policy, received.attributes):
                    queue.outside_filter += 1
                queue.recent.append(received)
            self.last_message_at = time.monotonic()

    def _drain(self, queue: DemoQueue) -> None:
        while not self._stop.is_set():
            try:
                answer = self.sqs.receive_message(
                    QueueUrl=queue.url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    MessageAttributeNames=["All"],
                )
            except (BotoCoreError, ClientError) as error:
                queue.errors += 1
                queue.last_error = str(error)
                self._stop.wait(1.0)
                continue
            messages = answer.get("Messages", [])
            if not messages:
                continue
            self.take(queue, [message["Body"] for message in messages])
            try:
                self.sqs.delete_message_batch(
                    QueueUrl=queue.url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
                )
            except (BotoCoreError, ClientError) as error:
                # An undeleted message comes back after its visibility timeout and shows as a
                # duplicate in the summary; the error is counted and shown beside it.
                queue.errors += 1
                queue.last_error = str(error)
