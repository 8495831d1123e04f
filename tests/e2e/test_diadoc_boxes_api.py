"""The admin API's Diadoc boxes end to end: SigV4-signed HTTP -> the local API Gateway front -> the real
handler with the template's environment -> the box registry in DynamoDB Local, and the Diadoc simulator
over HTTP for discovery. Also GET /feeds a page at a time."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from kontur_relay.admin import box_registration as registration
from kontur_relay.admin.api import Caller
from kontur_relay.admin.box_registration import BoxDefaults
from kontur_relay.admin.boxes import BoxChange
from kontur_relay.admin.problems import ApiError
from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.feeds.diadoc.config import box_feed
from local_stack.simulators.faults import Fault
from local_stack.template import Stack
from tests.e2e.test_admin_api import SIGNER_ARN, AdminWorld, admin_world, captured_logs, problem

BOX = "0a1b2c3d4e5f60718293a4b5c6d7e8f9@diadoc.ru"
GUID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"


@pytest.fixture
def world(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[AdminWorld]:
    with admin_world(stack, monkeypatch) as built:
        yield built


def path(box: str) -> str:
    return f"/diadoc/boxes/{urllib.parse.quote(box, safe='')}"


def registry(world: AdminWorld) -> DynamoBoxRegistry:
    return DynamoBoxRegistry(boto3.resource("dynamodb").Table(world.stack.physical["CursorsTable"]))


def put(world: AdminWorld, box: str, body: Any = None) -> Any:
    return world.api.request("PUT", path(box), json_body=body)


def polled(world: AdminWorld, box: str, position: str) -> None:
    """What a poll leaves: the cursor moved under the box's feed."""
    cursors = world.cursors()
    cursors.advance(cursors.load(f"diadoc:{box}"), position, relayed=5)


def test_registering_a_box_stores_its_effective_settings_and_makes_it_due_at_once(world):
    before = time.time()

    answer = put(world, BOX, {"messageType": ["Letter", "Draft"], "departmentId": GUID})

    assert answer.status_code == 201, answer.text
    box = answer.json()
    assert (box["boxId"], box["feed"], box["registeredBy"]) == (BOX, f"diadoc:{BOX}", SIGNER_ARN)
    # The deployment's defaults (DiadocStart oldest, DiadocPageSize 500) are stored with it.
    assert box["settings"] == {
        "departmentId": GUID,
        "messageType": ["Letter", "Draft"],
        "typeNamedId": None,
        "documentDirection": None,
        "timestampFromTicks": None,
        "timestampToTicks": None,
        "counteragentBoxId": None,
        "orderBy": None,
        "start": "oldest",
        "limit": 500,
    }
    assert (box["cursor"], box["version"], box["stopped"], box["lastPollAt"]) == (None, 0, False, None)
    stored = registry(world).get(f"diadoc:{BOX}")
    assert stored is not None
    assert before - 1 <= stored.next_poll_at <= time.time() + 1
    # What the poller reads: the stored settings as they are give the feed that was asked for.
    assert stored.settings is not None
    feed = box_feed({"boxId": BOX, **stored.settings})
    assert feed.query() == {"boxId": BOX, "departmentId": GUID, "messageType": "Letter,Draft"}
    assert feed.limit == 500
    assert world.api.request("GET", path(BOX)).json() == box


def test_changing_settings_answers_200_and_a_start_time_is_a_filter(world):
    assert put(world, BOX).status_code == 201

    answer = put(world, BOX, {"limit": 50, "start": "2025-01-01T03:00:00+03:00"})

    assert answer.status_code == 200, answer.text
    settings = answer.json()["settings"]
    assert (settings["limit"], settings["start"]) == (50, "2025-01-01T00:00:00Z")
    assert settings["timestampFromTicks"] == 638712864000000000
    stored = registry(world).get(f"diadoc:{BOX}")
    assert stored is not None
    assert stored.settings is not None
    assert box_feed({"boxId": BOX, **stored.settings}).filters == (("timestampFromTicks", "638712864000000000"),)


