"""``make run``: the whole relay on this machine.

Starts DynamoDB Local and moto (or uses a deployed stack), the Kontur simulators (or real Kontur),
provisions template.yaml's resources, fills the credentials secrets, subscribes demo queues,
schedules the functions' handlers on an accelerated clock, shows a live view, and at the end of
``--duration`` stops the traffic, lets the relay catch up and checks that every generated event
reached the unfiltered demo queue.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import time
import types
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from kontur_relay.aws.cursors import DynamoCursorStore, FeedStatus
from local_stack import feeds
from local_stack.feeds import FeedKit, FrontContext, SimulatedFeed, SimulationOptions
from local_stack.queues import DemoQueue, QueueConsumer, create_demo_queues, delete_demo_queues
from local_stack.scheduler import FunctionRunner, Invocation, Scheduler, lambda_environment
from local_stack.services import aws_environment, dynamodb_local, moto_server, speed_up_moto_sqs
from local_stack.template import ROOT, Function, Stack, provision
from local_stack.view import FeedRow, LiveView, QueueRow, Snapshot

LOCAL_DIR = ROOT / ".local"
LOG_DIR = LOCAL_DIR / "logs"
#: Variables the local stack adds to every function's environment.
POWERTOOLS_LOCAL = {
    # No X-Ray daemon here.
    "POWERTOOLS_TRACE_DISABLED": "1",
}
#: The template parameter scaled with the clock, so that a run keeps the same share of its time in reserve.
MARGIN_PARAMETER = "SafetyMarginSeconds"
#: ... but never less than this: publishing one page to moto takes a second or two, not SNS's 100 ms.
MARGIN_FLOOR_SECONDS = 3.0

log = logging.getLogger("local_stack")


class Interrupted(Exception):
    """SIGINT or SIGTERM during start-up."""


@dataclass
class Options:
    duration: float | None = None
    speed: float = 30.0
    period: float | None = None
    kontur: str = "sim"
    credentials: Path | None = None
    aws: str = "local"
    stack_name: str | None = None
    feeds: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    #: What the simulators generate and how often they fail (with the simulators only).
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    catch_up: float = 60.0
    demo_queues: bool | None = None
    view: str = "auto"
    log_level: str = "INFO"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack",
        description="Run the Kontur Feed Relay on this machine: local AWS services, Kontur simulators, "
        "the functions on an accelerated schedule, and a live view.",
    )
    parser.add_argument("--duration", type=float, help="seconds of traffic; then catch up, summarise, exit")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--speed", type=float, default=30.0, help="clock acceleration (default 30: 1 minute = 2 s)")
    clock.add_argument("--period", type=float, help="seconds between ticks of the most frequent schedule")
    parser.add_argument("--kontur", choices=("sim", "real"), default="sim", help="simulators (default) or Kontur")
    parser.add_argument("--credentials", type=Path, help="JSON file of real Kontur credentials, by feed")
    parser.add_argument("--aws", choices=("local", "real"), default="local", help="local services or a real account")
    parser.add_argument("--stack-name", help="the deployed stack (--aws real); the local stack's name otherwise")
    parser.add_argument("--feed", action="append", default=[], choices=sorted(feeds.KITS), help="only these feeds")
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE", help="a template parameter (repeatable)"
    )
    parser.add_argument("--backlog", type=int, default=300, help="events waiting in each feed at the start (sim)")
    parser.add_argument("--traffic-interval", type=float, default=0.25, help="seconds between traffic ticks (sim)")
    parser.add_argument("--faults", type=float, default=0.0, help="share of API requests that fail (sim), e.g. 0.1")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated traffic and faults")
    parser.add_argument("--catch-up", type=float, default=60.0, help="seconds allowed to catch up after --duration")
    queues = parser.add_mutually_exclusive_group()
    queues.add_argument(
        "--demo-queues",
        dest="demo_queues",
        action="store_true",
        default=None,
        help="subscribe demo queues (the default with local AWS; with --aws real, made for the run and deleted)",
    )
    queues.add_argument("--no-demo-queues", dest="demo_queues", action="store_false", help="no demo queues")
    parser.add_argument("--view", choices=("auto", "live", "plain"), default="auto", help="live redraw or lines")
    parser.add_argument("--log-level", default="INFO", help="the handlers' POWERTOOLS_LOG_LEVEL")
    args = parser.parse_args(argv)

    parameters = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item}: expected NAME=VALUE")
        parameters[name] = value
    if args.aws == "real" and not args.stack_name:
        parser.error("--aws real needs --stack-name (the deployed stack)")
    if args.aws == "real" and args.kontur == "sim":
        parser.error(
            "--aws real runs against the deployed stack's own Kontur endpoints and secret: add --kontur real "
            "(simulator credentials would overwrite the deployed secret)"
        )
    if args.aws == "real" and args.credentials:
        parser.error("--aws real reads the deployed stack's secret; fill that instead of passing --credentials")
    if args.credentials and args.kontur != "real":
        parser.error("--credentials goes with --kontur real")
    for name in ("speed", "period", "duration", "traffic_interval", "catch_up"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 <= args.faults <= 1:
        parser.error("--faults is a share between 0 and 1")
    return Options(
        duration=args.duration,
        speed=args.speed,
        period=args.period,
        kontur=args.kontur,
        credentials=args.credentials,
        aws=args.aws,
        stack_name=args.stack_name,
        feeds=args.feed,
        parameters=parameters,
        simulation=SimulationOptions(
            seed=args.seed, backlog=args.backlog, traffic_interval=args.traffic_interval, fault_rate=args.faults
        ),
        catch_up=args.catch_up,
        demo_queues=args.demo_queues,
        view=args.view,
        log_level=args.log_level,
    )


# -- signals ---------------------------------------------------------------------------------------


class Signals:
    """SIGINT and SIGTERM: during start-up they abort it, while running they end the run, and while
    stopping they are noted and otherwise ignored, so that clean-up (Java!) is never cut short."""

    def __init__(self, out: Callable[[str], None]) -> None:
        # A plain attribute, not a threading.Event: the handler runs in the main thread between two
        # bytecodes, possibly while that thread holds the Event's lock inside Event.wait, and
        # Event.set would then wait for that lock for ever.
        self.received: int | None = None
        self.phase = "starting"
        self._out = out
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, number: int, frame: types.FrameType | None) -> None:
        if self.received is not None:
            self._out(f"{signal.Signals(number).name} again: still stopping, please wait")
            return
        self.received = number
        if self.phase == "starting":
            self.phase = "stopping"
            raise Interrupted(signal.Signals(number).name)

    @property
    def stopped(self) -> bool:
        return self.received is not None

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if a signal comes."""
        deadline = time.monotonic() + seconds
        while not self.stopped and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def running(self) -> None:
        self.phase = "running"

    def stopping(self) -> None:
        self.phase = "stopping"

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    @property
    def exit_code(self) -> int:
        return 128 + self.received if self.received is not None else 0


