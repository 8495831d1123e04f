"""The EventBridge sink: PutEvents to one bus (the stack's own, or an existing one by name or ARN),
10 entries a call, each entry and the whole call within 256 KiB as EventBridge counts them.

Each event is an entry whose ``source`` is ``ru.kontur.<kind>`` (``ru.kontur.extern``,
``ru.kontur.diadoc``), whose ``detail-type`` is the CloudEvent's ``type``, and whose ``detail`` is
``{"attributes": {...}, "event": {...}}``: the filter fields SNS carries as message attributes
(arrays as JSON arrays), and the CloudEvent (or, offloaded, the pointer to it, with
``ExtendedPayloadSize`` among the attributes). A rule matches exactly what an SNS filter policy
matches when the policy is put under ``detail.attributes``. EventBridge promises no order: calls go
in parallel. With X-Ray on, the run's trace travels as the entry's ``TraceHeader`` too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kontur_relay.aws.config import AWS_CONFIG
from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.observability import run_trace
from kontur_relay.settings import Env
from kontur_relay.sinks.delivery import Delivery, Limits, Refused
from kontur_relay.sinks.message import PAYLOAD_SIZE_ATTRIBUTE, TRACEPARENT, Message, messages, utf8_length
from kontur_relay.sinks.offload import PayloadOffloader, offloader

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

MAX_BATCH_ENTRIES = 10
#: An entry, and (kept to the same) a whole PutEvents call.
MAX_ENTRY_BYTES = 262_144
#: Error codes of an entry that sending again cannot mend; any other (InternalFailure,
#: ThrottlingException, ...) is retried.
FINAL_ERRORS = frozenset(
    {
        "InvalidArgument",
        "MalformedDetail",
        "AccessDeniedException",
        "NotAuthorizedForSourceException",
        "NotAuthorizedForDetailTypeException",
    }
)


def source(kind: str) -> str:
    """The entry's ``source``: reverse DNS, as EventBridge recommends, and never ``aws.``."""
    return f"ru.kontur.{kind}"


def detail(message: Message) -> str:
    """The entry's ``detail``: the filter fields and the CloudEvent (or its pointer), the body spliced
    in as it is (already JSON: no second encoding)."""
    attributes = {name: value for name, value in message.attributes.items() if name != TRACEPARENT}
    if message.payload_size is not None:
        attributes[PAYLOAD_SIZE_ATTRIBUTE] = str(message.payload_size)
    fields = json.dumps(attributes, ensure_ascii=False, separators=(",", ":"))
    return f'{{"attributes":{fields},"event":{message.body}}}'


def entry_size(message: Message) -> int:
    """What EventBridge counts of an entry: its Source, DetailType and Detail in UTF-8."""
    kind, event_type = str(message.attributes["source"]), str(message.attributes["event_type"])
    return utf8_length(source(kind)) + utf8_length(event_type) + utf8_length(detail(message))


class EventBridgePublisher:
    def __init__(
        self,
        client: EventBridgeClient,
        bus: str,
        *,
        offloader: PayloadOffloader | None = None,
        attempts: int = 5,
        base_delay: float = 0.2,
        parallel_batches: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.bus = bus
        self.offloader = offloader
        self.delivery = Delivery(
            "EventBridge",
            self._send,
            Limits(MAX_BATCH_ENTRIES, MAX_ENTRY_BYTES),
            ordered=False,
            measure=entry_size,
            parallel=parallel_batches,
            attempts=attempts,
            base_delay=base_delay,
            sleep=sleep,
        )

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        trace = run_trace()
        batch = messages(feed, events, trace.traceparent if trace else None)
        if self.offloader is not None:
            batch = self.offloader.fit(batch, MAX_ENTRY_BYTES, "EventBridge", entry_size)
        self.delivery.deliver(batch)

    def _entry(self, message: Message, trace_header: str | None) -> PutEventsRequestEntryTypeDef:
        entry: PutEventsRequestEntryTypeDef = {
            "Source": source(str(message.attributes["source"])),
            "DetailType": str(message.attributes["event_type"]),
            "Detail": detail(message),
            "EventBusName": self.bus,
        }
        if trace_header is not None:
            entry["TraceHeader"] = trace_header
        return entry

    def _send(self, batch: list[Message]) -> list[Refused]:
        trace = run_trace()
        header = trace.xray_header if trace else None
        try:
            response = self.client.put_events(Entries=[self._entry(message, header) for message in batch])
        except (BotoCoreError, ClientError) as error:
            raise PublishError(
                f"PutEvents of {len(batch)} events failed (first: event {batch[0].event_id}): {error}"
            ) from error
        if not response.get("FailedEntryCount"):
            return []
        # Entries answer in the request's order, one each.
        answers = response.get("Entries", [])
        refused = []
        for index, message in enumerate(batch):
            answer = answers[index] if index < len(answers) else {}
            if answer.get("EventId") and not answer.get("ErrorCode"):
                continue
            code = str(answer.get("ErrorCode"))
            refused.append(Refused(message, code, str(answer.get("ErrorMessage")), retryable=code not in FINAL_ERRORS))
        return refused


def from_env(env: Env) -> EventBridgePublisher:
    """The bus EVENT_BUS_NAME names (a name or an ARN), offloading to PAYLOAD_BUCKET."""
    client = boto3.client("events", config=AWS_CONFIG.merge(Config(parameter_validation=False)))
    return EventBridgePublisher(client, env.text("EVENT_BUS_NAME"), offloader=offloader(env))
