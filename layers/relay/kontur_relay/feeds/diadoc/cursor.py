"""A Diadoc box's cursor: where its next read starts, and what it already published there.

Diadoc reads strictly after an IndexKey (``afterIndexKey``; ``afterEventId`` alike), and two events
may share one: signing a draft makes a Patch and a Message with one key. A cursor at the key of a
page's last event would skip a sibling the page did not reach. So the cursor never ends inside a
group of events sharing a key: its **base** is the position before the page's final group, and it
lists the **seen** EventIds of that group. The next read at the base returns the group again; the
seen events are dropped and only what is new is published. It stays opaque to the engine and the
cursor store, one string:

    <base>[~seen:<EventId>,<EventId>...][~floor:<ticks>]

- base: an IndexKey (read after it), ``~oldest`` (from the box's first event) or ``~since:<ticks>``
  (from a moment, .NET ticks); no cursor at all means where the box's ``start`` says;
- seen: the final group's EventIds already published (a few: a group is a pair in practice);
- floor: the moment before which reconciliation never reads (an operator's skip stays a skip).
  ``~since:<ticks>`` is its own floor; later cursors carry it on.

An IndexKey is base64 in practice; ``~``, ``,`` and ``%`` are percent-encoded in the text, so any
key reads back as it was.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from kontur_relay.feeds.diadoc.ticks import MAX_TICKS

FROM_OLDEST = "~oldest"
SINCE = "~since:"
SEEN = "~seen:"
FLOOR = "~floor:"
#: The most EventIds a cursor remembers at its base: a group larger than this (never seen in
#: practice) is read past by its key, its rest left to reconciliation. 20 GUIDs keep a cursor
#: well inside the admin API's 1024 characters.
MAX_SEEN = 20
VALID = (
    "a Diadoc cursor is an IndexKey Diadoc gave (e.g. XKL/+DdR9NPixD1Bxue2t44=), ~oldest, or ~since:<.NET ticks>, "
    f"optionally followed by ~seen:<EventId>,... (at most {MAX_SEEN}) and ~floor:<.NET ticks> as GET /feeds shows "
    "them; or send a timestamp instead of a cursor"
)
_CURSOR = re.compile(
    r"(?P<base>~oldest|~since:(?P<since>[0-9]{1,19})|[!-}]+)(?:~seen:(?P<seen>[!-}]+))?(?:~floor:(?P<floor>[0-9]{1,19}))?"
)


@dataclass(frozen=True)
class Position:
    """A parsed cursor. ``base`` None: no cursor yet (where the box's ``start`` says)."""

    base: str | None = None
    seen: tuple[str, ...] = ()
    floor: int | None = None

    @classmethod
    def parse(cls, cursor: str | None) -> Position:
        """The cursor's position; ValueError saying what a valid cursor is."""
        if cursor is None:
            return cls()
        found = _CURSOR.fullmatch(cursor)
        seen = tuple(unquote(event) for event in found["seen"].split(",")) if found and found["seen"] else ()
        if found is None or not all(seen) or len(seen) > MAX_SEEN:
            raise ValueError(f"{cursor!r} is not a cursor: {VALID}")
        since, floor = found["since"], found["floor"]
        base = f"{SINCE}{_ticks(since, cursor)}" if since else found["base"]
        return cls(base if base.startswith("~") else unquote(base), seen, _ticks(floor, cursor) if floor else None)

    @property
    def after(self) -> str | None:
        """The IndexKey the next read starts after (``afterIndexKey``), if the base is one."""
        return None if self.base is None or self.base.startswith("~") else self.base

    @property
    def since(self) -> int | None:
        """The moment the next read starts from (``timestampFromTicks``), if the base is one."""
        return int(self.base.removeprefix(SINCE)) if self.base and self.base.startswith(SINCE) else None

    @property
    def reconciles_from(self) -> int | None:
        """The earliest moment reconciliation may read back to (None: no bound of its own)."""
        return self.floor if self.floor is not None else self.since

    def text(self) -> str | None:
        if self.base is None:
            return None
        text = self.base if self.base.startswith("~") else _escape(self.base)
        if self.seen:
            text += SEEN + ",".join(_escape(event) for event in self.seen)
        if self.floor is not None:
            text += f"{FLOOR}{self.floor}"
        return text

    def after_page(self, entries: Sequence[tuple[str, str]]) -> tuple[Position, bool]:
        """The position after a page read here, from its (EventId, IndexKey) pairs in order; and
        whether a group too large to remember was read past by its key."""
        if not entries:
            return self, False
        last_key = entries[-1][1]
        group = len(entries)
        while group > 0 and entries[group - 1][1] == last_key:
            group -= 1
        floor = self.reconciles_from
        if group == 0:
            # The whole page is one group: the base stays, the group's new events join the seen.
            base, seen = self.base, tuple(dict.fromkeys((*self.seen, *(event for event, _ in entries))))
        else:
            base, seen = entries[group - 1][1], tuple(dict.fromkeys(event for event, _ in entries[group:]))
        if len(seen) > MAX_SEEN:
            return Position(last_key, (), floor), True
        return Position(base, seen, floor), False


def at_moment(ticks: int) -> Position:
    """Reading from a moment on (an operator's timestamp): its own floor."""
    return Position(f"{SINCE}{ticks}")


def _ticks(text: str, cursor: str) -> int:
    if not 0 < int(text) <= MAX_TICKS:
        raise ValueError(f"{cursor!r} is not a cursor: {VALID}")
    return int(text)


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("~", "%7E").replace(",", "%2C")
