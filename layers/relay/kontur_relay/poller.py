"""The one shape of every poller Lambda: its feed kind's poller, built once per container from the
function's environment, run on each scheduled tick with the invocation's time."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay.feeds import Poller, kind_named
from kontur_relay.observability import logger, metrics, tracer
from kontur_relay.settings import Env

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, object]]


def poller_handler(kind: str) -> Handler:
    """The Lambda handler of the feed kind named ``kind``."""
    feed_kind = kind_named(kind)

    @cache
    def poller() -> Poller:
        return feed_kind.poller(Env())

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
        return poller().run(event, lambda: context.get_remaining_time_in_millis() / 1000)

    return handler
