"""Scheduled, once per box: relay the box's Diadoc events to SNS, from its cursor until caught up or out of time.

The schedule's input names the box, ``{"boxId": "..."}``, optionally with GetNewEvents' filters
(``departmentId``, ``messageType``, ...), ``start`` and ``limit``; the deployment's per-box settings
fill in the rest. One relay per feed is built on first use and kept for the container's life, so its
connection pool and token serve every warm invocation.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay import wiring
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.feeds.diadoc.config import BoxFeed
from kontur_relay.observability import count_error, logger, metrics, tracer

_relays: dict[BoxFeed, Relay] = {}


@cache
def deployment() -> wiring.DiadocDeployment:
    return wiring.diadoc_deployment()


def relay(event: dict[str, Any]) -> Relay:
    feed = deployment().feed(event)
    if feed not in _relays:
        _relays[feed] = wiring.diadoc_relay(feed, deployment())
    return _relays[feed]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    try:
        box_relay = relay(event)
    except ConfigurationError as error:
        box = event.get("boxId") if isinstance(event, dict) else None
        count_error(error.kind, f"diadoc:{box}" if isinstance(box, str) else "diadoc")
        logger.exception("The Diadoc feed is misconfigured", extra={"scheduled_event": event})
        raise
    report = box_relay.run(time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    return report.as_dict()
