"""The Diadoc boxes the relay polls, kept as data in the cursor table: each box's feed item
(``diadoc:<boxId>``) also holds its registration and its polling schedule.

One item per box keeps a box's cursor, settings and schedule under one key, so a poll of a box
costs one write at most (its schedule) and the poller learns every box's state from one scan.
Registration is ``box_settings``: removing it stops the polling and keeps the cursor, so a box
registered again resumes where it stopped. ``filters_key`` outlives a removal, because a cursor is
only valid under the filters it was read with. What an item reads as (``RegisteredBox``) is in
``aws.box_items``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from kontur_relay.aws.box_items import PREFIX, RegisteredBox, registered_box
from kontur_relay.aws.dynamo import conditional_failed, first, iso, number, scanned
from kontur_relay.domain.errors import CursorConflict
from kontur_relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class DynamoBoxRegistry:
    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    # -- the poller's side --------------------------------------------------------------------------

    def registered(self) -> list[RegisteredBox]:
        """Every registered box with its state: one paginated scan (eventually consistent: a stale
        cursor version only makes that box's cursor write fail its condition, never lose events)."""
        return list(self._registered())

    def polled(
        self,
        box: RegisteredBox,
        *,
        next_poll_at: float,
        interval: float,
        had_events: bool,
        backlog: int | None = None,
        backlog_capped: bool = False,
        error: str | None = None,
        stop_at: int | None = None,
        reconciled_since: float | None = None,
    ) -> None:
        """A box's poll, in one write: its next poll, and what operators see of the poll. Nothing is
        written for a box removed meanwhile: its schedule must not bring it back. ``stop_at``: stop
        the box (402/403), if its cursor is still at that version; a stale turn must not stop again a
        box an operator resumed since (the error is still recorded)."""
        now = iso(self.clock())
        sets = ["next_poll_at = :next", "poll_interval = :interval", "last_poll_at = :now"]
        values: dict[str, Any] = {
            ":next": number(next_poll_at),
            ":interval": number(interval),
            ":now": now,
        }
        if error is None:
            sets.append("last_success_at = :now")
            if backlog is not None:
                sets += ["backlog = :backlog", "backlog_capped = :capped"]
                values |= {":backlog": backlog, ":capped": backlog_capped}
        else:
            sets += ["last_error = :error", "last_error_at = :now"]
            values[":error"] = error[:2000]
        if had_events:
            sets.append("last_events_at = :now")
        if reconciled_since is not None:
            sets.append("reconciled_since = if_not_exists(reconciled_since, :since)")
            values[":since"] = number(reconciled_since)
        if stop_at is not None:
            stopped = {":version": stop_at, **values}
            unchanged = "#version = :version" if stop_at else "(attribute_not_exists(#version) OR #version = :version)"
            if self._update(box.feed, [*sets, "stopped_reason = :error"], stopped, unchanged):
                return
            logger.warning(
                "The box changed since its turn read it (an operator resumed it?): it is not stopped again",
                extra={"feed": box.feed, "version": stop_at},
            )
        self._update(box.feed, sets, values)

    def reconciled(
        self,
        box: RegisteredBox,
        *,
        since: float | None,
        until: float | None,
        recovered: int,
        duplicates: int,
        window: bool,
    ) -> None:
        """A box's reconciliation pass, in one write: what operators see of it and, for a pass over
        its window (``window``), where the next one reads on from (``until``, epoch seconds)."""
        last: dict[str, Any] = {"at": iso(self.clock()), "recovered": recovered, "duplicates": duplicates}
        last |= {name: iso(moment) for name, moment in (("since", since), ("until", until)) if moment is not None}
        sets = ["last_reconciliation = :last", "recovered_total = if_not_exists(recovered_total, :zero) + :found"]
        values: dict[str, Any] = {":last": last, ":zero": 0, ":found": recovered}
        if window and until is not None:
            sets.append("reconciled_to = :until")
            values[":until"] = number(until)
        self._update(box.feed, sets, values)

    def _update(self, feed: str, sets: list[str], values: dict[str, Any], condition: str | None = None) -> bool:
        """One write of a registered box's item; False when the box is gone or ``condition`` fails."""
        update: dict[str, Any] = {
            "Key": {"feed": feed},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": "attribute_exists(box_settings)" + (f" AND {condition}" if condition else ""),
            "ExpressionAttributeValues": values,
        }
        if condition:
            update["ExpressionAttributeNames"] = {"#version": "version"}
        try:
            self.table.update_item(**update)
        except ClientError as failure:
            if not conditional_failed(failure):
                raise
            return False
        return True

    # -- the operators' side ------------------------------------------------------------------------

    def get(self, feed: str) -> RegisteredBox | None:
        item = self.table.get_item(Key={"feed": feed}, ConsistentRead=True).get("Item")
        return None if item is None else registered_box(item)

    def register(
        self,
        feed: str,
        settings: Mapping[str, Any],
        filters_key: str,
        *,
        by: str,
        expected_version: int,
        restart: bool,
        first_poll_at: float,
    ) -> None:
        """Register the box or change its settings, at the cursor version the caller read; with
        ``restart`` the cursor goes back to where a new feed starts. Raises CursorConflict when the
        item changed since (the caller reads again and decides again)."""
        values: dict[str, Any] = {
            ":settings": dict(settings),
            ":key": filters_key,
            ":by": by,
            ":now": iso(self.clock()),
            ":due": number(first_poll_at),
            ":expected": expected_version,
        }
        sets = [
            "box_settings = :settings",
            "filters_key = :key",
            "registered_by = :by",
            "registered_at = if_not_exists(registered_at, :now)",
            # A restarted box is due at once; a changed one keeps its schedule.
            "next_poll_at = :due" if restart else "next_poll_at = if_not_exists(next_poll_at, :due)",
        ]
        removes: list[str] = []
        if restart:
            sets += ["#version = :next", "updated_by = :by", "updated_at = :now"]
            values[":next"] = expected_version + 1
            removes += ["#position", "stopped_reason"]
        condition = (
            "#version = :expected" if expected_version else "attribute_not_exists(#version) OR #version = :expected"
        )
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self.table.update_item(
                Key={"feed": feed},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#version": "version", **({"#position": "position"} if restart else {})},
                ExpressionAttributeValues=values,
            )
        except ClientError as failure:
            if conditional_failed(failure):
                raise CursorConflict(f"{feed} changed while its registration was being written") from failure
            raise

    def unregister(self, feed: str) -> bool:
        """Stop polling the box; its cursor and ``filters_key`` stay. False if it was not registered."""
        try:
            self.table.update_item(
                Key={"feed": feed},
                UpdateExpression="REMOVE box_settings, next_poll_at, poll_interval",
                ConditionExpression="attribute_exists(box_settings)",
            )
        except ClientError as failure:
            if conditional_failed(failure):
                return False
            raise
        return True

    def page(self, limit: int, start: dict[str, Any] | None) -> tuple[list[RegisteredBox], dict[str, Any] | None]:
        """Up to ``limit`` registered boxes after the key ``start``, and the key of the last one, to
        go on from (None: nothing follows)."""
        return first(self._registered(start), limit, lambda box: box.feed)

    def _registered(self, start: dict[str, Any] | None = None) -> Iterator[RegisteredBox]:
        items = scanned(
            self.table,
            FilterExpression="begins_with(feed, :prefix) AND attribute_exists(box_settings)",
            ExpressionAttributeValues={":prefix": PREFIX},
            **({"ExclusiveStartKey": start} if start else {}),
        )
        return (registered_box(item) for item in items)
