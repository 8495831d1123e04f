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
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.conditions import Key

from kontur_relay.feeds.diadoc.memory import Chunk, chunk_key

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table


class DynamoEventMemory:
    def __init__(self, table: Table, *, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self.clock = clock

    def chunks(self, feed: str, after: str) -> Iterator[Chunk]:
        query: dict[str, Any] = {"KeyConditionExpression": Key("feed").eq(feed) & Key("chunk").gt(after)}
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
