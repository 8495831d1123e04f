"""Powertools logger, metrics and tracer, shared by every module of the layer and the handlers.

Service name, metrics namespace and log level come from the standard ``POWERTOOLS_*`` variables.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def count_error(kind: str, feed: str) -> None:
    """One ``Errors`` datapoint with the error's kind as a dimension, beside the run's own metrics."""
    with single_metric(name="Errors", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension("feed", feed)
        metric.add_dimension("kind", kind)


__all__ = ["MetricUnit", "count_error", "logger", "metrics", "tracer"]
