"""The one shape of every poller Lambda: its feed kind's poller, built once per container from the
function's environment, run on each scheduled tick with the invocation's time."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from kontur_relay import cpu, wiring
from kontur_relay.domain.errors import NotConfigured
from kontur_relay.feeds import Poller, kind_named
from kontur_relay.observability import MetricUnit, begin_run_trace, for_kind, logger, metrics, tracer
from kontur_relay.settings import Env

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, object]]


def poller_handler(kind: str) -> Handler:
    """The Lambda handler of the feed kind named ``kind``."""
    feed_kind = kind_named(kind)
    cpu.keep_to_one_core()  # at the module's import, before any thread of the runs is started

    @cache
    def poller() -> Poller:
        # No write here: a cold start costs nothing extra. The kind's first successful run clears
        # a "not configured" mark (the cursor store's record_success and release_lease do).
        return feed_kind.poller(Env())

    @cache
    def not_configured(problem: str) -> None:
        # Once a container: operators see it on the kind's row of GET /feeds.
        wiring.cursor_store().mark_not_configured(kind, problem)

    @logger.inject_lambda_context
    @tracer.capture_lambda_handler
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, object]:
        for_kind(kind)
        begin_run_trace()
        try:
            built = poller()
        except NotConfigured as error:
            # Not a failure: no FailedRunsQueue message and no failure alarm, one line a run.
            logger.warning(f"The {kind} feed is not configured, so it does not run: {error}")
            metrics.add_metric(name="NotConfigured", unit=MetricUnit.Count, value=1)
            not_configured(str(error))
            return {"kind": kind, "outcome": "not_configured"}
        return built.run(event, lambda: context.get_remaining_time_in_millis() / 1000)

    return handler
