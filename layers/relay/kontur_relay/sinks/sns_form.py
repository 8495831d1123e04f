"""A PublishBatch request's body, form-encoded in one pass (the SNS sink's hot path).

SNS speaks the query protocol: every message travels as form fields named after the operation's
shape (``PublishBatchRequestEntries.member.1.MessageAttributes.entry.2.Value.StringValue``).
botocore builds them by walking the shape field by field in Python, then url-encodes them byte by
byte (``urlencode``): for ten 2 KB events with eight attributes each, 260 fields and a third of the
publish path's CPU. ``register`` makes a botocore SNS client leave the entries to this module: it
serializes the rest of the call, and signs and sends this body. The layout is botocore's serializer's
(``tests/unit/test_sns_form.py`` holds the two equal for any entries); everything else (endpoint,
credentials, SigV4, retries, parsing) stays botocore's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Where the entries wait between botocore's two events of one call.
_ENTRIES = "kontur_relay_entries"
_MEMBERS = "PublishBatchRequestEntries"
#: What form encoding leaves as it is: letters, digits and ``_.-~``.
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
#: An entry's fields that are plain strings (the other is MessageAttributes).
_SCALARS = frozenset({"Id", "Message", "Subject", "MessageStructure", "MessageDeduplicationId", "MessageGroupId"})


def register(events: Any) -> None:
    """Hook PublishBatch of the SNS client whose ``meta.events`` is ``events``."""
    events.register("before-parameter-build.sns.PublishBatch", _set_entries_aside, unique_id=_ENTRIES + "-aside")
    events.register("before-call.sns.PublishBatch", _encode_body, unique_id=_ENTRIES + "-encode")


def _set_entries_aside(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    entries = context[_ENTRIES] = params.get("PublishBatchRequestEntries", [])
    # What botocore validates (where a client does) and serializes: the call with bare entries.
    params["PublishBatchRequestEntries"] = [{"Id": entry["Id"], "Message": ""} for entry in entries]


def _encode_body(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    # What the serializer made of the rest of the call: Action, Version, TopicArn.
    fields = {name: value for name, value in params["body"].items() if not name.startswith(_MEMBERS)}
    params["body"] = form(fields, context.pop(_ENTRIES)).encode()


def form(fields: Mapping[str, str], entries: Sequence[Mapping[str, Any]]) -> str:
    """``fields`` and then ``entries`` as PublishBatch's form body."""
    parts = [f"{name}={percent_encoded(value)}" for name, value in fields.items()]
    for number, entry in enumerate(entries, 1):
        member = f"{_MEMBERS}.member.{number}."
        for name, value in entry.items():
            if name == "MessageAttributes":
                for index, (key, attribute) in enumerate(value.items(), 1):
                    prefix = f"{member}MessageAttributes.entry.{index}."
                    parts.append(f"{prefix}Name={percent_encoded(key)}")
                    parts.append(f"{prefix}Value.DataType={percent_encoded(attribute['DataType'])}")
                    parts.append(f"{prefix}Value.StringValue={percent_encoded(attribute['StringValue'])}")
            elif name in _SCALARS:
                parts.append(f"{member}{name}={percent_encoded(value)}")
            else:
                raise ValueError(f"a PublishBatch entry field this encoder does not know: {name}")
    return "&".join(parts)


def percent_encoded(value: str) -> str:
    """A form value with every byte as ``%XX`` unless none needs escaping. Any form decoder reads
    it as ``urlencode``'s: the standard allows escaping any byte. ``urlencode`` escapes byte by byte
    in Python, about 40 µs a KB; ``bytes.hex`` does the whole value in C. The cost is size on the
    wire: an ASCII value triples (Cyrillic grows by a sixth), so a full batch is at most 768 KiB,
    what ``urlencode`` itself sends for 256 KiB of Cyrillic text."""
    data = value.encode()
    if not data.rstrip(_UNRESERVED):
        return value
    return "%" + data.hex("%").upper()
