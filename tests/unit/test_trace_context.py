"""Each run's trace context, as every message it relays carries it (CloudEvents' distributed tracing
extension, W3C ``traceparent``): the Lambda invocation's X-Ray trace when X-Ray is on, else a trace
of the run's own."""

from __future__ import annotations

import re

import pytest

from kontur_relay.observability import TraceContext, begin_run_trace, run_trace

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:0"


def test_with_x_ray_on_the_run_s_trace_is_the_invocation_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)

    trace = begin_run_trace()

    assert trace.traceparent == "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
    assert trace.xray_header == XRAY
    assert run_trace() == trace


def test_without_x_ray_each_run_has_a_trace_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY)  # Lambda sets it even untraced (PassThrough)

    first, second = begin_run_trace(), begin_run_trace()

    assert TRACEPARENT.match(first.traceparent)
    assert first.trace_id != second.trace_id
    assert first.xray_header is None


def test_an_x_ray_header_without_a_parent_starts_a_trace_of_the_run_s_own() -> None:
    assert TraceContext.of_run("Root=1-5759e988-bd862e3fe1be46a994272793").xray_header is None
