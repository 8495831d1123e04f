"""The message contract, whatever the sink: a CloudEvents 1.0 envelope and the attributes a
subscriber filters on.

The JSON Schema of the envelope is ``schemas/message.schema.json``; the README documents both.
How a sink encodes them (SNS message attributes, their limits and its character rules) is the
sink adapter's business.
"""

from __future__ import annotations

import re

from kontur_relay.domain.model import AttributeValue, Feed, FeedEvent

#: CloudEvents ``time`` is RFC 3339; the schema holds the envelope to this pattern.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def cloud_event(feed: Feed, event: FeedEvent, *, traceparent: str | None = None) -> dict[str, object]:
    """The structured-mode CloudEvent of ``event``: the feed's event verbatim in ``data``; ``source``
    with ``id`` identifies it, so a consumer drops a duplicate by remembering the pair.
    ``traceparent`` (CloudEvents' distributed tracing extension): the run that relayed it."""
    envelope: dict[str, object] = {
        "specversion": "1.0",
        "id": event.id,
        "source": feed.source_uri,
        "type": event.type,
        "datacontenttype": "application/json",
        "feed": feed.id,
    }
    if event.time and _RFC3339.fullmatch(event.time):
        # A time in another format stays in ``data`` as the feed sent it; the envelope's must be RFC 3339.
        envelope["time"] = event.time
    if event.subject:
        envelope["subject"] = event.subject
    envelope.update(event.extensions)
    if traceparent is not None:
        envelope["traceparent"] = traceparent
    envelope["data"] = event.data
    return envelope


def filter_attributes(feed: Feed, event: FeedEvent) -> dict[str, AttributeValue]:
    """What a subscription filters on: the feed's kind (``source``), the feed, the event type, and
    the event's own attributes. Empty values are left out (a filter cannot match on the absence of
    a value, and sinks refuse empty ones); lists are sorted and without repeats."""
    attributes: dict[str, AttributeValue] = {"source": feed.kind, "feed": feed.id, "event_type": event.type}
    for name, value in event.attributes.items():
        if value is None or len(value) == 0:
            continue
        attributes[name] = value if isinstance(value, str) else sorted(set(value))
    return attributes
