"""What PUT /diadoc/boxes/{boxId} stores is what the poller reads: the stored settings, as they are,
give the very feed that was asked for (with the deployment's defaults applied), and its filters key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kontur_relay.admin.box_registration import BoxDefaults, effective
from kontur_relay.admin.boxes import BoxChange
from kontur_relay.admin.problems import ApiError
from kontur_relay.feeds.diadoc.boxes import filters_key
from kontur_relay.feeds.diadoc.config import Start, box_feed
from kontur_relay.settings import Env

FEED = "diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru"
V8 = BoxDefaults(start="oldest", limit=500, max_limit=500)


@pytest.mark.parametrize(
    ("asked", "defaults", "start"),
    [
        ({}, V8, Start.OLDEST),
        ({"start": "now", "limit": 10}, V8, Start.NOW),
        ({"start": "2025-01-01T03:00:00.123456+03:00"}, V8, Start.TIME),
        ({"timestampFromTicks": 638712864000000001}, V8, Start.TIME),
        ({"messageType": ["Letter", "Draft"], "typeNamedId": ["UniversalTransferDocument"]}, V8, Start.OLDEST),
        ({"orderBy": "Descending", "counteragentBoxId": "{A1B2C3D4-E5F6-4A7B-8C9D-0E1F2A3B4C5D}"}, V8, Start.OLDEST),
        ({}, BoxDefaults(start="2024-05-01T00:00:00Z", limit=100, max_limit=100), Start.TIME),
        ({"timestampToTicks": 5}, BoxDefaults(start="now", limit=100, max_limit=100), Start.NOW),
    ],
)
def test_the_stored_settings_read_back_as_the_feed_asked_for(asked: dict[str, Any], defaults: BoxDefaults, start):
    stored, read = effective(FEED, BoxChange.model_validate(asked), defaults)

    again = box_feed({"boxId": read.box_id, **stored})

    assert again == read
    assert read.start is start
    assert filters_key(again) == filters_key(read)
    assert set(stored) >= {"start", "limit"}


def test_a_counteragent_is_stored_canonical():
    stored, _ = effective(
        FEED, BoxChange.model_validate({"counteragentBoxId": "ABCDEF0123456789ABCDEF0123456789@Diadoc.RU"}), V8
    )

    assert stored["counteragentBoxId"] == "abcdef0123456789abcdef0123456789@diadoc.ru"


def test_v7_caps_the_default_page_and_refuses_a_larger_one():
    defaults = BoxDefaults.from_env(Env({"DIADOC_API_VERSION": "V7", "DIADOC_PAGE_SIZE": "500"}))

    assert (defaults.limit, defaults.max_limit) == (100, 100)
    with pytest.raises(ApiError) as refused:
        effective(FEED, BoxChange.model_validate({"limit": 101}), defaults)
    assert refused.value.status == 422


def test_a_filter_list_is_read_once_per_value():
    asked = {"messageType": ["Letter", "Draft", "Letter"], "typeNamedId": ["Torg12", "Torg12"]}

    stored, _ = effective(FEED, BoxChange.model_validate(asked), V8)

    assert (stored["messageType"], stored["typeNamedId"]) == ("Letter,Draft", "Torg12")


def test_document_types_longer_than_a_request_can_carry_are_refused_naming_the_cap():
    names = [f"{index:02d}{'T' * 98}" for index in range(16)]  # 16 of 100 characters: within the count

    with pytest.raises(ValidationError) as refused:
        BoxChange.model_validate({"typeNamedId": names})

    assert "at most 1500 characters" in str(refused.value)
