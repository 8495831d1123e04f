"""A box registered under both spellings of its id (before one box was one feed) is reported and, on
request, merged into one feed without losing what either cursor had still to read: end to end through
the admin API, DynamoDB Local, and the Diadoc simulator counting the events after each cursor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kontur_relay.admin import box_merge
from kontur_relay.admin.api import Caller
from kontur_relay.admin.box_merge import Count
from kontur_relay.admin.boxes import MergeRequest
from kontur_relay.admin.problems import ApiError
from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.feeds.diadoc.kind import DiadocSettings
from kontur_relay.settings import Env
from local_stack.template import Stack
from tests.e2e.test_admin_api import SIGNER_ARN, AdminWorld, admin_world, captured_logs, problem
from tests.e2e.test_diadoc_boxes_api import path, polled, put, registry
from tests.e2e.test_diadoc_e2e import diadoc, metric, metrics_printed, poller, register, register_by_hand, tick
from tests.metric_contract import violations

WHO = Caller(arn=SIGNER_ARN, principal=None, source_ip=None)
__all__ = ["diadoc"]  # the poller's world, a fixture of its own tests


@pytest.fixture
def world(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminWorld]:
    with admin_world(stack, monkeypatch) as built:
        yield built


def stored_twice(
    world: AdminWorld, *, at_diadoc: int, as_guid: int, guid_filters: Any = None
) -> tuple[str, str, list[str]]:
    """A box of the simulator with 30 events, registered under both spellings as deployments did before:
    its ``…@diadoc.ru`` feed read up to event ``at_diadoc``, its GUID feed up to ``as_guid``."""
    box = sorted(world.diadoc.boxes)[0]
    guid = str(uuid.UUID(box.removesuffix("@diadoc.ru")))
    world.diadoc.generate(box, 30)
    keys = world.diadoc.index_keys(box)
    assert put(world, box).status_code == 201
    settings, key = (
        {"start": "oldest", "limit": 500, **(guid_filters or {})},
        "&".join(f"{name}={value}" for name, value in (guid_filters or {}).items()),
    )
    registry(world).register(f"diadoc:{guid}", settings, key, by=SIGNER_ARN, expected_version=0, restart=False,
                             first_poll_at=0.0)  # fmt: skip
    polled(world, box, keys[at_diadoc])
    polled(world, guid, keys[as_guid])
    return box, guid, keys


def merge(world: AdminWorld, box: str, body: Any = None) -> Any:
    return world.api.request("POST", f"{path(box)}/merge", json_body=body)


def test_both_registrations_are_reported_and_the_merge_goes_on_from_the_cursor_behind(world):
    box, guid, keys = stored_twice(world, at_diadoc=20, as_guid=5)
    listed = {shown["feed"]: shown for shown in world.api.request("GET", "/diadoc/boxes").json()["boxes"]}
    assert {feed: shown["alsoRegisteredAs"] for feed, shown in listed.items()} == {
        f"diadoc:{box}": f"diadoc:{guid}",
        f"diadoc:{guid}": f"diadoc:{box}",
    }
    assert world.api.request("GET", path(guid)).json()["alsoRegisteredAs"] == f"diadoc:{box}"

    with captured_logs() as lines:
        merged = merge(world, guid)

    assert merged.status_code == 200, merged.text
    one = merged.json()
    assert (one["feed"], one["cursor"], one["version"], one["alsoRegisteredAs"]) == (f"diadoc:{box}", keys[5], 2, None)
    assert one["merge"] == {
        "mergedFrom": f"diadoc:{guid}",
        "mergedInto": None,
        "cursorOf": f"diadoc:{guid}",
        "by": SIGNER_ARN,
        "at": one["merge"]["at"],
    }
    stopped = registry(world).get(f"diadoc:{guid}")
    assert stopped is not None
    assert (stopped.registered, stopped.cursor.version) == (False, 2)
    assert stopped.merge is not None
    assert stopped.merge["merged_into"] == f"diadoc:{box}"
    assert [shown["feed"] for shown in world.api.request("GET", "/diadoc/boxes").json()["boxes"]] == [f"diadoc:{box}"]
    logged = [line for line in lines if "merged a Diadoc box" in line]
    assert logged
    assert SIGNER_ARN in logged[0]
    assert "come again under" in logged[0]
    # One feed now, whatever the spelling: neither a PUT nor a second merge brings the GUID feed back.
    assert (put(world, guid).status_code, put(world, guid).json()["feed"]) == (200, f"diadoc:{box}")
    assert merge(world, box).json()["cursor"] == keys[5]


def test_the_feed_that_stays_keeps_its_own_cursor_when_it_is_the_one_behind(world):
    box, _, keys = stored_twice(world, at_diadoc=3, as_guid=25)

    one = merge(world, box).json()

    assert (one["feed"], one["cursor"], one["version"]) == (f"diadoc:{box}", keys[3], 1)
    assert one["merge"]["cursorOf"] == f"diadoc:{box}"


def test_registrations_with_different_filters_are_not_merged(world):
    box, guid, _ = stored_twice(world, at_diadoc=3, as_guid=25, guid_filters={"documentDirection": "Inbound"})

    refused = problem(merge(world, box), 409)

    assert "documentDirection=Inbound" in refused["message"]
    assert "DELETE" in refused["message"]
    assert len(world.api.request("GET", "/diadoc/boxes").json()["boxes"]) == 2
    # The way out it names: removing one spelling's registration leaves the other, one feed.
    assert world.api.request("DELETE", path(guid)).status_code == 204
    assert world.api.request("GET", path(guid)).json()["feed"] == f"diadoc:{box}"


def test_a_box_registered_once_or_not_at_all_merges_as_it_is(world):
    box = sorted(world.diadoc.boxes)[0]
    problem(merge(world, box), 404)
    assert put(world, box).status_code == 201

    assert merge(world, box).json()["merge"] is None
    assert problem(merge(world, box, {"keep": "nope"}), 422)


def counting(world: AdminWorld, then: Any = None) -> tuple[box_merge.Counter, list[RegisteredBox]]:
    """What the route counts with, against the simulator (which knows a box by its ``…@diadoc.ru`` id
    only; Diadoc takes both), running ``then`` once after the first count."""
    settings = DiadocSettings.from_env(Env())
    count = box_merge.diadoc_counter(settings.api(), settings.version)
    counted: list[RegisteredBox] = []

    def counter(box: RegisteredBox, box_id: str) -> Count | None:
        counted.append(box)
        found = count(box, f"{box_id.replace('-', '')}@diadoc.ru" if "@" not in box_id else box_id)
        if len(counted) == 1 and then is not None:
            then()
        return found

    return counter, counted


def test_the_guid_feed_stays_when_asked_to(world):
    box, guid, keys = stored_twice(world, at_diadoc=5, as_guid=20)
    counter, _ = counting(world)

    found = box_merge.merge(registry(world), box, MergeRequest(keep=guid.upper()), counter, WHO)

    assert (found.feed, found.registered.cursor.position) == (f"diadoc:{guid}", keys[5])
    assert registry(world).get(f"diadoc:{box}").registered is False  # type: ignore[union-attr]


def test_a_poll_between_counting_and_writing_makes_the_merge_count_and_decide_again(world):
    box, guid, keys = stored_twice(world, at_diadoc=20, as_guid=5)
    # The GUID feed, behind, is polled on past the other while the merge counts.
    counter, counted = counting(world, then=lambda: polled(world, guid, keys[28]))

    found = box_merge.merge(registry(world), box, MergeRequest(), counter, WHO)

    assert len(counted) == 6  # counted twice: the write at the versions first read failed
    assert (found.feed, found.registered.cursor.position) == (f"diadoc:{box}", keys[20])


def test_two_merges_at_once_leave_one_feed_never_none(world):
    box, guid, _ = stored_twice(world, at_diadoc=20, as_guid=5)
    inner, _ = counting(world)
    racing = lambda: box_merge.merge(registry(world), box, MergeRequest(keep=guid), inner, WHO)  # noqa: E731
    counter, _ = counting(world, then=racing)

    found = box_merge.merge(registry(world), box, MergeRequest(), counter, WHO)

    assert found.feed == f"diadoc:{guid}"  # the merge that wrote first decided
    assert registry(world).get(f"diadoc:{guid}").registered is True  # type: ignore[union-attr]
    assert registry(world).get(f"diadoc:{box}").registered is False  # type: ignore[union-attr]


def test_counts_diadoc_cannot_compare_leave_both_feeds_as_they_are(world):
    box, guid, _ = stored_twice(world, at_diadoc=20, as_guid=5)

    with pytest.raises(ApiError) as refused:
        box_merge.merge(registry(world), box, MergeRequest(), lambda _box, _id: None, WHO)

    assert refused.value.status == 409
    assert "cannot tell which cursor" in refused.value.message
    assert registry(world).get(f"diadoc:{guid}").registered is True  # type: ignore[union-attr]


def test_every_poller_run_counts_and_names_the_boxes_registered_under_both_spellings(
    stack, diadoc, aws, monkeypatch, capsys, logs
):
    guid = str(uuid.UUID(diadoc.box.removesuffix("@diadoc.ru")))
    register(stack, diadoc.box)
    register_by_hand(stack, guid, {"start": "oldest", "limit": 500})  # as deployments could before
    register(stack, diadoc.boxes[1])
    handler = poller(stack, diadoc, aws, monkeypatch).handler

    tick(handler)

    out = capsys.readouterr().out
    printed = metrics_printed(out)
    assert [metric(m, "BoxesStoredTwice") for m in printed if "BoxesStoredTwice" in m] == [1]
    assert violations(printed) == [], "as the alarm reads it"
    warned = [record for record in logs.records if "both spellings" in record.getMessage()]
    assert [record.pairs for record in warned] == [[[f"diadoc:{guid}", f"diadoc:{diadoc.box}"]]]