def test_new_filters_for_a_box_with_a_cursor_need_a_restart_which_is_logged(world):
    assert put(world, BOX, {"documentDirection": ["Inbound"]}).status_code == 201
    polled(world, BOX, "AAEC+/idx==")

    refused = problem(put(world, BOX, {"documentDirection": ["Outbound"]}), 409)
    assert (refused["currentVersion"], refused["currentCursor"]) == (1, "AAEC+/idx==")
    assert "restart" in refused["message"]
    # The same filters (a new limit) are no change of filters.
    assert put(world, BOX, {"documentDirection": ["Inbound"], "limit": 20}).status_code == 200
    with captured_logs() as lines:
        restarted = put(world, BOX, {"documentDirection": ["Outbound"], "restart": True})

    assert restarted.status_code == 200, restarted.text
    box = restarted.json()
    assert (box["cursor"], box["version"], box["settings"]["documentDirection"]) == (None, 2, ["Outbound"])
    assert world.cursors().load(f"diadoc:{BOX}").position is None
    logged = [line for line in lines if "restarted a Diadoc box" in line]
    assert logged
    assert SIGNER_ARN in logged[0]
    assert "AAEC+/idx==" in logged[0]


def test_a_removed_box_keeps_its_cursor_and_resumes_from_it_when_registered_again(world):
    assert put(world, BOX, {"orderBy": "Ascending"}).status_code == 201
    polled(world, BOX, "KAtTf+IcXVKesNWr1C/ths0=")

    assert world.api.request("DELETE", path(BOX)).status_code == 204

    assert world.cursors().load(f"diadoc:{BOX}").position == "KAtTf+IcXVKesNWr1C/ths0="
    problem(world.api.request("GET", path(BOX)), 404)
    problem(world.api.request("DELETE", path(BOX)), 404)
    assert world.api.request("GET", "/diadoc/boxes").json()["boxes"] == []
    # Other filters than the cursor was read with: refused even though the box is not registered.
    problem(put(world, BOX), 409)
    again = put(world, BOX, {"orderBy": "Ascending"})
    assert again.status_code == 201, again.text
    assert (again.json()["cursor"], again.json()["version"]) == ("KAtTf+IcXVKesNWr1C/ths0=", 1)


def test_the_list_pages_through_every_box_once(world):
    boxes = {f"{index:032x}@diadoc.ru" for index in range(1, 8)}
    for box in boxes:
        assert put(world, box).status_code == 201
    world.cursors().advance(world.cursors().load("extern"), "1_a", relayed=1)  # a feed, not a box

    seen: list[str] = []
    pages, token = 0, None
    while True:
        query = "?limit=3" + (f"&nextToken={urllib.parse.quote(token)}" if token else "")
        answer = world.api.request("GET", f"/diadoc/boxes{query}")
        assert answer.status_code == 200, answer.text
        pages += 1
        seen += [box["boxId"] for box in answer.json()["boxes"]]
        token = answer.json()["nextToken"]
        if token is None:
            break

    assert pages == 3
    assert sorted(seen) == sorted(boxes)
    refused = problem(world.api.request("GET", "/diadoc/boxes?nextToken=bm9wZQ"), 400)
    assert "not one this API gave" in refused["message"]
    problem(world.api.request("GET", "/diadoc/boxes?limit=0"), 422)


