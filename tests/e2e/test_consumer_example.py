"""examples/consumer end to end on the local services: its own template's queue and idempotency table,
subscribed through the relay's export, fed by the relay's SNS publisher; moto's SNS delivers to SQS
and the consumer's handler gets real SQS messages in Lambda's batch shape."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shlex
import subprocess
import uuid
from typing import Any

import boto3
import pytest

from kontur_relay.domain.model import Feed
from kontur_relay.observability import begin_run_trace
from kontur_relay.sinks.message import POINTER_CLASS
from kontur_relay.sinks.offload import PayloadOffloader
from kontur_relay.sinks.sns import SnsPublisher
from local_stack.context import LocalContext
from local_stack.template import ROOT, Stack, provision
from tests.conftest import load_handler
from tests.fakes import make_event

EXAMPLE = ROOT / "examples" / "consumer"
EXTERN = Feed(id="extern", kind="extern", source_uri="https://extern-api.kontur.ru/v1/events")


@pytest.fixture
def consumer(stack: Stack, aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The example deployed beside the relay: its queue and table, its subscription, its handler."""
    deployed = Stack(name=f"c{uuid.uuid4().hex[:8]}", parameters={"RelayStackName": stack.name}, doc=_load())
    provision(deployed, aws)
    outputs = stack.doc["Outputs"].values()
    exports = {stack.resolve(out["Export"]["Name"]): out["Value"] for out in outputs if "Export" in out}
    subscription = deployed.doc["Resources"]["EventsSubscription"]["Properties"]
    topic = stack.resolve(exports[deployed.resolve(subscription["TopicArn"]["Fn::ImportValue"])])
    queue = deployed.physical["EventsQueue"]
    aws["sns"].subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=deployed.attributes[("EventsQueue", "Arn")],
        Attributes={
            "RawMessageDelivery": str(subscription["RawMessageDelivery"]).lower(),
            "FilterPolicy": json.dumps(deployed.resolve(subscription["FilterPolicy"])),
        },
    )
    function = dataclasses.replace(deployed.function("ConsumerFunction"), code_uri=EXAMPLE / "src")
    imported = deployed.doc["Resources"]["ConsumerFunction"]["Properties"]["Environment"]["Variables"]["PAYLOAD_BUCKET"]
    bucket = stack.resolve(exports[deployed.resolve(imported["Fn::ImportValue"])])
    app = load_handler(function, monkeypatch, PAYLOAD_BUCKET=bucket)
    return {
        "topic": topic,
        "queue": queue,
        "app": app,
        "table": deployed.physical["IdempotencyTable"],
        "bucket": bucket,
    }


def _load() -> dict[str, Any]:
    from cfnlint.decode import decode  # noqa: PLC0415

    decoded, problems = decode(str(EXAMPLE / "template.yaml"))
    assert decoded is not None, problems
    return dict(json.loads(json.dumps(decoded)))


def _batch(aws: dict[str, Any], queue: str) -> list[dict[str, Any]]:
    """One receive, as Lambda's SQS poller hands it to the function."""
    messages = aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"])
    return messages.get("Messages", [])


def _invoke(app: Any, messages: list[dict[str, Any]]) -> set[str]:
    records = [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {},
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
            "awsRegion": "us-east-1",
        }
        for m in messages
    ]
    answer = app.handler({"Records": records}, LocalContext("ConsumerFunction", 30))
    return {failure["itemIdentifier"] for failure in answer["batchItemFailures"]}


def _drain(aws: dict[str, Any], app: Any, queue: str, *, keep_failed: bool = False) -> Any:
    """Every message through the handler as Lambda does: successes deleted, failures left for later
    (``keep_failed``: how many failed, each tried once, as its body may not even be an event)."""
    failed_events: set[str] = set()
    failed = 0
    while batch := _batch(aws, queue):
        failures = _invoke(app, batch)
        for message in batch:
            if message["MessageId"] in failures and keep_failed:
                failed += 1
                aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            elif message["MessageId"] in failures:
                failed_events.add(json.loads(message["Body"])["id"])
            else:
                aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return failed if keep_failed else failed_events


