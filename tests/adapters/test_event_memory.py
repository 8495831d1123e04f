"""The boxes' memories in DynamoDB Local (the template's EventMemoryTable): chunks read back after a key,
in the order written, with their expiry; a box's memory built from them drops what it published."""

from __future__ import annotations

from typing import Any

import boto3

from kontur_relay.aws.event_memory import DynamoEventMemory, chunk_key
from kontur_relay.domain.model import FeedEvent
from kontur_relay.feeds.diadoc.events import ReadEvent
from kontur_relay.feeds.diadoc.memory import RECORD, BoxMemory
from local_stack.template import Stack
from tests.fakes import FakeClock


def store(stack: Stack, clock: FakeClock) -> DynamoEventMemory:
    return DynamoEventMemory(boto3.resource("dynamodb").Table(stack.physical["EventMemoryTable"]), clock=clock)


def read(event_id: str, key: str = "k", ticks: int = 1) -> ReadEvent:
    return ReadEvent(FeedEvent(id=event_id, type="t", data={}), index_key=key, ticks=ticks)


def test_chunks_come_back_after_a_key_in_the_order_written_and_expire(stack: Stack, aws: dict[str, Any]) -> None:
    clock = FakeClock()
    memories = store(stack, clock)
    first = memories.write("diadoc:a", b"\x01" * RECORD.size, keep=600)
    clock.advance(1)
    second = memories.write("diadoc:a", b"\x02" * RECORD.size * 2, keep=600)
    memories.write("diadoc:b", b"\x03" * RECORD.size, keep=600)

    assert [chunk.key for chunk in memories.chunks("diadoc:a", chunk_key(0))] == [first.key, second.key]
    assert [chunk.records for chunk in memories.chunks("diadoc:a", first.key)] == [second.records]
    assert list(memories.chunks("diadoc:a", chunk_key(clock() + 1))) == []
    item = aws["dynamodb"].get_item(
        TableName=stack.physical["EventMemoryTable"], Key={"feed": {"S": "diadoc:a"}, "chunk": {"S": first.key}}
    )["Item"]
    assert int(item["expires"]["N"]) >= clock() - 1 + 600


def test_a_memory_read_again_by_another_container_drops_what_was_published(stack: Stack, aws: dict[str, Any]) -> None:
    clock = FakeClock()
    one = BoxMemory("diadoc:a", store(stack, clock), keep=600, clock=clock)
    fresh = one.sort([read("e1"), read("e2", "k2")])
    one.remember([item.event for item in fresh])

    other = BoxMemory("diadoc:a", store(stack, clock), keep=600, clock=clock)
    kept = other.sort([read("e1"), read("e2", "k9"), read("e3", "k3")])

    assert [item.event.id for item in kept] == ["e3"]
    assert other.take_duplicates() == 1, "e2 came again under another key"
    assert other.count(0, 10) == 2
    clock.advance(601)
    assert [item.event.id for item in other.sort([read("e1")])] == ["e1"], "forgotten after its keep"
