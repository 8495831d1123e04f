"""The stack's bring-up, up to the first tick: the Kontur side, the AWS side, template.yaml's
resources, the demo queues, a runner per function, the scheduler and the HTTP fronts. Each part
registers its own clean-up.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import boto3

from local_stack import endpoints, feeds
from local_stack.admin_client import AdminClient
from local_stack.cli import Options
from local_stack.constants import LOOPBACK
from local_stack.consumers import start_consumer, start_receiver
from local_stack.feeds import FeedKit, FrontContext
from local_stack.real import deployed, real_kontur, write_back_rotated
from local_stack.runtime import LOG_DIR, FeedRun, Runtime
from local_stack.scheduler import FunctionRunner, Invocation, Scheduler, lambda_environment
from local_stack.services import aws_environment, dynamodb_local, moto_server
from local_stack.template import ROOT, Function, Stack, provision
from local_stack.view_model import snapshot

#: Variables the local stack adds to every function's environment.
POWERTOOLS_LOCAL = {
    # No X-Ray daemon here.
    "POWERTOOLS_TRACE_DISABLED": "1",
}
#: The template parameter scaled with the clock, so that a run keeps the same share of its time in reserve.
MARGIN_PARAMETER = "SafetyMarginSeconds"
#: ... but never less than this (up to half a run): moto publishes a Diadoc page of 500 events in
#: about 1.5 s on an idle core, not SNS's fraction of a second, and the Diadoc poller publishes a
#: page of each box at once. At 3 s, a run that began its last pages just above the margin was
#: killed at its Timeout on a busy machine, after a replay.
MARGIN_FLOOR_SECONDS = 5.0
#: Durations the template gives in seconds of the deployed clock.
SCALED_PARAMETERS = (
    "DiadocMinPollSeconds",
    "DiadocMaxPollSeconds",
    "DiadocReconcileWindowSeconds",
    "DiadocReconcileEverySeconds",
    "DiadocLastEventCheckSeconds",
)

log = logging.getLogger(__name__)


def start(options: Options, resources: ExitStack, out: Callable[[str], None]) -> Runtime:
    """Everything up to the first tick; each part registers its own clean-up on ``resources``."""
    kits = [feeds.KITS[name] for name in options.feeds] if options.feeds else list(feeds.KITS.values())
    endpoints.remove()  # left by a run that was killed
    header: list[str] = []
    # Kontur first: missing credentials are told before Java starts.
    runs = start_kontur(options, kits, resources, out, header)
    if options.aws == "local":
        resources.enter_context(local_aws(out))
        header.insert(0, f"AWS: DynamoDB Local and moto on {LOOPBACK} (moto at {os.environ['AWS_ENDPOINT_URL']})")
    clients: dict[str, Any] = {
        "dynamodb": boto3.client("dynamodb"),
        "sns": boto3.client("sns"),
        "sqs": boto3.client("sqs"),
        "events": boto3.client("events"),
        "s3": boto3.client("s3"),
        "secretsmanager": boto3.client("secretsmanager"),
    }
    receiver = start_receiver(options, options.parameters, resources, out)
    stack = evaluate_stack(options, runs, clients, out, header)

    # Functions resolve only once their resources exist; the margin scales with the clock.
    speed = speed_for(options, stack.functions())
    if MARGIN_PARAMETER in stack.parameters:
        margin = local_margin(float(stack.parameters[MARGIN_PARAMETER]), speed, stack.functions())
        stack.parameters[MARGIN_PARAMETER] = f"{margin:g}"
    for name in SCALED_PARAMETERS:  # a box's poll intervals pass at the clock's pace too
        if name in stack.parameters:
            stack.parameters[name] = f"{float(stack.parameters[name]) / speed:g}"
    functions = {function.logical_id: function for function in stack.functions()}

    consumer = start_consumer(options, stack, runs, clients, resources, receiver=receiver)
    if receiver is not None:
        header.append(f"webhook receiver: {receiver.endpoint}, verifying signatures")
    elif consumer is not None:
        header.append(f"demo queues ({stack.sink()[0]}): " + ", ".join(queue.name for queue in consumer.queues))
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

    start_fronts(runtime, FrontContext(stack, runtime.scheduler.invoke, clients), runs, header, resources)
    out("starting the scheduler ...")
    runtime.scheduler.start()
    resources.callback(runtime.scheduler.stop)
    resources.callback(write_back_rotated, runtime)
    for run in runs:
        if run.simulated is not None:
            run.simulated.start_traffic()
            resources.callback(run.simulated.stop_traffic)
    endpoints.write(runtime)
    # First of all when stopping: a script must not find the stack while it goes.
    resources.callback(endpoints.remove)
    header.append(f"endpoints for scripts: {endpoints.ENDPOINTS.relative_to(ROOT)}")
    runtime.started = time.monotonic()
    return runtime


def start_fronts(
    runtime: Runtime, context: FrontContext, runs: Sequence[FeedRun], header: list[str], resources: ExitStack
) -> None:
    """The fronts, before the scheduler: a user registers Diadoc boxes through the admin API first."""
    for front in feeds.FRONTS:
        if front.functions(context.stack):
            url = resources.enter_context(front.start(context))
            runtime.fronts[front.name] = url
            if front is feeds.ADMIN_API:
                for run in runs:
                    if run.simulated is not None:
                        header.extend(run.simulated.register(AdminClient(url)))


def start_kontur(
    options: Options, kits: Sequence[FeedKit], resources: ExitStack, out: Callable[[str], None], header: list[str]
) -> list[FeedRun]:
    """The simulators (their URLs become template parameters), or real credentials."""
    if options.kontur == "real":
        return real_kontur(options, kits)
    runs = []
    for kit in kits:
        out(f"starting the {kit.feed} simulators ...")
        simulated = kit.simulate(options.simulation)
        resources.callback(simulated.close)
        runs.append(FeedRun(kit, simulated, simulated.credentials, dict(simulated.parameters)))
        header.extend(simulated.describe())
    return runs


@contextmanager
def local_aws(out: Callable[[str], None]) -> Iterator[None]:
    with ExitStack() as stack:
        out("starting DynamoDB Local (Java) and moto ...")
        dynamodb = stack.enter_context(dynamodb_local())
        moto = stack.enter_context(moto_server())
        os.environ.update(aws_environment(moto, dynamodb))
        out(f"  DynamoDB Local {dynamodb}, moto (SNS, SQS, EventBridge, S3, Secrets Manager) {moto}")
        yield
        out("stopping moto and DynamoDB Local ...")


def evaluate_stack(
    options: Options, runs: Sequence[FeedRun], clients: dict[str, Any], out: Callable[[str], None], header: list[str]
) -> Stack:
    """template.yaml provisioned in the local services with the feeds' credentials in its secrets,
    or evaluated against the deployed stack."""
    if options.aws == "real":
        return deployed(options, out, header)
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


def local_margin(deployed: float, speed: float, functions: Sequence[Function]) -> float:
    """SafetyMarginSeconds on the local clock: scaled as the Timeout is, but at least
    MARGIN_FLOOR_SECONDS, and never more than half the shortest scheduled run, so that a run still reads."""
    half_run = min((function.timeout / speed / 2 for function in functions if function.schedules), default=math.inf)
    return max(deployed / speed, min(MARGIN_FLOOR_SECONDS, half_run))


def speed_for(options: Options, functions: Sequence[Function]) -> float:
    if options.period is None:
        return options.speed
    periods = [schedule.seconds for function in functions for schedule in function.schedules]
    return (min(periods) if periods else 60.0) / options.period


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
        # A schedule period and a lease last a minute deployed: as long as a scaled tick here.
        environment |= {"SCHEDULE_PERIOD_SECONDS": f"{60 / runner_speed:g}", "LEASE_SECONDS": f"{60 / runner_speed:g}"}
        # As many containers as schedules (Diadoc: one per box), as their invocations overlap deployed.
        concurrency = len(function.schedules) if logical_id in scheduled else 2
        runners[logical_id] = FunctionRunner(
            function, environment, log_path, speed=runner_speed, concurrency=concurrency
        )
    return runners, scheduled


def function_environment(function: Function, stack: Stack, log_level: str) -> dict[str, str]:
    name = f"{stack.name}-{function.logical_id}"
    environment = {**function.environment, **lambda_environment(function, name, log_level), **POWERTOOLS_LOCAL}
    environment.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayLocal")
    environment.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay")
    return environment


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
