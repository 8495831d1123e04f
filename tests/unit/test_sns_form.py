"""The PublishBatch body the relay form-encodes itself (``aws.sns.encode_form_once``): whatever a
message holds, SNS must decode exactly the fields botocore serialized."""

from __future__ import annotations

import string
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from kontur_relay.aws.sns import encode_form_once

#: botocore's query serializer names fields like ``PublishBatchRequestEntries.member.1.Message``.
FIELD_NAMES = st.text(alphabet=string.ascii_letters + string.digits + ".", min_size=1, max_size=60)
#: Any text a message can hold (lone surrogates cannot be sent as UTF-8 at all).
VALUES = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=300)


@given(st.dictionaries(FIELD_NAMES, VALUES, max_size=12))
def test_the_body_decodes_to_the_fields_botocore_serialized(fields: dict[str, str]) -> None:
    params: dict[str, object] = {"body": dict(fields)}

    encode_form_once(params)

    body = params["body"]
    assert isinstance(body, bytes)
    assert dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(fields))) == fields


def test_a_value_with_nothing_to_escape_goes_as_it_is_and_any_other_is_escaped_byte_for_byte() -> None:
    params: dict[str, object] = {"body": {"Action": "PublishBatch", "Message": 'Сдан "1"'}}

    encode_form_once(params)

    assert params["body"] == b"Action=PublishBatch&Message=%D0%A1%D0%B4%D0%B0%D0%BD%20%22%31%22"


def test_a_body_already_encoded_is_left_as_it_is() -> None:
    params: dict[str, object] = {"body": b"Action=Publish"}
    encode_form_once(params)
    assert params["body"] == b"Action=Publish"
