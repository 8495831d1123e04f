"""The live terminal view: per feed its cursor, events relayed, rate, backlog and last error, and the
latest messages arriving on the demo queues.

On a terminal the view redraws in place; otherwise (a pipe, a CI log) it prints a few plain lines
every few seconds. Handler logs never reach it: they go to files under ``.local/``.
"""

from __future__ import annotations

import shutil
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


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render(snapshot: Snapshot, *, messages: int = 8) -> list[str]:
    lines = [f"Kontur Feed Relay, local stack: {snapshot.phase}", *snapshot.header, ""]
    width = min(max([10, *(len(row.feed) for row in snapshot.feeds)]), 50)
    lines.append(
        f"{'feed':<{width}} {'cursor':<16} {'relayed':>8} {'rate/s':>7} {'backlog':>8} {'runs':>6}  last error"
    )
    for row in snapshot.feeds:
        backlog = "-" if row.backlog is None else f"{row.backlog}{'+' if row.backlog_capped else ''}"
        runs = f"{row.runs}" + (f"/{row.failed_runs}!" if row.failed_runs else "")
        state = "stopped: " + row.stopped_reason if row.stopped_reason else row.last_error
        lines.append(
            f"{_short(row.feed, width):<{width}} {_short(row.cursor, 16):<16} {row.relayed:>8} {row.rate:>7.1f} "
            f"{backlog:>8} {runs:>6}  {'●' if row.running else ' '} {_short(state, 200)}"
        )
    lines.append("")
    for queue in snapshot.queues:
        lines.append(
            f"queue {queue.name:<24} {queue.messages:>7} messages {queue.distinct:>7} events "
            f"{queue.duplicates:>4} duplicates   {queue.filter}"
        )
    if snapshot.messages and messages:
        lines.append("")
        lines.append("latest messages:")
        for message in list(snapshot.messages)[-messages:]:
            shown = [name for name in SHOWN_ATTRIBUTES if name in message.attributes]
            attributes = " ".join(f"{name}={message.attributes[name]}" for name in shown)
            lines.append(
                f"  {time.strftime('%H:%M:%S', time.localtime(message.at))} {_short(message.queue, 24):<24} "
                f"{message.id:<12} {message.type}  subject={_short(message.subject, 36)}  {attributes}"
            )
    if snapshot.footer:
        lines.append("")
        lines.extend(snapshot.footer)
    return lines


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
            self._redraw(render(snapshot))
            return
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_interval:
            self._last_plain = now
            self._plain(snapshot)

    def _redraw(self, lines: list[str]) -> None:
        size = shutil.get_terminal_size((120, 40))
        lines = [line[: size.columns - 1] for line in lines][: max(size.lines - 2, 10)]
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
