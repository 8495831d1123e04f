"""Powertools logger, metrics and tracer, shared by every module of the layer and the handlers.

Service name, metrics namespace and log level come from the standard ``POWERTOOLS_*`` variables.
Every relay metric carries the ``kind`` of feed (``extern``, ``diadoc``) beside Powertools'
``service``, and nothing finer: a dimension per feed would be a metric series per Diadoc box. The
README's "Metrics" section lists them; the template's alarms and dashboard read exactly these.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger()
metrics = Metrics()


class Untraced:
    """The tracer while tracing is off (the template's default): the handlers' decorator passes them
    through, and X-Ray's SDK, a seventh of a poller's cold start, is never imported."""

    def capture_lambda_handler(self, handler: Any = None, **options: Any) -> Any:
        return handler if handler is not None else (lambda decorated: decorated)


def _tracer() -> Any:
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in ("1", "true"):
        return Untraced()
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - only when tracing is on

    return Tracer()


tracer = _tracer()


def count_error(error: str, kind: str | None = None) -> None:
    """One ``Errors`` datapoint with the error's kind as the ``error`` dimension."""
    with single_metric(name="Errors", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension("kind", kind or _kind())
        metric.add_dimension("error", error)


def for_kind(kind: str) -> None:
    """Every metric of this invocation is about feeds of ``kind``."""
    if _kind() != kind:
        metrics.add_dimension("kind", kind)


def _kind() -> str:
    return metrics.dimension_set.get("kind", "none")


def lag_seconds(event_time: str | None) -> float | None:
    """Seconds from an event's own time (RFC 3339; Kontur sends seven fractional digits) to now."""
    if not event_time:
        return None
    head, dot, rest = event_time.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        event_time = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max((datetime.now(UTC) - moment).total_seconds(), 0.0)


__all__ = ["MetricUnit", "count_error", "for_kind", "lag_seconds", "logger", "metrics", "tracer"]