def test_a_bad_box_id_is_named_and_an_unknown_box_is_not_found(world):
    for method in ("GET", "PUT", "DELETE"):
        refused = problem(world.api.request(method, path("not-a-box@diadoc.ru")), 400)
        assert "'not-a-box@diadoc.ru' is not a Diadoc box id" in refused["message"]
    problem(world.api.request("GET", path(BOX)), 404)
    problem(world.api.request("DELETE", path(GUID)), 404)
    problem(put(world, BOX, {"limit": 501}), 422)
    problem(put(world, BOX, {"messagetype": ["Letter"]}), 422)
    problem(put(world, BOX, {"start": "yesterday"}), 422)
    # Powertools alone would read an array as its first item: [null] as no body at all.
    assert problem(put(world, BOX, [None]), 422)["detail"] == [
        {"loc": ["body"], "msg": "Input should be an object", "type": "model_type"}
    ]
    problem(world.api.request("POST", "/diadoc/boxes/discover", json_body=[{"register": True}]), 422)
    assert registry(world).get(f"diadoc:{BOX}") is None


def test_every_spelling_of_a_box_id_is_one_feed(world):
    assert put(world, "{" + GUID.upper() + "}").status_code == 201
    assert put(world, GUID.replace("-", ""), {"limit": 7}).status_code == 200
    assert put(world, BOX.upper()).status_code == 201
    assert put(world, f" {BOX.replace('@diadoc.ru', '@Diadoc.Ru')}").status_code == 200

    feeds = sorted(box["feed"] for box in world.api.request("GET", "/diadoc/boxes").json()["boxes"])

    assert feeds == [f"diadoc:{BOX}", f"diadoc:{GUID.replace('-', '')}@diadoc.ru"]
    assert world.api.request("GET", path("{" + GUID + "}")).json()["settings"]["limit"] == 7


def test_v7_reads_at_most_100_a_page(world, monkeypatch):
    monkeypatch.setenv("DIADOC_API_VERSION", "V7")

    assert put(world, BOX).json()["settings"]["limit"] == 100
    assert "at most 100" in problem(put(world, BOX, {"limit": 101}), 422)["message"]


def test_discovery_lists_the_boxes_the_credential_sees_and_registers_only_the_new_ones(world):
    visible = sorted(world.diadoc.boxes)
    hidden = world.diadoc.add_box()  # a box of someone else's: the credential does not see it
    assert put(world, visible[0]).status_code == 201

    listed = world.api.request("POST", "/diadoc/boxes/discover")

    assert listed.status_code == 200, listed.text
    found = {box["boxId"]: box for box in listed.json()["boxes"]}
    assert sorted(found) == visible
    assert hidden.id not in found
    assert [box_id for box_id, box in found.items() if box["relayed"]] == [visible[0]]
    first = found[visible[0]]
    assert first["title"] == world.diadoc.boxes[visible[0]].title
    assert len(first["inn"]) == 10
    assert first["organization"] == world.diadoc.boxes[visible[0]].title
    assert first["boxIdGuid"]
    assert listed.json()["registered"] == []
    # Diadoc's default would register the relay's user in the organisations: never sent.
    assert world.diadoc.organization_requests == ["false"]

    registered = world.api.request("POST", "/diadoc/boxes/discover", json_body={"register": True})

    assert registered.status_code == 200, registered.text
    assert sorted(registered.json()["registered"]) == visible[1:]
    assert all(box["relayed"] for box in registered.json()["boxes"])
    relayed = sorted(box["boxId"] for box in world.api.request("GET", "/diadoc/boxes").json()["boxes"])
    assert relayed == visible
    again = world.api.request("POST", "/diadoc/boxes/discover", json_body={"register": True})
    assert again.json()["registered"] == []
    assert world.diadoc.organization_requests == ["false"] * 3


def test_discovery_answers_diadoc_failures_as_gateway_errors(world):
    world.diadoc.faults.add(Fault.server_error(500), prefix="/GetMyOrganizations", times=2)
    assert "Diadoc failed" in problem(world.api.request("POST", "/diadoc/boxes/discover"), 502)["message"]
    world.diadoc.faults.add(Fault.throttle(), prefix="/GetMyOrganizations", times=2)
    problem(world.api.request("POST", "/diadoc/boxes/discover"), 503)
    world.diadoc.set_access(next(iter(world.diadoc.users)), next(iter(world.diadoc.boxes)), False)
    assert world.api.request("POST", "/diadoc/boxes/discover").status_code == 200


