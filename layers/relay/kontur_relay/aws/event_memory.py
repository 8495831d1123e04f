"""The Diadoc boxes' memories of what they published lately (``feeds.diadoc.memory``), in their own
DynamoDB table: one item per chunk, under the box's feed id, sorted by when it was written.

A table of its own, not the cursor table: the poller scans the cursor table every run, and a Scan
bills every item it reads. Chunks are small items written once (a page's entries, 24 bytes each)
and expire by TTL; a box's memory is read with one Query over the chunks written since the last read.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


@dataclass(frozen=True)
class Chunk:
    """What one write added to a box's memory: its records (``feeds.diadoc.memory.RECORD`` each).
    ``key`` sorts by when it was written."""

    key: str
    written_at: float
    records: bytes


def chunk_key(moment: float) -> str:
    """The lowest key of a chunk written at ``moment`` (keys are milliseconds, then a random tail)."""
    return f"{int(moment * 1000):013d}"


class DynamoEventMemory:
    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    def chunks(self, feed: str, after: str) -> Iterator[Chunk]:
        # A string, not boto3's condition objects: their expression builder is shared by the
        # resource's threads, and two boxes' queries at once would mix their placeholders.
        query: dict[str, Any] = {
            "KeyConditionExpression": "#feed = :feed AND #chunk > :after",
            "ExpressionAttributeNames": {"#feed": "feed", "#chunk": "chunk"},
            "ExpressionAttributeValues": {":feed": feed, ":after": after},
        }
        while True:
            response = self.table.query(**query)
            for item in response.get("Items", []):
                yield Chunk(str(item["chunk"]), float(item["written_at"]), bytes(item["records"]))  # type: ignore[arg-type]
            if "LastEvaluatedKey" not in response:
                return
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def write(self, feed: str, records: bytes, *, keep: float) -> Chunk:
        now = self.clock()
        # Milliseconds sort the chunks; the random tail keeps two writes of one millisecond apart.
        chunk = Chunk(f"{chunk_key(now)}-{secrets.token_hex(3)}", now, records)
        self.table.put_item(
            Item={
                "feed": feed,
                "chunk": chunk.key,
                "written_at": Decimal(str(round(now, 3))),
                "records": records,
                # DynamoDB's TTL deletes within days of this; reads never go back that far anyway.
                "expires": int(now + keep) + 1,
            }
        )
        return chunk
