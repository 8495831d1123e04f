"""Diadoc box ids, and a box's feed id: one box is one feed, however its id was spelt.

Diadoc names a box two ways: ``<32 hex digits>@diadoc.ru`` (``BoxId``) and a GUID (``BoxIdGuid``,
what V8 methods expect). Case and braces vary between Diadoc's own answers and hand-typed ids;
both are dropped here, so ``{A1B2...}`` and ``a1b2...`` are the same feed.
"""

from __future__ import annotations

import re
import uuid

from kontur_relay.feeds.diadoc.config import BoxFeed

_AT_DIADOC = re.compile(r"^([0-9a-fA-F]{32})@diadoc\.ru$", re.IGNORECASE)
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?$")
PREFIX = "diadoc:"


def box_id(raw: str) -> str:
    """The canonical spelling of a box id; ValueError naming it when it is neither form."""
    text = raw.strip()
    at_diadoc = _AT_DIADOC.fullmatch(text)
    if at_diadoc:
        return f"{at_diadoc.group(1).lower()}@diadoc.ru"
    if _GUID.fullmatch(text):
        return str(uuid.UUID(text.strip("{}")))
    raise ValueError(f"{raw!r} is not a Diadoc box id: a GUID, or 32 hexadecimal digits followed by @diadoc.ru")


def feed_id(box: str) -> str:
    return f"{PREFIX}{box}"


def box_of(feed: str) -> str:
    return feed.removeprefix(PREFIX)


def filters_key(feed: BoxFeed) -> str:
    """What decides which events a box's feed reads: a cursor is only valid under the same key."""
    return "&".join(f"{name}={value}" for name, value in feed.filters)
