"""Powertools logger, metrics and tracer, shared by every module of the layer and the handlers.

Service name, metrics namespace and log level come from the standard ``POWERTOOLS_*`` variables.
Every relay metric carries the ``kind`` of feed (``extern``, ``diadoc``) beside Powertools'
``service``, and nothing finer: a dimension per feed would be a metric series per Diadoc box. The
README's "Metrics" section lists them; the template's alarms and dashboard read exactly these.

Each run has a trace context (W3C ``traceparent``), which every message it relays carries: with
X-Ray on, the Lambda invocation's trace, so that a consumer's trace links to the run's segment;
without it, a trace id of the run's own, which its log lines carry too.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
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


#: Lambda's X-Ray header: ``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1>`` (and more fields).
_XRAY_ROOT = re.compile(r"Root=1-([0-9a-f]{8})-([0-9a-f]{24})")
_XRAY_PARENT = re.compile(r"Parent=([0-9a-f]{16})")


@dataclass(frozen=True)
class TraceContext:
    """A run's place in a distributed trace, as W3C Trace Context and CloudEvents' tracing extension
    carry it."""

    trace_id: str
    #: The span of the run (X-Ray: the invocation's segment).
    parent_id: str
    sampled: bool
    #: The X-Ray header it came from, for sinks that propagate X-Ray's own (EventBridge's TraceHeader).
    xray_header: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{'01' if self.sampled else '00'}"

    @classmethod
    def of_run(cls, xray_header: str | None = None) -> TraceContext:
        """The invocation's X-Ray trace when there is one (``_X_AMZN_TRACE_ID``); else a new trace."""
        root = _XRAY_ROOT.search(xray_header or "")
        parent = _XRAY_PARENT.search(xray_header or "")
        if root and parent:
            sampled = "Sampled=1" in (xray_header or "")
            return cls(root.group(1) + root.group(2), parent.group(1), sampled, xray_header)
        return cls(secrets.token_hex(16), secrets.token_hex(8), sampled=False)


_run_trace: TraceContext | None = None


def begin_run_trace() -> TraceContext:
    """The trace context of the invocation beginning now, kept for its messages and in its log lines.
    A container runs one invocation at a time; the threads of a run share its context."""
    global _run_trace  # noqa: PLW0603 - one invocation at a time per container, as Powertools' own keys
    traced = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() not in ("1", "true")
    _run_trace = TraceContext.of_run(os.environ.get("_X_AMZN_TRACE_ID") if traced else None)
    logger.append_keys(traceparent=_run_trace.traceparent)
    return _run_trace


def run_trace() -> TraceContext | None:
    """The current run's trace context; None outside a run (a test calling a publisher directly)."""
    return _run_trace


__all__ = [
    "MetricUnit",
    "TraceContext",
    "begin_run_trace",
    "count_error",
    "for_kind",
    "lag_seconds",
    "logger",
    "metrics",
    "run_trace",
    "tracer",
]
