"""The box registry across a box's two spellings: which of some feeds are registered (to show a
page of boxes with their twins), and the one transaction that merges a box stored twice.

A merge is written at the cursor versions it was decided on, both in one transaction: a poll that
moved either cursor since makes it fail as a whole (the caller reads and decides again), and the
version of the feed that stops moves on, so a poll of it already in flight cannot move its cursor
afterwards (what it published is a duplicate under that feed's ``source``, never a loss).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.aws.dynamo import iso
from kontur_relay.domain.errors import CursorConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import UpdateTypeDef

#: BatchGetItem's largest request.
BATCH = 100


def registered_among(registry: DynamoBoxRegistry, feeds: Iterable[str]) -> set[str]:
    """Which of ``feeds`` are registered boxes (eventually consistent: a view, not a decision)."""
    wanted = sorted(set(feeds))
    found: set[str] = set()
    client = registry.table.meta.client
    name = registry.table.name
    for start in range(0, len(wanted), BATCH):
        # The resource's client (de)serialises attribute values itself, as the table does.
        keys: list[Any] = [{"feed": feed} for feed in wanted[start : start + BATCH]]
        for attempt in range(8):
            answer = client.batch_get_item(
                RequestItems={name: {"Keys": keys, "ProjectionExpression": "feed, box_settings"}}
            )
            found |= {str(item["feed"]) for item in answer["Responses"].get(name, []) if "box_settings" in item}
            # Keys DynamoDB left for later (throttling): asked again after a pause, as its documentation says.
            left: Any = answer.get("UnprocessedKeys", {})
            keys = left.get(name, {}).get("Keys", [])
            if not keys:
                break
            time.sleep(0.05 * 2**attempt)
        else:
            raise RuntimeError(f"DynamoDB kept {len(keys)} keys of a BatchGetItem unprocessed")
    return found


def merge(
    registry: DynamoBoxRegistry,
    keep: RegisteredBox,
    stop: RegisteredBox,
    *,
    position: str | None,
    move: bool,
    audit: Mapping[str, Any],
    by: str,
) -> None:
    """``stop`` is no longer polled; ``keep`` goes on, from ``position`` if ``move``, else from its own
    cursor. Both carry ``audit`` (with ``merged_from`` / ``merged_into``). Raises CursorConflict when
    either changed since it was read."""
    now = iso(registry.clock())
    name = registry.table.name
    kept_sets = ["#merge = :merge"]
    kept_values: dict[str, Any] = {":merge": {**audit, "merged_from": stop.feed, "at": now}}
    kept_removes: list[str] = []
    if move:
        kept_sets += ["#version = :next", "updated_at = :now", "updated_by = :by"]
        kept_values |= {":next": keep.cursor.version + 1, ":now": now, ":by": by}
        if position is None:
            kept_removes.append("#position")
        else:
            kept_sets.append("#position = :position")
            kept_values[":position"] = position
    kept = _update(
        name,
        keep,
        "SET " + ", ".join(kept_sets) + (" REMOVE " + ", ".join(kept_removes) if kept_removes else ""),
        kept_values,
        names={"#merge": "merge", **({"#position": "position"} if move else {})},
    )
    stopped = _update(
        name,
        stop,
        "SET #merge = :merge, #version = :next, updated_at = :now, updated_by = :by "
        "REMOVE box_settings, next_poll_at, poll_interval",
        {
            ":merge": {**audit, "merged_into": keep.feed, "at": now},
            ":next": stop.cursor.version + 1,
            ":now": now,
            ":by": by,
        },
        names={"#merge": "merge"},
    )
    try:
        registry.table.meta.client.transact_write_items(TransactItems=[{"Update": kept}, {"Update": stopped}])
    except ClientError as failure:
        if failure.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            raise CursorConflict(f"{keep.feed} or {stop.feed} changed while their merge was being written") from failure
        raise


def _update(
    table: str, box: RegisteredBox, expression: str, values: Mapping[str, Any], *, names: Mapping[str, str]
) -> UpdateTypeDef:
    """One update of a merge, conditional on the box's registration, filters and cursor as read."""
    expected = box.cursor.version
    every = {**values, ":expected": expected}
    condition = "attribute_exists(box_settings) AND "
    if box.filters_key is None:
        condition += "attribute_not_exists(filters_key) AND "
    else:
        condition += "filters_key = :key AND "
        every[":key"] = box.filters_key
    condition += "(attribute_not_exists(#version) OR #version = :expected)" if expected == 0 else "#version = :expected"
    return {
        "TableName": table,
        "Key": {"feed": box.feed},
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": {**names, "#version": "version"},
        "ExpressionAttributeValues": every,
    }
