"""The local stack as a newcomer meets it, without starting it: the live view on an 80-column
terminal, cron schedules, and a catch-up that does not wait for a relay that cannot run."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import pytest

from local_stack.cron import average_period
from local_stack.queues import Received
from local_stack.run import FAILING_RUNS, every_run_failing
from local_stack.scheduler import Invocation
from local_stack.template import Schedule
from local_stack.view import WIDTH, FeedRow, QueueRow, Snapshot, render


def _row(feed: str, error: str | None = None) -> FeedRow:
    return FeedRow(
        feed=feed,
        cursor="bSBz2Svb7S9G25/DlDEUVTs2bwQ=",
        relayed=123456,
        rate=1234.5,
        backlog=100000,
        backlog_capped=True,
        last_error=error,
        stopped_reason=None,
        running=True,
        runs=12345,
        failed_runs=999,
        last_outcome=None,
    )


def test_the_live_view_fits_80_columns():
    snapshot = Snapshot(
        phase="traffic stopped; catching up 12s",
        header=[
            "Kontur: Extern API http://127.0.0.1:39611, identity http://127.0.0.1:41005 (tokens live 300s)",
            "  3 accounts share everything with the relay, 1 only fns534 reports, 1 only with another integrator; "
            "backlog 400, then traffic every 0.5s, faults on 20% of requests",
        ],
        feeds=[
            _row("extern", "FeedUnavailable: Kontur answered 503 three times: Service Unavailable " * 3),
            _row("diadoc:099950d836f645cc81e74ef5e8e25d94@diadoc.ru"),
        ],
        queues=[
            QueueRow(
                "extern-filtered", '{"source": ["extern"], "docflow_type": ["urn:docflow:fns534-report"]}', 1, 2, 3
            )
        ],
        messages=[
            Received(
                queue="diadoc-filtered",
                feed="diadoc:099950d836f645cc81e74ef5e8e25d94@diadoc.ru",
                id="d7ddeaf6-18e4-4043-a5bd-0315dd22ce85",
                type="ru.kontur.diadoc.message",
                subject="70c5758b-3f93-436c-9b05-69ab97cc61c8",
                attributes={"feed": "diadoc:0999@diadoc.ru", "message_type": "Letter", "box_id": "0999@diadoc.ru"},
                at=time.time(),
            )
        ],
        footer=["handler logs: .local/logs/<function>.log; Ctrl-C stops"],
    )
    lines = render(snapshot)
    assert max(len(line) for line in lines) <= WIDTH, [line for line in lines if len(line) > WIDTH]
    text = "\n".join(lines)
    assert "diadoc:0999" in text
    assert "@diadoc.ru" in text
    assert "http://127.0.0.1:41005" in text, "a URL is never cut"
    assert "FeedUnavailable: Kontur answered 503" in text


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


def test_demo_queues_go_on_the_events_topic_not_the_alarms():
    from local_stack.template import Stack  # noqa: PLC0415

    stack = Stack()
    assert stack.condition("CreateAlarmTopic")
    assert stack.event_topics() == ["EventsTopic"]
