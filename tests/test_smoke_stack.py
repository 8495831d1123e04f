import boto3
import pytest

from kontur_relay.dynamo import DynamoCursorStore
from kontur_relay.errors import CursorConflict


def test_template_resources_exist_and_cursor_moves_only_at_its_version(stack):
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    store = DynamoCursorStore(table)
    state = store.load("extern")
    assert (state.position, state.version) == (None, 0)
    moved = store.advance(state, "1_a", relayed=3)
    assert store.load("extern").position == "1_a"
    with pytest.raises(CursorConflict):
        store.advance(state, "0_5", relayed=1)
    assert store.load("extern") == moved
    assert stack.physical["EventsTopic"].startswith("arn:aws:sns:")
