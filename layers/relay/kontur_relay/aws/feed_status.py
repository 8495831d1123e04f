"""What operators see of a feed: ``FeedStatus``, read from the cursor table's items by the cursor
store's operator-side reads (``FeedStatusReads``, mixed into ``DynamoCursorStore``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kontur_relay.aws.dynamo import first, scanned, text

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


@dataclass(frozen=True)
class FeedStatus:
    """What operators see of a feed (the admin API's ``GET /feeds``)."""

    feed: str
    cursor: str | None
    version: int
    events_relayed: int
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    backlog: int | None
    backlog_capped: bool
    stopped_reason: str | None
    #: Why the feed's kind cannot run yet (its credentials secret is empty); None once it can.
    not_configured: str | None
    running: bool
    updated_by: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FeedStatusReads:
    """The operators' reads of the cursor table: one feed's status, every feed's, or a page of them."""

    table: Table
    clock: Callable[[], float]

    def status(self, feed: str) -> FeedStatus | None:
        item = self.table.get_item(Key={"feed": feed}, ConsistentRead=True).get("Item")
        return None if item is None else self._status(item)

    def statuses(self) -> Iterator[FeedStatus]:
        return (self._status(item) for item in scanned(self.table))

    def page(
        self, limit: int, start: dict[str, Any] | None, *, keep: Callable[[str], bool]
    ) -> tuple[list[FeedStatus], dict[str, Any] | None]:
        """Up to ``limit`` feeds whose id ``keep`` accepts, after the key ``start``; and the key of
        the last one, to go on from (None: nothing follows). The table also holds items that are no
        feed (a poller's lease), which ``keep`` leaves out."""
        items = scanned(self.table, **({"ExclusiveStartKey": start} if start else {}))
        return first((self._status(item) for item in items if keep(str(item["feed"]))), limit, lambda found: found.feed)

    def _status(self, item: dict[str, Any]) -> FeedStatus:
        lease_until = item.get("lease_until")
        return FeedStatus(
            feed=str(item["feed"]),
            cursor=text(item.get("position")),
            version=int(item.get("version", 0)),
            events_relayed=int(item.get("events_relayed", 0)),
            last_success_at=text(item.get("last_success_at")),
            last_error=text(item.get("last_error")),
            last_error_at=text(item.get("last_error_at")),
            backlog=None if item.get("backlog") is None else int(item["backlog"]),
            backlog_capped=bool(item.get("backlog_capped", False)),
            stopped_reason=text(item.get("stopped_reason")),
            not_configured=text(item.get("not_configured")),
            running=lease_until is not None and float(lease_until) > self.clock(),
            updated_by=text(item.get("updated_by")),
        )
