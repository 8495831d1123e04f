"""What the live view shows, read from the cursor table, the function runners and the demo queues."""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import boto3

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.aws.feed_status import FeedStatus
from local_stack.runtime import LOG_DIR, Runtime
from local_stack.scheduler import FunctionRunner
from local_stack.template import ROOT
from local_stack.view import FeedRow, QueueRow, Snapshot


def snapshot(runtime: Runtime, phase: str) -> Snapshot:
    table = runtime.stack.physical.get("CursorsTable")
    statuses = {}
    if table:
        try:
            store = DynamoCursorStore(boto3.resource("dynamodb").Table(table))
            statuses = {status.feed: status for status in store.statuses()}
            runtime.status_error = None
        except Exception as error:  # noqa: BLE001 - shown in the view; the next refresh tries again
            runtime.status_error = f"reading the cursor table failed: {error}"
    now = time.monotonic()
    rows = []
    for run in runtime.feeds:
        owned = sorted(feed for feed in statuses if run.kit.owns(feed)) or [run.kit.feed]
        runner = runtime.runners.get(run.kit.function)
        for feed in owned:
            rows.append(feed_row(runtime, feed, statuses.get(feed), runner, now))
    queues = []
    messages: list[Any] = []
    if runtime.consumer is not None:
        for queue in runtime.consumer.queues:
            queues.append(
                QueueRow(
                    name=queue.label,
                    filter=f"filter {json.dumps(queue.filter_policy)}" if queue.filter_policy else "no filter",
                    messages=queue.messages,
                    distinct=len(queue.received),
                    duplicates=queue.duplicates,
                )
            )
        messages = runtime.consumer.latest(8)
    footer = [f"handler logs: {LOG_DIR.relative_to(ROOT)}/<function>.log; Ctrl-C stops"]
    if runtime.status_error:
        footer.insert(0, runtime.status_error)
    fronts = [f"{name}: {url}" for name, url in runtime.fronts.items()]
    return Snapshot(phase, runtime.header + fronts, rows, queues, messages, footer)


def feed_row(
    runtime: Runtime, feed: str, status: FeedStatus | None, runner: FunctionRunner | None, now: float
) -> FeedRow:
    relayed = (status.events_relayed if status else 0) - runtime.relayed_at_start.get(feed, 0)
    history = runtime.history.setdefault(feed, deque())
    history.append((now, relayed))
    while len(history) > 2 and history[1][0] < now - 5:
        history.popleft()
    first_at, first = history[0]
    stats = runner.stats if runner else None
    last = stats.last if stats else None
    last_error = status.last_error if status else None
    if last is not None and not last.ok:
        last_error = f"{last.error_type}: {last.error}"
    return FeedRow(
        feed=feed,
        cursor=status.cursor if status else None,
        relayed=relayed,
        rate=(relayed - first) / (now - first_at) if now - first_at > 0.5 else 0.0,
        backlog=status.backlog if status else None,
        backlog_capped=status.backlog_capped if status else False,
        last_error=last_error,
        stopped_reason=status.stopped_reason if status else None,
        running=bool(runner and runner.busy),
        runs=stats.invocations if stats else 0,
        failed_runs=stats.failures if stats else 0,
        last_outcome=(last.result or {}).get("outcome") if last and last.ok else None,
    )
