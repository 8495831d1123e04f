"""The live terminal view: per feed its cursor, events relayed, rate, backlog and last error, and the
latest messages arriving on the demo queues.

On a terminal the view redraws in place, within the terminal's size: 80 columns at most, and on a
short terminal (24 lines) the header folds away before the feed table would. Otherwise (a pipe, a
CI log) it prints a few plain lines every few seconds. Handler logs never reach it: they go to
files under ``.local/``.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from local_stack.queues import Received

#: The message attributes a line of the view shows, in this order (a subscriber's usual filter keys).
SHOWN_ATTRIBUTES = ("feed", "new_state", "docflow_type", "inn", "kpp", "message_type", "box_id")


@dataclass(frozen=True)
class FeedRow:
    feed: str
    cursor: str | None
    relayed: int
    #: Events per second over the last few seconds.
    rate: float
    backlog: int | None
    backlog_capped: bool
    last_error: str | None
    stopped_reason: str | None
    running: bool
    runs: int
    failed_runs: int
    last_outcome: str | None


@dataclass(frozen=True)
class QueueRow:
    name: str
    filter: str
    messages: int
    distinct: int
    duplicates: int


@dataclass(frozen=True)
class Snapshot:
    #: What the stack is doing: "running 12s of 30s", "catching up", ...
    phase: str
    header: Sequence[str]
    feeds: Sequence[FeedRow]
    queues: Sequence[QueueRow]
    messages: Sequence[Received] = ()
    footer: Sequence[str] = ()


#: The view fits a default terminal: every line at most this wide (the table by design, the rest cut).
WIDTH = 80


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _middle(text: str, width: int) -> str:
    """A long feed id keeps both ends: ``diadoc:0999…@diadoc.ru``."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _wrapped(lines: Sequence[str], width: int) -> list[str]:
    """Header lines wrapped at spaces, never inside a URL or a name."""
    out: list[str] = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 2)
        out.extend(
            textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [""]
        )
    return out


def feed_table(feeds: Sequence[FeedRow], width: int) -> list[str]:
    # 22 + 12 + 8 + 6 + 7 + 6 and their gaps: 68 columns; a row's error goes on a line of its own.
    lines = [f"{'feed':<22} {'cursor':<12} {'relayed':>8} {'rate/s':>6} {'backlog':>7} {'runs':>6}"]
    for row in feeds:
        backlog = "-" if row.backlog is None else f"{row.backlog}{'+' if row.backlog_capped else ''}"
        runs = f"{row.runs}" + (f"/{row.failed_runs}!" if row.failed_runs else "")
        lines.append(
            f"{_middle(row.feed, 22):<22} {_short(row.cursor, 12):<12} {row.relayed:>8} {row.rate:>6.1f} "
            f"{backlog:>7} {runs:>6} {'●' if row.running else ' '}"
        )
        state = "stopped: " + row.stopped_reason if row.stopped_reason else row.last_error
        if state:
            lines.append(f"  └ {_short(state, width - 4)}")
    return lines


def queue_lines(queues: Sequence[QueueRow]) -> list[str]:
    return [
        f"queue {_short(queue.name, 16):<16} {queue.messages:>6} msgs {queue.distinct:>6} events "
        f"{queue.duplicates:>3} dup  {queue.filter}"
        for queue in queues
    ]


def message_lines(messages: Sequence[Received]) -> list[str]:
    lines = ["latest messages:"] if messages else []
    for message in messages:
        shown = [name for name in SHOWN_ATTRIBUTES if name in message.attributes]
        attributes = " ".join(f"{name}={message.attributes[name]}" for name in shown)
        lines.append(
            f"  {time.strftime('%H:%M:%S', time.localtime(message.at))} {_short(message.queue, 16):<16} "
            f"{_short(message.id, 12):<12} {_short(message.subject, 14)} {attributes}"
        )
    return lines


#: What stands for the header when the terminal is too short for it.
FOLDED = "(header folded: a taller terminal shows it; endpoints in .local/endpoints.json)"