@pytest.mark.parametrize("limit", [1, 2, 100])
def test_feeds_page_through_every_feed_once_and_leave_out_what_is_no_feed(world, limit):
    cursors = world.cursors()
    feeds = {"extern", *(f"diadoc:{index:032x}@diadoc.ru" for index in range(1, 5))}
    for feed in feeds:
        cursors.advance(cursors.load(feed), "x", relayed=1)
    # Neither a feed nor a kind's poller row (GET /feeds shows `diadoc`, the poller's own).
    assert cursors.acquire_lease("lease:diadoc", "poller", time.time() + 60)

    seen: list[str] = []
    token = None
    while True:
        query = f"?limit={limit}" + (f"&nextToken={urllib.parse.quote(token)}" if token else "")
        answer = world.api.request("GET", f"/feeds{query}")
        assert answer.status_code == 200, answer.text
        seen += [feed["feed"] for feed in answer.json()["feeds"]]
        token = answer.json()["nextToken"]
        if token is None:
            break

    assert sorted(seen) == sorted(feeds)
    problem(world.api.request("GET", "/feeds?nextToken=e30"), 400)


class PollInBetween(DynamoBoxRegistry):
    """A registry where a poll moves the box's cursor right after the API first reads the box."""

    def __init__(self, world: AdminWorld) -> None:
        super().__init__(boto3.resource("dynamodb").Table(world.stack.physical["CursorsTable"]))
        self.world = world
        self.reads = 0

    def get(self, feed: str) -> RegisteredBox | None:
        found = super().get(feed)
        self.reads += 1
        if self.reads == 1:
            polled(self.world, feed.removeprefix("diadoc:"), "AAEC+/idx==")
        return found


@pytest.mark.parametrize(("filters", "status"), [({"orderBy": "Ascending"}, 200), ({"orderBy": "Descending"}, 409)])
def test_a_poll_between_reading_and_writing_a_registration_makes_it_decide_again(world, filters, status):
    assert put(world, BOX, {"orderBy": "Ascending"}).status_code == 201
    racing = PollInBetween(world)
    who = Caller(arn=SIGNER_ARN, principal=None, source_ip=None)
    defaults = BoxDefaults(start="oldest", limit=500, max_limit=500)

    if status == 409:
        with pytest.raises(ApiError) as refused:
            registration.put(racing, f"diadoc:{BOX}", BoxChange.model_validate(filters), defaults, who)
        assert (refused.value.status, refused.value.fields["current_version"]) == (409, 1)
    else:
        box, created = registration.put(racing, f"diadoc:{BOX}", BoxChange.model_validate(filters), defaults, who)
        assert (created, box.cursor.position, box.cursor.version) == (False, "AAEC+/idx==", 1)
    # The write at the version first read failed, and the box was read again before deciding.
    assert racing.reads >= 2
    assert world.cursors().load(f"diadoc:{BOX}").position == "AAEC+/idx=="


def test_a_box_shows_its_last_reconciliation_and_what_it_found(world):
    assert put(world, BOX).status_code == 201
    assert world.api.request("GET", path(BOX)).json()["reconciliation"] is None
    boxes = registry(world)
    box = boxes.get(f"diadoc:{BOX}")
    assert box is not None

    boxes.reconciled(box, since=1_800_000_000, until=1_800_003_600, recovered=2, duplicates=1, window=True)
    boxes.reconciled(box, since=1_800_000_600, until=1_800_004_200, recovered=1, duplicates=0, window=True)

    shown = world.api.request("GET", path(BOX)).json()["reconciliation"]
    assert shown["since"] == "2027-01-15T08:10:00Z"
    assert shown["until"] == "2027-01-15T09:10:00Z"
    assert (shown["recovered"], shown["duplicatesSuppressed"], shown["recoveredTotal"]) == (1, 0, 3)
    assert shown["at"].endswith("Z")
    assert registry(world).get(f"diadoc:{BOX}").reconciled_to == 1_800_004_200  # type: ignore[union-attr]
    listed = world.api.request("GET", "/diadoc/boxes").json()["boxes"]
    assert [item["reconciliation"] for item in listed] == [shown]