# -- the stack -------------------------------------------------------------------------------------


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
    options: Options
    stack: Stack
    clients: dict[str, Any]
    feeds: list[FeedRun]
    runners: dict[str, FunctionRunner]
    scheduler: Scheduler
    consumer: QueueConsumer | None
    header: list[str]
    fronts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    relayed_at_start: dict[str, int] = field(default_factory=dict)
    history: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    status_error: str | None = None
    invocations: list[Invocation] = field(default_factory=list)


def load_real_credentials(kits: Sequence[FeedKit], path: Path | None) -> list[FeedRun]:
    """Real Kontur: per feed, ``{"<feed>": {<the secret's JSON>, "api_url": ...}}`` from ``path``, or
    the variables ``KONTUR_<FEED>_CREDENTIALS`` (that JSON) and ``KONTUR_<FEED>_API_URL``."""
    from_file: dict[str, Any] = {}
    if path is not None:
        try:
            from_file = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"cannot read the credentials file {path}: {error}") from error
        if not isinstance(from_file, dict):
            raise SystemExit(f"{path} must hold a JSON object keyed by feed ({', '.join(feeds.KITS)})")
    runs = []
    for kit in kits:
        variable = f"KONTUR_{kit.feed.upper()}_CREDENTIALS"
        entry = from_file.get(kit.feed)
        if entry is None and os.environ.get(variable):
            try:
                entry = json.loads(os.environ[variable])
            except ValueError as error:
                raise SystemExit(f"{variable} is not JSON") from error
        if not isinstance(entry, dict):
            print(f"{kit.feed}: no real credentials ({path or variable}): this feed does not run")
            continue
        secret = dict(entry)
        api_url = secret.pop("api_url", None) or os.environ.get(f"KONTUR_{kit.feed.upper()}_API_URL")
        parameters = {kit.api_url_parameter: api_url} if api_url else {}
        runs.append(FeedRun(kit, credentials=secret, parameters=parameters, credentials_file=path))
    if not runs:
        raise SystemExit("--kontur real: no feed has credentials")
    return runs


