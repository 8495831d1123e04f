"""Diadoc box feeds: one feed per box, read from ``GET /V8/GetNewEvents`` as protobuf.

- ``config``: what a feed reads (box, filters, start, page size), from the scheduled event;
- ``source``: the Source the relay engine polls, and Diadoc's errors;
- ``events``: a BoxEvent shaped for publishing (JSON mapping, attributes, its exact bytes);
- ``auth``: OpenID Connect or legacy DiadocAuth credentials;
- ``kind``: the feed kind (cursor rules for operators, the poller's composition);
- ``diadoc_events.proto``: the wire format, with its generated ``diadoc_events_pb2``.
"""

from kontur_relay.feeds.diadoc.kind import KIND

__all__ = ["KIND"]
