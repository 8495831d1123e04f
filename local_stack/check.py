"""The end of a run: whether the relay caught up, and the summary that says whether every event was
delivered (simulated feeds, event by event) or every feed ended caught up (real Kontur).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from local_stack.runtime import LOG_DIR, FeedRun, Runtime
from local_stack.template import ROOT
from local_stack.view import FeedRow
from local_stack.view_model import snapshot


@dataclass
class Summary:
    lines: list[str]
    delivered: bool
    #: What ``delivered`` means for this run: simulated feeds are checked event by event.
    check: str = "every generated event reached the unfiltered demo queue"


def reached(runtime: Runtime) -> str:
    """What the check names: the webhook sink's receiver is not a queue."""
    sink = runtime.stack.sink()[0]
    return "every generated event reached the webhook receiver" if sink == "webhook" else Summary.check


def all_delivered(runtime: Runtime, since: float) -> bool:
    """Caught up: every expected event is on the unfiltered queue (simulators), or else every feed's
    last run began after the traffic stopped and ended caught up, and the queues went quiet."""
    unfiltered = [q for q in runtime.consumer.queues if not q.filter_policy] if runtime.consumer else []
    since_wall = time.time() - (time.monotonic() - since)
    for run in runtime.feeds:
        if run.simulated is not None and unfiltered:
            if not run.simulated.expected() <= set(unfiltered[0].counts(run.kit.owns)):
                return False
            continue
        runner = runtime.runners.get(run.kit.function)
        last = runner.stats.last if runner else None
        if last is None or last.started < since_wall or not last.ok:
            return False
        if (last.result or {}).get("outcome") != "caught_up":
            return False
    return runtime.consumer is None or time.monotonic() - runtime.consumer.last_message_at > 2.0


