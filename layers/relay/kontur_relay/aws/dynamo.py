"""Small helpers every DynamoDB adapter shares: a failed condition, timestamps, optional strings,
a scan's every page, a page of a list, and the cursor an item holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from kontur_relay.domain.model import CursorState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

T = TypeVar("T")


def conditional_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def number(value: float) -> Decimal:
    """A float as DynamoDB takes a number (times, intervals): to the thousandth."""
    return Decimal(str(round(value, 3)))


def text(value: object) -> str | None:
    return None if value is None else str(value)


def scanned(table: Table, **scan: Any) -> Iterator[dict[str, Any]]:
    """Every item of a scan (``scan``: its parameters), page after page: a Scan page ends at 1 MB."""
    while True:
        response = table.scan(**scan)
        yield from response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return
        scan["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def first(items: Iterable[T], limit: int, feed_of: Callable[[T], str]) -> tuple[list[T], dict[str, Any] | None]:
    """Up to ``limit`` of ``items``, and the table key of the last when there are that many (the
    next page starts after it; None: nothing follows)."""
    found: list[T] = []
    for item in items:
        found.append(item)
        if len(found) == limit:
            return found, {"feed": feed_of(item)}
    return found, None


def cursor_state(item: Mapping[str, Any]) -> CursorState:
    """The cursor a feed's item holds (a new feed's: no position, version 0)."""
    return CursorState(
        feed=str(item["feed"]),
        position=text(item.get("position")),
        version=int(item.get("version", 0)),
        stopped_reason=text(item.get("stopped_reason")),
        last_success_at=text(item.get("last_success_at")),
        not_before=None if item.get("not_before") is None else float(item["not_before"]),
        rewound_at=None if item.get("rewound_at") is None else float(item["rewound_at"]),
    )
