"""What a running local stack holds: its options, stack, feeds, function runners and what it has seen."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_stack.cli import Options
from local_stack.feeds import FeedKit
from local_stack.queues import QueueConsumer
from local_stack.scenarios import SimulatedFeed
from local_stack.scheduler import FunctionRunner, Invocation, Scheduler
from local_stack.template import ROOT, Stack

#: What a run leaves behind: the stack's log, and the handlers' under logs/.
LOCAL_DIR = ROOT / ".local"
LOG_DIR = LOCAL_DIR / "logs"


@dataclass
class FeedRun:
    """One feed in this run: its kit, its simulators or real credentials, its function."""

    kit: FeedKit
    simulated: SimulatedFeed | None = None
    credentials: dict[str, Any] | None = None
    #: Template parameters for this feed: the simulators' URLs, or a real API URL.
    parameters: dict[str, str] = field(default_factory=dict)
    #: Where real credentials came from, to write a rotated refresh token back.
    credentials_file: Path | None = None


@dataclass
class Runtime:
    """The running stack, as the run loop, the view and the summary read it."""

    options: Options
    stack: Stack
    clients: dict[str, Any]
    feeds: list[FeedRun]
    runners: dict[str, FunctionRunner]
    scheduler: Scheduler
    consumer: QueueConsumer | None
    header: list[str]
    #: Each HTTP front's URL, by the front's name.
    fronts: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    relayed_at_start: dict[str, int] = field(default_factory=dict)
    history: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    status_error: str | None = None
    invocations: list[Invocation] = field(default_factory=list)
