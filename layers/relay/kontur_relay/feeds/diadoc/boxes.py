"""Diadoc box ids, and a box's feed id: one box is one feed, however its id was spelt.

Diadoc names a box two ways: ``<32 hex digits>@diadoc.ru`` (``BoxId``) and a GUID of the same 32
digits (``BoxIdGuid``, what V8 methods document). Case and braces vary between Diadoc's own answers
and hand-typed ids; both are dropped here, so ``{A1B2...}`` and ``a1b2...`` are the same box.

A new box's feed is ``diadoc:<hex>@diadoc.ru``: the spelling ``discover`` registers and the README
shows, so the feed ids and CloudEvents ``source`` of existing deployments stay as they are. A box
registered under its GUID before keeps that feed (its cursor and its consumers' ``source``); either
spelling finds it (``admin.box_lookup``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from kontur_relay.feeds.diadoc.config import BoxFeed
from kontur_relay.observability import MetricUnit, logger, metrics

_AT_DIADOC = re.compile(r"^([0-9a-fA-F]{32})@diadoc\.ru$", re.IGNORECASE)
_GUID = re.compile(r"^\{?[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?$")
PREFIX = "diadoc:"
SUFFIX = "@diadoc.ru"


def box_id(raw: str) -> str:
    """The id in its own spelling, lower case and without braces; ValueError naming it when it is
    neither form."""
    text = raw.strip()
    at_diadoc = _AT_DIADOC.fullmatch(text)
    if at_diadoc:
        return f"{at_diadoc.group(1).lower()}{SUFFIX}"
    if _GUID.fullmatch(text):
        return str(uuid.UUID(text.strip("{}")))
    raise ValueError(f"{raw!r} is not a Diadoc box id: a GUID, or 32 hexadecimal digits followed by @diadoc.ru")


def identity(raw: str) -> str:
    """The box's 32 hexadecimal digits, whichever spelling names it (ValueError as ``box_id``)."""
    return box_id(raw).removesuffix(SUFFIX).replace("-", "")


def spellings(raw: str) -> tuple[str, str]:
    """The box's two feed ids: its canonical one (``…@diadoc.ru``) and its GUID one."""
    digits = identity(raw)
    return feed_id(f"{digits}{SUFFIX}"), feed_id(str(uuid.UUID(digits)))


def twin(feed: str) -> str | None:
    """The feed of the same box under its other spelling; None for a feed named by no box id."""
    try:
        canonical, guid = spellings(box_of(feed))
    except ValueError:
        return None
    return guid if feed == canonical else canonical


def feed_id(box: str) -> str:
    return f"{PREFIX}{box}"


def box_of(feed: str) -> str:
    return feed.removeprefix(PREFIX)


def filters_key(feed: BoxFeed) -> str:
    """What decides which events a box's feed reads: a cursor is only valid under the same key."""
    return "&".join(f"{name}={value}" for name, value in feed.filters)


def stored_twice(feeds: Iterable[str]) -> list[tuple[str, str]]:
    """The pairs of registered feeds that are one box under both spellings (registered before one
    box was one feed): each of their events is relayed twice, under two ``source`` values."""
    seen: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for feed in feeds:
        try:
            digits = identity(box_of(feed))
        except ValueError:
            continue  # a feed written by hand under no box id: not ours to pair
        if digits in seen:
            first, second = sorted((seen[digits], feed))
            pairs.append((first, second))
        else:
            seen[digits] = feed
    return sorted(pairs)


def report_stored_twice(feeds: Iterable[str]) -> None:
    """Tell operators, on every run that sees them, of boxes relayed twice: a metric for the alarm,
    and a log line naming them (``POST /diadoc/boxes/{boxId}/merge`` makes each one feed)."""
    pairs = stored_twice(feeds)
    metrics.add_metric(name="BoxesStoredTwice", unit=MetricUnit.Count, value=len(pairs))
    if pairs:
        logger.warning(
            "Diadoc boxes are registered under both spellings of their id: their events are relayed twice; "
            "merge each with POST /diadoc/boxes/{boxId}/merge",
            extra={"stored_twice": len(pairs), "pairs": [list(pair) for pair in pairs[:50]]},
        )