def summarise(runtime: Runtime, traffic_seconds: float, catch_up_seconds: float | None, caught_up: bool) -> Summary:
    took = "" if catch_up_seconds is None else f", {'caught up' if caught_up else 'NOT caught up'}"
    took += "" if catch_up_seconds is None else f" in {catch_up_seconds:.1f} s"
    lines = [f"Summary: {traffic_seconds:.0f} s of traffic{took}"]
    final = snapshot(runtime, "done").feeds
    delivered = caught_up
    for run in runtime.feeds:
        rows = [row for row in final if run.kit.owns(row.feed)]
        delivered = summarise_feed(runtime, run, rows, lines) and delivered
    for queue in runtime.consumer.queues if runtime.consumer else []:
        if queue.filter_policy:
            lines.append(
                f"  {queue.name}: {queue.messages} messages through filter {json.dumps(queue.filter_policy)}, "
                f"{queue.outside_filter} outside it"
            )
            delivered = delivered and queue.outside_filter == 0
        if queue.unreadable or queue.errors:
            lines.append(
                f"  {queue.name}: {queue.unreadable} unreadable messages, {queue.errors} errors ({queue.last_error})"
            )
    served = Counter(fault for run in runtime.feeds if run.simulated for fault in run.simulated.faults_served())
    if served:
        kinds = ", ".join(f"{name} {count}" for name, count in served.most_common())
        lines.append(f"  faults served by the simulators: {sum(served.values())} ({kinds})")
    failures = sum(runner.stats.failures for runner in runtime.runners.values())
    dead_letters = ""
    if runtime.options.aws == "local" and "FailedRunsQueue" in runtime.stack.physical:
        counted = runtime.clients["sqs"].get_queue_attributes(
            QueueUrl=runtime.stack.physical["FailedRunsQueue"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        dead_letters = f" ({counted} on FailedRunsQueue)"
    lines.append(f"  errors: {failures} failed runs{dead_letters}; handler logs in {LOG_DIR.relative_to(ROOT)}/")
    if any(run.simulated is None for run in runtime.feeds):
        return Summary(lines, delivered, "every feed's last run ended caught up")
    return Summary(lines, delivered, reached(runtime))


def durations(runtime: Runtime, function: str, budget: float) -> str:
    """How long the function's runs took beside its (scaled) Timeout: how close it came to being killed.
    The longest is a warm run's: a cold one's time includes its init, which the Timeout does not count."""
    ended = [i for i in list(runtime.invocations) if i.function == function and i.status != "stopped"]
    if not ended:
        return "no run ended"
    warm = [i.duration for i in ended if not i.cold]
    longest = f"{max(warm):.1f} s at most once warm" if warm else "none warm"
    median = statistics.median(i.duration for i in ended)
    return f"runs took {median:.1f} s median, {longest}, of a {budget:g} s Timeout here"


def summarise_feed(runtime: Runtime, run: FeedRun, rows: Sequence[FeedRow], lines: list[str]) -> bool:
    """The feed's lines; True when its events were all delivered (simulated) or it ended caught up (real)."""
    kit = run.kit
    runner = runtime.runners.get(kit.function)
    expected, withheld = (run.simulated.expected(), run.simulated.withheld()) if run.simulated else (set(), set())
    if run.simulated is not None:
        lines.append(
            f"  {kit.feed}: {len(expected)} events generated for the relay "
            f"(and {len(withheld)} for another integrator, which must not arrive)"
        )
    for row in rows:
        lines.append(f"  {row.feed}: {row.relayed} relayed (cursor table), cursor {row.cursor or '-'}")
    if runner is not None:
        stats, failure = runner.stats, runner.stats.last_failure
        lines.append(
            f"  {kit.function}: {stats.invocations} runs, {stats.failures} failed ({stats.timeouts} timed out), "
            f"{stats.skipped_ticks} ticks skipped"
            + (f", {stats.stopped} ended by the stop" if stats.stopped else "")
            + (f"; last failure {failure.error_type}: {failure.error}" if failure else "")
        )
        lines.append(f"  {kit.function}: {durations(runtime, kit.function, runner.budget)}")
    found = [inv.result for inv in runtime.invocations if inv.function == kit.function and isinstance(inv.result, dict)]
    if any("recovered" in result for result in found):
        lines.append(
            f"  {kit.feed} reconciliation: {sum(result.get('recovered', 0) for result in found)} events recovered, "
            f"{sum(result.get('duplicates', 0) for result in found)} served again and dropped, "
            f"{sum(result.get('reconciliation_requests', 0) for result in found)} requests"
        )
    unfiltered = [q for q in runtime.consumer.queues if not q.filter_policy] if runtime.consumer else []
    delivered = True
    for queue in unfiltered:
        counts = queue.counts(kit.owns)
        received = set(counts)
        lines.append(
            f"  {kit.feed} on {queue.name}: {sum(counts.values())} messages, {len(received)} distinct events, "
            f"{sum(counts.values()) - len(counts)} duplicates"
        )
        if run.simulated is None:
            continue
        missing = sorted(expected - received)
        leaked = received & withheld
        lines.append(
            f"  {kit.feed} check: {len(expected) - len(missing)} of {len(expected)} generated events received, "
            f"{len(missing)} missing, {len(leaked)} not shared with the relay yet received, "
            f"{len(received - expected - withheld)} unknown"
        )
        if missing:
            lines.append("    missing, e.g.:")
            lines += [f"      {feed}/{event}: {run.simulated.explain((feed, event))}" for feed, event in missing[:5]]
        delivered = delivered and not missing and not leaked
    if run.simulated is not None:
        if not unfiltered:
            lines.append(f"  {kit.feed}: no unfiltered demo consumer, so delivery cannot be checked")
        return delivered and bool(unfiltered)
    # Real Kontur: what it generated is unknown; the check is that the feed's last run caught up.
    last = runner.stats.last if runner else None
    return delivered and last is not None and last.ok and (last.result or {}).get("outcome") == "caught_up"