def deployed_stack(name: str) -> Stack:
    """template.yaml evaluated with a deployed stack's parameters and physical resource ids."""
    cloudformation = boto3.client("cloudformation")
    described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    parameters = {
        item["ParameterKey"]: item.get("ResolvedValue", item.get("ParameterValue", ""))
        for item in described.get("Parameters", [])
    }
    physical = {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=name):
        for resource in page["StackResourceSummaries"]:
            if resource.get("PhysicalResourceId"):
                physical[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
    stack = Stack(name=name, parameters=parameters, physical=physical)
    for logical_id, _ in stack.resources("AWS::SNS::Topic"):
        arn = physical.get(logical_id, "")
        stack.attributes[(logical_id, "TopicArn")] = arn
        stack.attributes[(logical_id, "TopicName")] = arn.rsplit(":", 1)[-1]
    return stack


def speed_for(options: Options, functions: Sequence[Function]) -> float:
    if options.period is None:
        return options.speed
    periods = [schedule.seconds for function in functions for schedule in function.schedules]
    return (min(periods) if periods else 60.0) / options.period


def function_environment(function: Function, stack: Stack, log_level: str) -> dict[str, str]:
    name = f"{stack.name}-{function.logical_id}"
    environment = {**function.environment, **lambda_environment(function, name, log_level), **POWERTOOLS_LOCAL}
    environment.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayLocal")
    environment.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay")
    return environment


@contextmanager
def local_aws(out: Callable[[str], None]) -> Iterator[None]:
    with ExitStack() as stack:
        out("starting DynamoDB Local (Java) and moto ...")
        speed_up_moto_sqs()
        dynamodb = stack.enter_context(dynamodb_local())
        moto = stack.enter_context(moto_server())
        os.environ.update(aws_environment(moto, dynamodb))
        out(f"  DynamoDB Local {dynamodb}, moto (SNS, SQS, Secrets Manager) {moto}")
        yield
        out("stopping moto and DynamoDB Local ...")


def on_failure_destination(runtime: Runtime, invocation: Invocation, event: Any) -> None:
    """Deployed, a failed asynchronous invocation lands on FailedRunsQueue (EventInvokeConfig);
    locally the scheduler puts the same record there."""
    url = runtime.stack.physical.get("FailedRunsQueue")
    if not url or runtime.options.aws != "local":
        return
    record = {
        "version": "1.0",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(invocation.started)),
        "requestContext": {
            "requestId": invocation.request_id,
            "functionArn": f"local:{invocation.function}",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": invocation.error_type, "errorMessage": invocation.error},
    }
    runtime.clients["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps(record))


# -- the view's data -------------------------------------------------------------------------------


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
    return Snapshot(phase, runtime.header + runtime.fronts, rows, queues, messages, footer)


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


# -- the summary -----------------------------------------------------------------------------------


@dataclass
class Summary:
    lines: list[str]
    delivered: bool
    #: What ``delivered`` means for this run: simulated feeds are checked event by event.
    check: str = "every generated event reached the unfiltered demo queue"


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
    return Summary(lines, delivered)


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
            lines.append("    missing, e.g.: " + ", ".join(f"{feed}/{event}" for feed, event in missing[:5]))
        delivered = delivered and not missing and not leaked
    if run.simulated is not None:
        if not unfiltered:
            lines.append(f"  {kit.feed}: no unfiltered demo queue, so delivery cannot be checked")
        return delivered and bool(unfiltered)
    # Real Kontur: what it generated is unknown; the check is that the feed's last run caught up.
    last = runner.stats.last if runner else None
    return delivered and last is not None and last.ok and (last.result or {}).get("outcome") == "caught_up"


def write_back_rotated(runtime: Runtime) -> None:
    """A refresh token rotated during the run lives in the (local) secret: keep it for the next run."""
    for run in runtime.feeds:
        if run.credentials is None or not run.credentials.get("refresh_token"):
            continue
        secret_id = runtime.stack.function(run.kit.function).environment[run.kit.secret_variable]
        current = json.loads(runtime.clients["secretsmanager"].get_secret_value(SecretId=secret_id)["SecretString"])
        rotated = current.get("refresh_token")
        if not rotated or rotated == run.credentials.get("refresh_token"):
            continue
        if run.credentials_file is None:
            print(
                f"{run.kit.feed}: Kontur rotated the refresh token during this run; the one in "
                f"KONTUR_{run.kit.feed.upper()}_CREDENTIALS no longer works. Use --credentials FILE to keep it."
            )
            continue
        document = json.loads(run.credentials_file.read_text())
        document[run.kit.feed]["refresh_token"] = rotated
        run.credentials_file.write_text(json.dumps(document, indent=2) + "\n")
        print(f"{run.kit.feed}: wrote the rotated refresh token back to {run.credentials_file}")


# -- main ------------------------------------------------------------------------------------------


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
    # `kill -USR1 <pid>` prints every thread's stack: how to see where a run that does not stop is.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
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


def start(options: Options, resources: ExitStack, out: Callable[[str], None]) -> Runtime:
    """Everything up to the first tick; each part registers its own clean-up on ``resources``."""
    kits = [feeds.KITS[name] for name in options.feeds] if options.feeds else list(feeds.KITS.values())
    header: list[str] = []
    # Kontur first: missing credentials are told before Java starts.
    runs = start_kontur(options, kits, resources, out, header)
    if options.aws == "local":
        resources.enter_context(local_aws(out))
        header.insert(0, f"AWS: DynamoDB Local and moto on 127.0.0.1 (moto at {os.environ['AWS_ENDPOINT_URL']})")
    clients: dict[str, Any] = {
        "dynamodb": boto3.client("dynamodb"),
        "sns": boto3.client("sns"),
        "sqs": boto3.client("sqs"),
        "secretsmanager": boto3.client("secretsmanager"),
    }
    stack = evaluate_stack(options, runs, clients, out, header)

    # Functions resolve only once their resources exist; the margin scales with the clock.
    speed = speed_for(options, stack.functions())
    if MARGIN_PARAMETER in stack.parameters:
        margin = max(float(stack.parameters[MARGIN_PARAMETER]) / speed, MARGIN_FLOOR_SECONDS)
        stack.parameters[MARGIN_PARAMETER] = f"{margin:g}"
    functions = {function.logical_id: function for function in stack.functions()}

    consumer = start_demo_queues(options, stack, runs, clients, resources)
    if consumer is not None:
        header.append("demo queues: " + ", ".join(queue.name for queue in consumer.queues))
    runners, scheduled = make_runners(options, stack, functions, runs, speed)

    runtime = Runtime(
        options, stack, clients, runs, runners, Scheduler(runners, speed, scheduled=scheduled), consumer, header
    )
    runtime.scheduler.on_invocation = lambda invocation: record(runtime, invocation)
    ticks = ", ".join(f"{t.function} every {t.period:g}s" for t in runtime.scheduler.ticks())
    budgets = ", ".join(f"{name} {runners[name].budget:g}s" for name in sorted(scheduled))
    header.append(f"clock x{speed:g}: {ticks}; timeouts {budgets}")
    if options.aws == "real":
        # The deployed table counts every event ever relayed; the view shows this run's.
        runtime.relayed_at_start = {row.feed: row.relayed for row in snapshot(runtime, "starting").feeds}
        runtime.history.clear()

    out("starting the scheduler ...")
    runtime.scheduler.start()
    resources.callback(runtime.scheduler.stop)
    resources.callback(write_back_rotated, runtime)
    for run in runs:
        if run.simulated is not None:
            run.simulated.start_traffic()
            resources.callback(run.simulated.stop_traffic)
    context = FrontContext(stack, runtime.scheduler.invoke, clients)
    for front in feeds.FRONTS:
        if front.functions(stack):
            url = resources.enter_context(front.start(context))
            runtime.fronts.append(f"{front.name}: {url}")
    runtime.started = time.monotonic()
    return runtime


def make_runners(
    options: Options, stack: Stack, functions: dict[str, Function], runs: Sequence[FeedRun], speed: float
) -> tuple[dict[str, FunctionRunner], set[str]]:
    """Runners for the active feeds' functions, for any scheduled function no feed kit claims, and
    for the fronts' functions; and the names of those that run on their schedules."""
    claimed = {kit.function for kit in feeds.KITS.values()}
    active = {run.kit.function for run in runs}
    fronted = {function for front in feeds.FRONTS for function in front.functions(stack)}
    runners, scheduled = {}, set()
    for logical_id, function in functions.items():
        if function.schedules and (logical_id not in claimed or logical_id in active):
            scheduled.add(logical_id)
        elif logical_id not in fronted:
            continue
        log_path = LOG_DIR / f"{logical_id}.log"
        log_path.write_text("")
        environment = function_environment(function, stack, options.log_level)
        # Functions behind a front answer requests in real time: their Timeout is not scaled.
        runner_speed = speed if logical_id in scheduled else 1.0
        # As many containers as schedules (Diadoc: one per box), as their invocations overlap deployed.
        concurrency = len(function.schedules) if logical_id in scheduled else 2
        runners[logical_id] = FunctionRunner(
            function, environment, log_path, speed=runner_speed, concurrency=concurrency
        )
    return runners, scheduled


def start_kontur(
    options: Options, kits: Sequence[FeedKit], resources: ExitStack, out: Callable[[str], None], header: list[str]
) -> list[FeedRun]:
    """The simulators (their URLs become template parameters), or real credentials."""
    if options.kontur == "real":
        if options.aws == "real":
            return [FeedRun(kit) for kit in kits]  # the deployed stack's own endpoints and secrets
        return load_real_credentials(kits, options.credentials)
    runs = []
    for kit in kits:
        out(f"starting the {kit.feed} simulators ...")
        simulated = kit.simulate(options.simulation)
        resources.callback(simulated.close)
        runs.append(FeedRun(kit, simulated, simulated.credentials, dict(simulated.parameters)))
        header.extend(simulated.describe())
    return runs


def evaluate_stack(
    options: Options, runs: Sequence[FeedRun], clients: dict[str, Any], out: Callable[[str], None], header: list[str]
) -> Stack:
    """template.yaml provisioned in the local services with the feeds' credentials in its secrets,
    or evaluated against the deployed stack."""
    if options.aws == "real":
        assert options.stack_name is not None
        out(f"reading the deployed stack {options.stack_name} ...")
        stack = deployed_stack(options.stack_name)
        stack.parameters.update(options.parameters)
        header.append(f"AWS: the deployed stack {stack.name} ({boto3.session.Session().region_name})")
        return stack
    parameters = {name: value for run in runs for name, value in run.parameters.items()}
    stack = Stack(name=options.stack_name or "kontur-feed-relay-local", parameters={**parameters, **options.parameters})
    out(f"provisioning template.yaml as stack {stack.name} ...")
    provision(stack, clients)
    for run in runs:
        secret_id = stack.function(run.kit.function).environment[run.kit.secret_variable]
        clients["secretsmanager"].put_secret_value(SecretId=secret_id, SecretString=json.dumps(run.credentials))
    if options.kontur == "real":
        header.extend(f"Kontur: {run.kit.feed} at {stack.parameters.get(run.kit.api_url_parameter)}" for run in runs)
    return stack


def start_demo_queues(
    options: Options, stack: Stack, runs: Sequence[FeedRun], clients: dict[str, Any], resources: ExitStack
) -> QueueConsumer | None:
    """On every topic, a queue with no filter and one per feed with its example filter, drained."""
    wanted = options.demo_queues if options.demo_queues is not None else options.aws == "local"
    if not wanted:
        return None
    # In a real account the queues are this run's own, and deleted at its end.
    suffix = "" if options.aws == "local" else f"-{os.getpid()}"
    demo: list[DemoQueue] = []
    for logical_id, _ in stack.resources("AWS::SNS::Topic"):
        prefix = f"{stack.name}-demo{suffix}" + ("" if logical_id == "EventsTopic" else f"-{logical_id}")
        filters = [(f"{run.kit.feed}-filtered", run.kit.example_filter) for run in runs]
        created = create_demo_queues(clients["sns"], clients["sqs"], stack.physical[logical_id], prefix, filters)
        if options.aws == "real":
            resources.callback(delete_demo_queues, clients["sns"], clients["sqs"], created)
        demo.extend(created)
    consumer = QueueConsumer(clients["sqs"], demo)
    consumer.start()
    resources.callback(consumer.stop)
    return consumer


def record(runtime: Runtime, invocation: Invocation) -> None:
    runtime.invocations.append(invocation)
    if invocation.ok:
        log.info("%s %s: %s", invocation.function, invocation.request_id, invocation.result)
        return
    log.warning(
        "%s %s failed: %s: %s", invocation.function, invocation.request_id, invocation.error_type, invocation.error
    )
    if invocation.status == "stopped":
        return
    function = runtime.runners[invocation.function].function
    try:
        on_failure_destination(runtime, invocation, function.schedules[0].input if function.schedules else {})
    except Exception:
        # The failure itself is counted and shown already; this was its copy on the queue.
        log.exception("could not put the failed run on FailedRunsQueue")


def run(runtime: Runtime, signals: Signals, view: LiveView, out: Callable[[str], None]) -> Summary:
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
        began = time.monotonic()
        while not signals.stopped and time.monotonic() - began < options.catch_up:
            if all_delivered(runtime, began):
                caught_up = True
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
