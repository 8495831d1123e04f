"""``make run``: the whole relay on this machine.

Starts DynamoDB Local and moto (or uses a deployed stack), the Kontur simulators (or real Kontur),
provisions template.yaml's resources, fills the credentials secrets, subscribes demo queues,
schedules the functions' handlers on an accelerated clock, shows a live view, and at the end of
``--duration`` stops the traffic, lets the relay catch up and checks that every generated event
reached the unfiltered demo queue.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack

from local_stack.bringup import start
from local_stack.check import Summary, all_delivered, summarise
from local_stack.cli import parse_args
from local_stack.runtime import LOCAL_DIR, LOG_DIR, Runtime
from local_stack.signals import Interrupted, Signals, dump_stacks_on_sigusr1
from local_stack.template import ROOT
from local_stack.view import LiveView
from local_stack.view_model import snapshot

#: The stack's own logger; its modules' are its children.
log = logging.getLogger("local_stack")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=LOCAL_DIR / "local_stack.log",
        filemode="w",
        level=logging.WARNING,
        format="%(asctime)s %(threadName)s %(levelname)s %(name)s: %(message)s",
    )
    # Library warnings would tear the live view: they go to the log file with everything else.
    logging.captureWarnings(True)
    log.setLevel(logging.INFO)
    dump_stacks_on_sigusr1()
    tty = options.view == "live" or (options.view == "auto" and sys.stdout.isatty())

    def out(text: str) -> None:
        print(text, flush=True)
        log.info(text)

    signals = Signals(out)
    summary: Summary | None = None
    try:
        with ExitStack() as resources:
            runtime = start(options, resources, out)
            signals.running()
            summary = run(runtime, signals, LiveView(sys.stdout, tty), out)
            signals.stopping()
            out("stopping ...")
    except Interrupted as interrupted:
        out(f"{interrupted}: stopped during start-up")
    except Exception as error:
        # Everything it had started is stopped by now; the traceback is for the log, the cause for the user.
        log.exception("the local stack failed")
        print(f"FAILED: {type(error).__name__}: {error} (traceback in {LOCAL_DIR.relative_to(ROOT)}/local_stack.log)")
        return 1
    finally:
        signals.restore()
    if summary is not None:
        print("\n".join(summary.lines))
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            print(f"Stopped by {name}: no catch-up, so events generated last may not have been relayed yet.")
        else:
            print(f"OK: {summary.check}." if summary.delivered else f"FAILED: not {summary.check} (see above).")
    if signals.received is not None:
        return signals.exit_code
    return 0 if summary is not None and summary.delivered else 1


#: Catch-up gives up once every poller has failed this many runs since it began: waiting longer
#: for a relay that cannot run only delays the verdict.
FAILING_RUNS = 3


def every_run_failing(runtime: Runtime, since: float) -> bool:
    """Each scheduled poller has run at least FAILING_RUNS times since ``since`` (wall clock), all failed."""
    runs: dict[str, list[bool]] = {run.kit.function: [] for run in runtime.feeds}
    for invocation in list(runtime.invocations):
        if invocation.function in runs and invocation.started >= since:
            runs[invocation.function].append(invocation.ok)
    return bool(runs) and all(len(oks) >= FAILING_RUNS and not any(oks) for oks in runs.values())


def run(runtime: Runtime, signals: Signals, view: LiveView, out: Callable[[str], None]) -> Summary:
    """Traffic for ``--duration``, then the catch-up, then the summary once nothing moves."""
    options = runtime.options
    while not signals.stopped:
        elapsed = time.monotonic() - runtime.started
        if options.duration is not None and elapsed >= options.duration:
            break
        phase = f"running {elapsed:.0f}s" + (f" of {options.duration:g}s" if options.duration else "")
        view.show(snapshot(runtime, phase))
        signals.pause(0.5)
    traffic_seconds = time.monotonic() - runtime.started

    catch_up_seconds = None
    caught_up = False
    if not signals.stopped:
        for feed_run in runtime.feeds:
            if feed_run.simulated is not None:
                feed_run.simulated.stop_traffic()
        began, began_at = time.monotonic(), time.time()
        while not signals.stopped and time.monotonic() - began < options.catch_up:
            if all_delivered(runtime, began):
                caught_up = True
                break
            if every_run_failing(runtime, began_at):
                out(f"catch-up ended early: the last {FAILING_RUNS} runs of every poller failed (see last error)")
                break
            view.show(snapshot(runtime, f"traffic stopped; catching up {time.monotonic() - began:.0f}s"))
            signals.pause(0.5)
        catch_up_seconds = time.monotonic() - began
    # The figures are taken once nothing moves: no run in flight, no message on its way.
    runtime.scheduler.stop()
    if runtime.consumer is not None:
        runtime.consumer.settle(quiet=1.0, limit=5.0)
        runtime.consumer.stop()
    view.show(snapshot(runtime, "stopped"), force=True)
    view.release()
    return summarise(runtime, traffic_seconds, catch_up_seconds, caught_up)
