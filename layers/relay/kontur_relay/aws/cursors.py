"""The cursor table in DynamoDB: one item per feed holding its cursor, lease and status.

One item keeps every change to a feed a single conditional write: the cursor moves only at the
version the run read, the lease is taken only when free or expired, and an operator's change to
the cursor is guarded by the same version. What operators read of a feed is in ``aws.feed_status``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from kontur_relay.aws.dynamo import conditional_failed, cursor_state, iso, number
from kontur_relay.aws.feed_status import FeedStatusReads
from kontur_relay.domain.errors import CursorConflict
from kontur_relay.domain.model import CursorState, Success
from kontur_relay.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class DynamoCursorStore(FeedStatusReads):
    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    # -- the relay's side -------------------------------------------------------------------------

    def acquire_lease(self, feed: str, owner: str, until: float) -> CursorState | None:
        # The owner's own name passes the condition: a retry of this very write after a lost answer.
        # The item as the write left it is the cursor as of taking the lease, in the same round trip.
        item = self._lease(
            feed, owner, until, "attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :owner"
        )
        return cursor_state(item) if item is not None else None

    def renew_lease(self, feed: str, owner: str, until: float) -> bool:
        return self._lease(feed, owner, until, "lease_owner = :owner") is not None

    def _lease(self, feed: str, owner: str, until: float, condition: str) -> dict[str, Any] | None:
        """The item after the lease write, or None when its condition failed."""
        try:
            answer = self.table.update_item(
                Key={"feed": feed},
                UpdateExpression="SET lease_owner = :owner, lease_until = :until",
                ConditionExpression=condition,
                ExpressionAttributeValues={
                    ":owner": owner,
                    ":until": number(until),
                    **({":now": number(self.clock())} if ":now" in condition else {}),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if conditional_failed(error):
                return None
            raise
        return answer["Attributes"]

    def release_lease(self, feed: str, owner: str, *, success: Success | None = None) -> None:
        # A run that held the lease ran: its kind is configured, whatever the row said.
        sets, removes, values = _success_update(success, self.clock()) if success is not None else ([], [], {})
        expression = _update(sets, ["lease_owner", "lease_until", "not_configured", *removes])
        try:
            self.table.update_item(
                Key={"feed": feed},
                UpdateExpression=expression,
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues={":owner": owner, **values},
            )
        except ClientError as error:
            if not conditional_failed(error):
                raise
            # Released already (a retry after a lost answer), or it lapsed and another run holds it:
            # either way it is not this run's to remove. The run's success is still its own.
            logger.info("The lease was no longer this run's to release")
            if success is not None:
                self.record_success(feed, backlog=success.backlog, backlog_capped=success.backlog_capped)

    def load(self, feed: str) -> CursorState:
        item = self.table.get_item(Key={"feed": feed}, ConsistentRead=True).get("Item")
        return cursor_state(item or {"feed": feed})

    def advance(self, state: CursorState, position: str | None, *, relayed: int) -> CursorState:
        return self._write_cursor(state.feed, position, state.version, relayed=relayed)

    def record_success(self, feed: str, *, backlog: int | None, backlog_capped: bool) -> None:
        sets, removes, values = _success_update(Success(backlog, backlog_capped), self.clock())
        self.table.update_item(
            Key={"feed": feed},
            UpdateExpression=_update(sets, [*removes, "not_configured"]),
            ExpressionAttributeValues=values,
        )

    def record_failure(self, feed: str, error: str, *, stop: bool = False, not_before: float | None = None) -> None:
        expression = "SET last_error = :error, last_error_at = :now"
        values: dict[str, Any] = {":error": error[:2000], ":now": iso(self.clock())}
        if stop:
            expression += ", stopped_reason = :error"
        if not_before is not None:
            expression += ", not_before = :not_before"
            values[":not_before"] = number(not_before)
        self.table.update_item(Key={"feed": feed}, UpdateExpression=expression, ExpressionAttributeValues=values)

    def mark_not_configured(self, feed: str, problem: str) -> None:
        """Say on the feed's row that its kind cannot run until someone configures it; its next
        successful run (``record_success``, ``release_lease``) clears it."""
        self.table.update_item(
            Key={"feed": feed},
            UpdateExpression="SET not_configured = :problem",
            ExpressionAttributeValues={":problem": problem[:500]},
        )

    # -- the operators' side ----------------------------------------------------------------------

    def set_cursor(self, feed: str, position: str | None, *, expected_version: int, by: str) -> CursorState:
        """Replay or skip: move the cursor anywhere, resume a stopped feed, and say who did it."""
        return self._write_cursor(feed, position, expected_version, relayed=0, by=by)

    # -- shared -----------------------------------------------------------------------------------

    def _write_cursor(
        self, feed: str, position: str | None, expected_version: int, *, relayed: int, by: str | None = None
    ) -> CursorState:
        names = {"#version": "version", "#position": "position"}
        write_id = uuid.uuid4().hex
        values: dict[str, Any] = {
            ":write": write_id,
            ":expected": expected_version,
            ":next": expected_version + 1,
            ":relayed": relayed,
            ":now": iso(self.clock()),
        }
        sets = ["#version = :next", "updated_at = :now", "last_write = :write"]
        removes = []
        if position is None:
            removes.append("#position")
        else:
            sets.append("#position = :position")
            values[":position"] = position
        if by is not None:
            # An operator's write also resumes a stopped feed: acting on it is what the stop asked for.
            sets += ["updated_by = :by", "rewound_at = :rewound"]
            values |= {":by": by, ":rewound": number(self.clock())}
            removes.append("stopped_reason")
        condition = "#version = :expected"
        if expected_version == 0:
            condition = "attribute_not_exists(#version) OR " + condition
        expression = "SET " + ", ".join(sets) + " ADD events_relayed :relayed"
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        try:
            self.table.update_item(
                Key={"feed": feed},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if not conditional_failed(error):
                raise
            # boto3 retries a write whose answer was lost; if the first try landed, the retry finds
            # the version moved, by this very write: its id says so.
            item = self.table.get_item(Key={"feed": feed}, ConsistentRead=True).get("Item") or {}
            if item.get("last_write") != write_id:
                raise CursorConflict(f"the cursor of feed {feed} is no longer at version {expected_version}") from error
            logger.info("A cursor write's answer was lost, but the write had landed")
        return CursorState(feed=feed, position=position, version=expected_version + 1)


def _success_update(success: Success, now: float) -> tuple[list[str], list[str], dict[str, Any]]:
    """A success's part of an update: what it sets, what it removes, and its values."""
    values: dict[str, Any] = {":now": iso(now)}
    if success.backlog is None:
        return ["last_success_at = :now"], ["backlog", "backlog_capped"], values
    values |= {":backlog": success.backlog, ":capped": success.backlog_capped}
    return ["last_success_at = :now", "backlog = :backlog", "backlog_capped = :capped"], [], values


def _update(sets: list[str], removes: list[str]) -> str:
    return (f"SET {', '.join(sets)} " if sets else "") + "REMOVE " + ", ".join(removes)
