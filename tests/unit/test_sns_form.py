"""The PublishBatch body the relay form-encodes itself (``sinks.sns_form``): whatever the entries hold,
SNS must decode exactly the fields botocore's own query serializer would have sent."""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import parse_qsl

import botocore.session
import pytest
from botocore.serialize import create_serializer
from hypothesis import given
from hypothesis import strategies as st

from kontur_relay.sinks.sns_form import form, percent_encoded

OPERATION = botocore.session.get_session().get_service_model("sns").operation_model("PublishBatch")
#: Any text a message can hold (lone surrogates cannot be sent as UTF-8 at all).
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=1, max_size=20)
ATTRIBUTES = st.dictionaries(
    NAMES,
    st.fixed_dictionaries({"DataType": st.sampled_from(["String", "String.Array", "Number"]), "StringValue": TEXT}),
    max_size=9,
)
ENTRY = st.fixed_dictionaries(
    {"Message": TEXT},
    optional={"MessageAttributes": ATTRIBUTES, "MessageGroupId": TEXT, "MessageDeduplicationId": TEXT},
)


def botocore_fields(topic: str, entries: list[dict[str, Any]]) -> dict[str, str]:
    params = {"TopicArn": topic, "PublishBatchRequestEntries": entries}
    body: dict[str, str] = create_serializer("query").serialize_to_request(params, OPERATION)["body"]
    return body


@given(topic=TEXT, entries=st.lists(ENTRY, min_size=1, max_size=10))
def test_the_body_decodes_to_the_fields_botocore_would_have_serialized(
    topic: str, entries: list[dict[str, Any]]
) -> None:
    entries = [{"Id": str(number), **entry} for number, entry in enumerate(entries)]
    rest_of_the_call = {name: value for name, value in botocore_fields(topic, []).items() if "Entries" not in name}

    body = form(rest_of_the_call, entries)

    assert dict(parse_qsl(body, keep_blank_values=True, strict_parsing=True)) == botocore_fields(topic, entries)


def test_a_value_with_nothing_to_escape_goes_as_it_is_and_any_other_is_escaped_byte_for_byte() -> None:
    assert percent_encoded("PublishBatch") == "PublishBatch"
    assert percent_encoded('Сдан "1"') == "%D0%A1%D0%B4%D0%B0%D0%BD%20%22%31%22"


def test_an_entry_field_the_encoder_does_not_know_is_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="MessageBody"):
        form({"Action": "PublishBatch"}, [{"Id": "0", "MessageBody": "x"}])
