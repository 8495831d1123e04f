"""Scheduled: relay the Kontur.Extern events feed to SNS, from the cursor until caught up or out of time."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay import wiring
from kontur_relay.domain.engine import Relay
from kontur_relay.observability import logger, metrics, tracer


@cache
def relay() -> Relay:
    return wiring.extern_relay()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
    report = relay().run(time_left=lambda: context.get_remaining_time_in_millis() / 1000)
    return report.as_dict()