def test_each_event_is_processed_once_and_a_failure_is_retried_alone(aws, consumer, monkeypatch):
    reports = [make_event(i, docflow_type="urn:docflow:fns534-report") for i in range(12)]
    others = [make_event(100 + i, docflow_type="urn:docflow:stat-report") for i in range(3)]
    publisher = SnsPublisher(aws["sns"], consumer["topic"])
    publisher.publish(EXTERN, [*reports, *others])
    publisher.publish(EXTERN, reports[:5])  # a page published again: at-least-once delivery
    poison = reports[7].id
    processed: list[str] = []

    def process(event: dict[str, Any]) -> None:
        if event["id"] == poison:
            raise RuntimeError("the back office is down for this one")
        processed.append(event["id"])

    monkeypatch.setattr(consumer["app"], "process", process)
    assert _drain(aws, consumer["app"], consumer["queue"]) == {poison}

    assert sorted(processed) == sorted(e.id for e in reports if e.id != poison), "a duplicate or a filtered event"
    monkeypatch.setattr(consumer["app"], "process", lambda event: processed.append(event["id"]))
    aws["sqs"].purge_queue(QueueUrl=consumer["queue"])
    publisher.publish(EXTERN, [reports[7], reports[0]])  # the failed one comes back, and one done already
    assert _drain(aws, consumer["app"], consumer["queue"]) == set()
    assert processed.count(poison) == 1
    assert processed.count(reports[0].id) == 1
    items = boto3.resource("dynamodb").Table(consumer["table"]).scan()["Items"]
    assert len(items) == len(reports)
    assert {item["status"] for item in items} == {"COMPLETED"}


def test_an_event_too_large_for_sns_is_read_from_the_relays_bucket_and_a_pointer_elsewhere_is_refused(
    aws, stack, consumer, monkeypatch
):
    big = dataclasses.replace(
        make_event(1, docflow_type="urn:docflow:fns534-report"), data={"id": "big", "attachment": "я" * 200_000}
    )
    small = make_event(2, docflow_type="urn:docflow:fns534-report")
    offloader = PayloadOffloader(aws["s3"], consumer["bucket"])
    SnsPublisher(aws["sns"], consumer["topic"], offloader=offloader).publish(EXTERN, [big, small])
    # A pointer someone else published, to a bucket of theirs holding an event of their making.
    aws["s3"].create_bucket(Bucket="forged-payloads")
    aws["s3"].put_object(Bucket="forged-payloads", Key="payloads/x", Body=json.dumps({"id": "forged"}).encode())
    forged = json.dumps([POINTER_CLASS, {"s3BucketName": "forged-payloads", "s3Key": "payloads/x"}])
    attributes = {"source": {"DataType": "String", "StringValue": "extern"}}
    attributes["docflow_type"] = {"DataType": "String", "StringValue": "urn:docflow:fns534-report"}
    aws["sns"].publish(TopicArn=consumer["topic"], Message=forged, MessageAttributes=attributes)
    processed: dict[str, Any] = {}
    monkeypatch.setattr(consumer["app"], "process", lambda event: processed.update({event["id"]: event}))

    failed = _drain(aws, consumer["app"], consumer["queue"], keep_failed=True)

    assert sorted(processed) == sorted([big.id, small.id])
    assert processed[big.id]["data"] == big.data, "the whole event, read from the relay's bucket"
    assert failed == 1, "the forged pointer is refused, never followed"


@pytest.mark.slow
def test_the_example_template_passes_cfn_lint_and_sam_validate():
    from tests.template.test_template import BIN, run  # noqa: PLC0415 - the template tests' own runner

    template = str(EXAMPLE / "template.yaml")
    run([str(BIN / "cfn-lint"), template])
    assert "is a valid SAM Template" in run([str(BIN / "sam"), "validate", "--lint", "--template-file", template])


#: What both READMEs tell a newcomer to run, from the repository's root.
BUILD_COMMAND = "make consumer-build"


@pytest.mark.slow
def test_the_example_builds_with_the_command_the_readmes_give_from_a_shell_without_the_virtualenv(tmp_path):
    for readme in (ROOT / "README.md", EXAMPLE / "README.md"):
        assert BUILD_COMMAND in readme.read_text(), f"{readme} does not say {BUILD_COMMAND}"
    venv = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(entry for entry in os.environ["PATH"].split(os.pathsep) if entry != venv)
    build = tmp_path / "build"

    result = subprocess.run(
        [*shlex.split(BUILD_COMMAND), f"CONSUMER_BUILD_DIR={build}"],
        cwd=ROOT,
        env={**os.environ, "PATH": path, "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (build / "ConsumerFunction" / "app.py").is_file()
    assert (build / "ConsumerFunction" / "aws_lambda_powertools").is_dir(), "built without its requirements"


def test_each_event_s_log_line_names_the_run_that_relayed_it(aws, consumer):
    logger = consumer["app"].logger
    logger.setLevel("INFO")  # the tests' environment logs warnings only
    written = io.StringIO()
    logger.registered_handler.setStream(written)
    trace = begin_run_trace()
    SnsPublisher(aws["sns"], consumer["topic"]).publish(
        EXTERN, [make_event(1, docflow_type="urn:docflow:fns534-report")]
    )

    assert _drain(aws, consumer["app"], consumer["queue"]) == set()

    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [line.get("relayed_by") for line in lines if line["message"] == "event"] == [trace.traceparent]