def render(snapshot: Snapshot, *, messages: int = 8, width: int = WIDTH, height: int | None = None) -> list[str]:
    """The view's lines; with ``height``, at most that many. The feed table always stays: on a short
    terminal the header folds into one line first, then the latest messages go, then the queues."""
    title = [f"Kontur Feed Relay, local stack: {snapshot.phase}"]
    header = _wrapped(snapshot.header, width)
    table = feed_table(snapshot.feeds, width)
    queues = queue_lines(snapshot.queues)
    latest = message_lines(list(snapshot.messages)[-messages:] if messages else [])
    footer = _wrapped(snapshot.footer, width)
    if height is not None:
        # Each section after the title is preceded by a blank line.
        room = height - len(title) - len(table) - 1
        footer, room = _fit(footer, room)
        queues, room = _fit(queues, room)
        folded, room = _fit(_wrapped([FOLDED], width), room)
        if len(header) <= room + len(folded):
            room -= len(header) - len(folded)
        else:
            header = folded
        # The newest messages, and the line that introduces them, if at least one fits.
        shown = max(0, min(len(latest) - 1, room - 2))
        latest = latest[:1] + latest[len(latest) - shown :] if shown else []
    lines = title + header
    for section in (table, queues, latest, footer):
        if section:
            lines += ["", *section]
    # Wrapped lines keep URLs whole; anything else still too wide is cut, marked.
    return [line if len(line) <= width or "://" in line else line[: width - 1] + "…" for line in lines]


def _fit(section: list[str], room: int) -> tuple[list[str], int]:
    """The section, and the room left, if it fits with its blank line; else nothing."""
    needed = len(section) + 1 if section else 0
    return (section, room - needed) if needed <= room else ([], room)


@dataclass
class LiveView:
    """Draws snapshots: in place on a terminal, as periodic plain lines elsewhere."""

    out: TextIO
    tty: bool
    #: Seconds between two plain prints (a terminal redraws on every call).
    plain_interval: float = 5.0
    _drawn: int = 0
    _last_plain: float = field(default=0.0)
    _header_shown: bool = False

    def show(self, snapshot: Snapshot, *, force: bool = False) -> None:
        if self.tty:
            self._redraw(snapshot)
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_interval:
            self._last_plain = now
            self._plain(snapshot)

    def _redraw(self, snapshot: Snapshot) -> None:
        size = shutil.get_terminal_size((120, 40))
        # The last column and line stay free: writing there would scroll some terminals by a line.
        width = min(WIDTH, size.columns - 1)
        lines = [line[:width] for line in render(snapshot, width=width, height=size.lines - 1)]
        # Back to where the last frame started, then overwrite it line by line.
        prefix = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.out.write(prefix + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()
        self._drawn = len(lines)

    def _plain(self, snapshot: Snapshot) -> None:
        parts: list[str] = []
        if not self._header_shown:
            self._header_shown = True
            parts.extend(snapshot.header)
        for row in snapshot.feeds:
            error = f" error={_short(row.last_error, 120)}" if row.last_error else ""
            parts.append(
                f"[{snapshot.phase}] {row.feed}: cursor={row.cursor or '-'} relayed={row.relayed} "
                f"rate={row.rate:.1f}/s backlog={'-' if row.backlog is None else row.backlog} "
                f"runs={row.runs} failed={row.failed_runs}{error}"
            )
        for queue in snapshot.queues:
            parts.append(
                f"[{snapshot.phase}] queue {queue.name}: {queue.messages} messages, {queue.distinct} events, "
                f"{queue.duplicates} duplicates"
            )
        if snapshot.messages:
            last = snapshot.messages[-1]
            parts.append(f"[{snapshot.phase}] latest: {last.queue} {last.id} {last.type} {last.subject or '-'}")
        self.out.write("".join(f"{part}\n" for part in parts))
        self.out.flush()

    def release(self) -> None:
        """Leave the last frame on screen; what is printed next starts below it."""
        self._drawn = 0
