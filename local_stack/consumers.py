"""What consumes the relay's events on the local stack, for the sink the template's Sink parameter
chose (``make run SINK=...``): demo queues subscribed to the topic, unfiltered and with each feed's
example filter (SNS); the same as rules on the bus, the filter put under ``detail.attributes``
(EventBridge); the stack's own queue (SQS); a receiver that verifies every request's signature and,
with ``--webhook-faults``, fails or slows down (the webhook). Each is a ``DemoQueue`` of one
``QueueConsumer``, so the view and the check count every sink alike.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from local_stack.cli import Options
from local_stack.queues import DemoQueue, QueueConsumer, create_demo_queues, create_queue, delete_demo_queues
from local_stack.receiver import RECEIVER_FAULTS, WebhookReceiver, describe
from local_stack.runtime import FeedRun
from local_stack.template import Stack

#: A rule matching every event the relay puts on a bus.
EVERYTHING = {"source": [{"prefix": "ru.kontur."}]}


def start_receiver(
    options: Options, parameters: dict[str, str], resources: ExitStack, out: Callable[[str], None]
) -> WebhookReceiver | None:
    """The webhook sink's receiver, before the stack is provisioned: its URL is the WebhookUrl
    parameter (the signing secret is known only once the stack made it)."""
    if parameters.get("Sink") != "webhook":
        return None
    receiver = WebhookReceiver().start()
    resources.callback(lambda: out(describe(receiver)))
    resources.callback(receiver.stop)
    if options.webhook_faults:
        receiver.faults.randomly(options.webhook_faults, seed=options.simulation.seed, faults=RECEIVER_FAULTS)
    parameters.setdefault("WebhookUrl", receiver.endpoint)
    return receiver


def start_consumer(
    options: Options,
    stack: Stack,
    runs: Sequence[FeedRun],
    clients: dict[str, Any],
    resources: ExitStack,
    *,
    receiver: WebhookReceiver | None,
) -> QueueConsumer | None:
    """The sink's demo consumer, draining; None when none is wanted or the sink is not the stack's
    to read (with --aws real, only SNS gets queues of the run's own; a queue or receiver there is the
    integrator's)."""
    wanted = options.demo_queues if options.demo_queues is not None else options.aws == "local"
    sink, environment = stack.sink()
    if not wanted or (options.aws == "real" and sink != "sns"):
        return None
    # In a real account the queues are this run's own, and deleted at its end.
    prefix = f"{stack.name}-demo" + ("" if options.aws == "local" else f"-{os.getpid()}")
    filters = [(f"{run.kit.feed}-filtered", run.kit.example_filter) for run in runs]
    if sink == "sns":
        queues = create_demo_queues(clients["sns"], clients["sqs"], environment["EVENTS_TOPIC_ARN"], prefix, filters)
        if options.aws == "real":
            resources.callback(delete_demo_queues, clients["sns"], clients["sqs"], queues)
    elif sink == "eventbridge":
        queues = bus_queues(clients, environment["EVENT_BUS_NAME"], prefix, filters)
    elif sink == "sqs":
        url = environment["EVENTS_QUEUE_URL"]
        arn = clients["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queues = [DemoQueue(url.rsplit("/", 1)[-1], "all", url, arn, "", None)]
    else:
        assert receiver is not None, "the webhook sink's receiver starts before the stack"
        secret = clients["secretsmanager"].get_secret_value(SecretId=environment["WEBHOOK_SECRET"])["SecretString"]
        receiver.set_secret(secret.split()[-1])
        queues = [DemoQueue("webhook-receiver", "webhook", "", "", "", None)]
    consumer = QueueConsumer(clients["sqs"], queues)
    if receiver is not None:
        receiver.on_events = lambda events: consumer.take(queues[0], events)
    consumer.start()
    resources.callback(consumer.stop)
    return consumer


def bus_queues(
    clients: dict[str, Any], bus: str, prefix: str, filters: Sequence[tuple[str, dict[str, Any]]]
) -> list[DemoQueue]:
    """A queue per rule on ``bus``: one for every event (``all``), one per feed's example filter,
    matched where EventBridge carries the filter fields."""
    bus_arn = clients["events"].describe_event_bus(Name=bus)["Arn"]
    queues = []
    for label, policy in [("all", None), *filters]:
        name = f"{prefix}-{label}"
        url, arn = create_queue(clients["sqs"], name, fifo=False, service="events", source_arn=bus_arn)
        pattern = EVERYTHING if policy is None else {"detail": {"attributes": policy}}
        rule = f"{name}-{uuid.uuid4().hex[:6]}"[-64:]
        clients["events"].put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(pattern))
        clients["events"].put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "demo", "Arn": arn}])
        queues.append(DemoQueue(name, label, url, arn, bus_arn, policy))
    return queues
