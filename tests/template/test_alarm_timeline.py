"""Who the alarms notify, and when, over the first hours of a deployment: a feed kind whose secret is
still empty is a state of its own (one notice, never a page); a configured kind that stops
succeeding pages, and so does a poller that never runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tests.template.alarm_timeline import Tick, Timeline
from tests.template.sam import offline

KINDS = ("extern", "diadoc")
#: What a tick emits (tests/e2e/test_extern_e2e.py checks the first two on the real handler).
UNCONFIGURED = {"NotConfigured": 1}
SUCCEEDED = {"RunSucceeded": 1, "RunFailed": 0, "StoppedFeeds": 0, "EventsPublished": 0, "KonturRequests": 1}
FAILED = {"RunSucceeded": 0, "RunFailed": 1, "StoppedFeeds": 0, "EventsPublished": 0, "KonturRequests": 1}
STALE_AFTER = 15


def every_kind(tick: Mapping[str, float]) -> Callable[[int], Tick]:
    return lambda _minute: dict.fromkeys(KINDS, tick)


def timeline() -> Timeline:
    return Timeline(offline({"StaleAfterMinutes": str(STALE_AFTER)}))


def pages(line: Timeline) -> list[str]:
    """The alarms that went off, but for the notices that a kind is not configured."""
    return [n.alarm for n in line.sent() if "NotConfigured" not in n.alarm]


def test_a_fresh_deployment_with_empty_secrets_pages_nobody_and_notices_each_kind_once():
    line = timeline().run(180, every_kind(UNCONFIGURED))

    assert pages(line) == [], "a feed nobody configured yet is not a failure"
    notices = line.sent()
    assert sorted(n.alarm for n in notices) == ["DiadocNotConfiguredAlarm", "ExternNotConfiguredAlarm"]
    assert all(n.minute <= 5 for n in notices), "said at once, not after StaleAfterMinutes"


def test_an_extern_only_deployment_pages_for_extern_and_never_for_the_diadoc_it_does_not_use():
    line = timeline().run(120, lambda _minute: {"extern": FAILED, "diadoc": UNCONFIGURED})

    assert set(pages(line)) == {"ExternStaleFeedAlarm", "ExternRunsFailingAlarm"}
    assert [n.alarm for n in line.sent() if n.alarm.startswith("Diadoc")] == ["DiadocNotConfiguredAlarm"]


def test_a_configured_kind_that_stops_succeeding_pages_after_stale_after_minutes():
    line = timeline().run(60, every_kind(SUCCEEDED)).run(60, lambda _minute: {"extern": FAILED, "diadoc": SUCCEEDED})

    stale = [n for n in line.sent() if n.alarm == "ExternStaleFeedAlarm"]
    assert len(stale) == 1
    assert 60 + STALE_AFTER - 1 <= stale[0].minute <= 60 + STALE_AFTER + 1
    assert not [n for n in line.sent() if n.alarm.startswith("Diadoc")]


def test_a_poller_that_never_runs_pages_though_it_never_said_it_was_unconfigured():
    line = timeline().run(60, lambda _minute: None)

    assert {"ExternStaleFeedAlarm", "DiadocStaleFeedAlarm"} <= set(pages(line))


def test_credentials_that_fail_once_filled_in_page_a_while_after_the_last_unconfigured_tick():
    line = timeline().run(60, every_kind(UNCONFIGURED)).run(60, every_kind(FAILED))

    stale = [n for n in line.sent() if n.alarm == "ExternStaleFeedAlarm"]
    assert len(stale) == 1
    assert 60 < stale[0].minute <= 60 + STALE_AFTER + 1


def test_filling_in_the_secret_ends_the_notice_without_a_page():
    line = timeline().run(30, every_kind(UNCONFIGURED)).run(90, every_kind(SUCCEEDED))

    assert pages(line) == []
    assert line.states["ExternNotConfiguredAlarm"] == "OK"
