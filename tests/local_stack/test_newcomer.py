"""The local stack as a newcomer meets it, without starting it: cron schedules, and a catch-up that
does not wait for a relay that cannot run (the live view: ``test_view``)."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import pytest

from local_stack.cron import average_period
from local_stack.run import FAILING_RUNS, every_run_failing
from local_stack.scheduler import Invocation
from local_stack.template import ROOT, Schedule


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("cron(0/5 * * * ? *)", 300),
        ("cron(* * * * ? *)", 60),
        ("cron(0 * * * ? *)", 3600),
        ("cron(0 8-17 ? * MON-FRI *)", 7 * 86400 / 50),
    ],
)
def test_a_cron_schedule_runs_locally_at_its_average_pace(expression, seconds):
    monday = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    assert average_period(expression, now=monday) == pytest.approx(seconds)
    assert Schedule("Poll", expression, {}).seconds == pytest.approx(seconds, rel=0.2)


def test_a_cron_feature_the_local_clock_cannot_follow_is_named():
    with pytest.raises(ValueError, match="day-of-week '6L'"):
        average_period("cron(15 10 ? * 6L *)")


def _runtime(*outcomes: bool, started: float) -> SimpleNamespace:
    invocations = [
        Invocation("ExternPollerFunction", str(i), started + i, 0.1, "ok" if ok else "error")
        for i, ok in enumerate(outcomes)
    ]
    feeds = [SimpleNamespace(kit=SimpleNamespace(function="ExternPollerFunction"))]
    return SimpleNamespace(feeds=feeds, invocations=invocations)


def test_catch_up_ends_early_only_when_every_run_since_it_began_failed():
    now = time.time()
    assert every_run_failing(_runtime(*[False] * FAILING_RUNS, started=now), now)  # type: ignore[arg-type]
    assert not every_run_failing(_runtime(*[False] * (FAILING_RUNS - 1), started=now), now)  # type: ignore[arg-type]
    assert not every_run_failing(_runtime(True, *[False] * FAILING_RUNS, started=now), now)  # type: ignore[arg-type]
    # Failures from before the catch-up began do not count.
    assert not every_run_failing(_runtime(*[False] * FAILING_RUNS, started=now - 100), now)  # type: ignore[arg-type]


def test_the_safety_margin_leaves_moto_time_to_publish_yet_leaves_a_run_time_to_read():
    from local_stack.bringup import local_margin  # noqa: PLC0415
    from local_stack.template import Function  # noqa: PLC0415

    poller = Function("Poller", ROOT, "app.handler", 300, {}, [Schedule("Poll", "rate(1 minute)", {})])
    admin = Function("Admin", ROOT, "app.handler", 28, {}, [])

    assert local_margin(30, 30, [poller, admin]) == 5  # not 1 s: moto publishes a page in ~1.5 s
    assert local_margin(30, 60, [poller, admin]) == 2.5  # a 5 s run keeps half its time to read
    assert local_margin(30, 1, [poller, admin]) == 30  # the deployed pace: the template's own