# -- one box, one feed (issue 16) ------------------------------------------------------------------

HEX = "6513270e0c0b4c2f9a1d3e5f7a9b1c2d"
AT_DIADOC, AS_GUID = f"{HEX}@diadoc.ru", "6513270e-0c0b-4c2f-9a1d-3e5f7a9b1c2d"


def test_the_guid_spelling_of_a_relayed_box_answers_with_its_registration_not_a_second_feed(world):
    assert put(world, AT_DIADOC, {"documentDirection": ["Inbound"]}).status_code == 201
    polled(world, AT_DIADOC, "AAEC+/idx==")

    again = put(world, "{" + AS_GUID.upper() + "}", {"documentDirection": ["Inbound"], "limit": 20})

    assert again.status_code == 200, again.text
    assert (again.json()["feed"], again.json()["cursor"]) == (f"diadoc:{AT_DIADOC}", "AAEC+/idx==")
    feeds = [box["feed"] for box in world.api.request("GET", "/diadoc/boxes").json()["boxes"]]
    assert feeds == [f"diadoc:{AT_DIADOC}"]
    assert registry(world).get(f"diadoc:{AS_GUID}") is None
    assert world.api.request("GET", path(AS_GUID)).json()["settings"]["limit"] == 20
    problem(
        put(world, AS_GUID, {"documentDirection": ["Outbound"]}), 409
    )  # its cursor's filters, whatever the spelling
    assert world.api.request("DELETE", path(AS_GUID)).status_code == 204
    assert world.api.request("GET", "/diadoc/boxes").json()["boxes"] == []


def test_a_new_box_is_registered_under_its_diadoc_ru_spelling_whichever_spelling_registers_it(world):
    answer = put(world, AS_GUID)

    assert answer.status_code == 201, answer.text
    assert (answer.json()["boxId"], answer.json()["feed"]) == (AT_DIADOC, f"diadoc:{AT_DIADOC}")
    assert put(world, AT_DIADOC.upper()).status_code == 200


def test_a_box_registered_under_its_guid_before_keeps_that_feed_and_its_source(world):
    """A deployment that registered the GUID spelling (before one box was one feed) keeps its feed
    id, so its cursor and its events' CloudEvents source stay what consumers know."""
    legacy = f"diadoc:{AS_GUID}"
    registry(world).register(legacy, {"start": "oldest", "limit": 500}, "", by=SIGNER_ARN, expected_version=0,
                             restart=False, first_poll_at=0.0)  # fmt: skip

    for spelling in (AT_DIADOC, AS_GUID, HEX):
        answer = put(world, spelling)
        assert (answer.status_code, answer.json()["feed"]) == (200, legacy), answer.text
        assert world.api.request("GET", path(spelling)).json()["feed"] == legacy
    assert registry(world).get(f"diadoc:{AT_DIADOC}") is None


@pytest.mark.parametrize(
    ("field", "values", "cap"),
    [
        ("messageType", ["Letter"] * 200_000, 3),
        ("documentDirection", ["Inbound", "Outbound", "Internal", "Inbound"], 3),
        ("typeNamedId", [f"Type{index}" for index in range(51)], 50),
    ],
)
def test_a_filter_list_longer_than_its_cap_is_refused_naming_the_cap(world, field, values, cap):
    refused = problem(put(world, BOX, {field: values}), 422)

    assert f"at most {cap}" in refused["message"], refused
    assert registry(world).get(f"diadoc:{BOX}") is None
