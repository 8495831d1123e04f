"""``make run`` as a user runs it: the real command in a subprocess, with its real services (Java's
DynamoDB Local, moto, the simulators, a worker process per function), read from what it prints.

Plus the scheduler's Lambda-like behaviour on a function of the test's own: each function's
environment, a warm worker, and a timeout that kills the worker the way Lambda ends a run.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from local_stack.constants import REGION
from local_stack.scheduler import FunctionRunner, Scheduler
from local_stack.services import LOCAL_CREDENTIALS, moto_server
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Function, Schedule, Stack
from tests.local_stack.harness import checks, run_stack, survivors

pytestmark = pytest.mark.slow


def client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local"
    )


def test_make_run_delivers_every_generated_event_and_leaves_nothing_behind():
    code, text, marker = run_stack("--duration", "8")

    assert code == 0, text
    assert "OK: every generated event reached the unfiltered demo queue." in text
    found = checks(text)
    assert set(found) == {"extern", "diadoc"}, text
    for received, expected, missing in found.values():
        assert received == expected > 100  # a backlog, then traffic
        assert missing == 0
    assert "0 not shared with the relay yet received" in text
    assert re.search(r"extern-filtered: \d+ messages through filter .*, 0 outside it", text)
    # The plain view showed the feed moving while it ran.
    assert re.search(r"\[running \d+s of 8s\] extern: cursor=\w+", text)
    assert survivors(marker) == []


def test_make_run_delivers_everything_through_throttling_server_errors_and_expired_tokens():
    code, text, marker = run_stack("--duration", "8", "--faults", "0.25")

    assert code == 0, text
    faults = re.search(r"faults served by the simulators: (\d+) \((.*)\)", text)
    assert faults, text
    assert "throttle" in faults.group(2)
    assert "expired_token" in faults.group(2)
    assert re.search(r"http_5\d\d|html_502", faults.group(2))
    found = checks(text)
    assert set(found) == {"extern", "diadoc"}, text
    assert all(received == expected and missing == 0 for received, expected, missing in found.values())
    assert survivors(marker) == []


def test_make_run_with_the_webhook_sink_delivers_every_event_to_a_receiver_that_fails_and_slows_down():
    code, text, marker = run_stack("--duration", "4", "--sink", "webhook", "--webhook-faults", "0.3")

    assert code == 0, text
    found = checks(text)
    assert set(found) == {"extern", "diadoc"}, text
    assert all(received == expected and missing == 0 for received, expected, missing in found.values())
    receiver = re.search(
        r"webhook receiver: (\d+) requests verified \(\d+ events\), (\d+) refused, faults served (\d+)", text
    )
    assert receiver, text
    assert int(receiver.group(2)) == 0, "every request's signature verified"
    assert int(receiver.group(3)) > 0, "the receiver failed or slowed some requests"
    assert survivors(marker) == []


def test_real_kontur_credentials_from_a_file_and_the_rotated_refresh_token_kept(tmp_path):
    """``--kontur real``: no simulator of the stack's own; Kontur here is a pair of simulators the test
    runs, reached only through the credentials file, whose refresh token rotates on use."""
    identity = IdentitySimulator(token_lifetime=300).start()
    extern = ExternSimulator(identity, seed=3).start()
    try:
        extern.add_integrator("integrator", "api-key", username="svc@example", password="secret-password")
        extern.setup("integrator", accounts=2, backlog=120)
        answer = requests.post(
            identity.token_url,
            data={
                "grant_type": "password",
                "client_id": "integrator",
                "client_secret": "api-key",
                "username": "svc@example",
                "password": "secret-password",
                "scope": "extern.api offline_access",
            },
            timeout=10,
        ).json()
        first_refresh = answer["refresh_token"]
        credentials = tmp_path / "creds.json"
        secret = {
            "api_url": extern.url,
            "token_url": identity.token_url,
            "client_id": "integrator",
            "client_secret": "api-key",
            "grant_type": "refresh_token",
            "refresh_token": first_refresh,
            "scope": "extern.api offline_access",
        }
        credentials.write_text(json.dumps({"extern": secret}))

        code, text, marker = run_stack(
            "--duration", "4", "--kontur", "real", "--credentials", str(credentials), "--feed", "extern"
        )

        assert code == 0, text
        assert "OK: every feed's last run ended caught up." in text
        assert "simulators" not in text
        assert f"Kontur: extern at {extern.url}" in text
        delivered = re.search(r"extern on \S+-demo-all: (\d+) messages, (\d+) distinct events", text)
        assert delivered, text
        assert int(delivered.group(2)) == len(extern.events_visible_to("integrator")) == 120
        kept = json.loads(credentials.read_text())["extern"]["refresh_token"]
        assert kept != first_refresh
        assert identity.refresh_token_is_valid(kept)
        assert not identity.refresh_token_is_valid(first_refresh)
        assert first_refresh not in text
        assert kept not in text
        assert survivors(marker) == []
    finally:
        extern.stop()
        identity.stop()


def test_real_aws_runs_against_a_deployed_stack_and_creates_nothing_local(tmp_path):
    """``--aws real``: the stack's resources are found through CloudFormation, nothing local starts,
    and the demo queues made for the run are gone after it. The "account" is a moto server holding
    a stack made of template.yaml's own tables, topics and queues; its secrets are passed by ARN,
    as a deployment with existing secrets does (moto's CloudFormation has no secrets)."""
    identity = IdentitySimulator(token_lifetime=300).start()
    extern = ExternSimulator(identity, seed=5).start()
    try:
        extern.add_integrator("integrator", "api-key", username="svc@example", password="secret-password")
        extern.setup("integrator", accounts=2, backlog=80)
        with moto_server() as endpoint:
            environment = {**os.environ, **LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
            environment.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
            secrets = client("secretsmanager", endpoint)
            extern_secret = secrets.create_secret(
                Name="extern-credentials",
                SecretString=json.dumps(
                    {
                        "token_url": identity.token_url,
                        "client_id": "integrator",
                        "client_secret": "api-key",
                        "grant_type": "password",
                        "username": "svc@example",
                        "password": "secret-password",
                    }
                ),
            )["ARN"]
            diadoc_secret = secrets.create_secret(Name="diadoc-credentials", SecretString="{}")["ARN"]
            parameters = {
                "ExternApiUrl": extern.url,
                "ExternCredentialsSecretArn": extern_secret,
                "DiadocCredentialsSecretArn": diadoc_secret,
            }
            template = Stack(name="deployed", parameters=dict(parameters))
            resources = {
                logical_id: {"Type": kind, "Properties": template.resolve(resource.get("Properties", {}))}
                for kind in ("AWS::DynamoDB::Table", "AWS::SNS::Topic", "AWS::SQS::Queue", "AWS::S3::Bucket")
                for logical_id, resource in template.resources(kind)
            }
            cloudformation = client("cloudformation", endpoint)
            cloudformation.create_stack(
                StackName="deployed",
                TemplateBody=json.dumps(
                    {
                        "Parameters": {name: {"Type": "String"} for name in parameters},
                        "Resources": resources,
                    }
                ),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            )

            code, text, marker = run_stack(
                "--duration", "4", "--aws", "real", "--kontur", "real", "--stack-name", "deployed",
                "--feed", "extern", "--demo-queues", environment=environment,
            )  # fmt: skip

            assert code == 0, text
            assert "OK: every feed's last run ended caught up." in text
            assert "DynamoDB Local" not in text
            assert "AWS: the deployed stack deployed" in text
            delivered = re.search(r"extern on \S+-demo-\d+-all: (\d+) messages, (\d+) distinct events", text)
            assert delivered, text
            assert int(delivered.group(2)) == 80
            sqs = client("sqs", endpoint)
            assert [url for url in sqs.list_queues().get("QueueUrls", []) if "-demo-" in url] == []
            assert survivors(marker) == []
    finally:
        extern.stop()
        identity.stop()


# -- the scheduler on a function of the test's own -----------------------------------------------------

HANDLER = """
import os, time

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {
        "value": os.environ["OWN_VALUE"],
        "other": os.environ.get("OTHER_VALUE"),
        "pid": os.getpid(),
        "remaining": context.get_remaining_time_in_millis(),
        "name": context.function_name,
    }
"""


def function(tmp_path: Path, name: str, timeout: int) -> Function:
    code = tmp_path / name
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(HANDLER))
    return Function(
        logical_id=name,
        code_uri=code,
        handler="app.handler",
        timeout=timeout,
        environment={"OWN_VALUE": name},
        schedules=[Schedule("Tick", "rate(1 minute)", {"tick": name})],
    )


def test_each_function_runs_warm_in_its_own_environment_and_is_killed_at_its_timeout(tmp_path):
    one = FunctionRunner(
        function(tmp_path, "One", timeout=60),
        {"OWN_VALUE": "one", "AWS_LAMBDA_FUNCTION_NAME": "stack-One"},
        tmp_path / "one.log",
        speed=30,  # a 60 s Timeout is 2 real seconds
    )
    two = FunctionRunner(
        function(tmp_path, "Two", timeout=60),
        {"OWN_VALUE": "two", "OTHER_VALUE": "only-two"},
        tmp_path / "two.log",
        speed=30,
    )
    scheduler = Scheduler({"One": one, "Two": two}, speed=30)
    try:
        first = scheduler.invoke("One", {})
        second = scheduler.invoke("One", {})
        other = scheduler.invoke("Two", {})
        assert first.ok, first
        assert first.result["value"] == "one"
        assert first.result["other"] is None  # Two's variable is not One's
        assert other.result == {**other.result, "value": "two", "other": "only-two"}
        assert first.result["name"] == "stack-One"
        assert 0 < first.result["remaining"] <= 2000
        assert first.cold
        assert not second.cold
        assert second.result["pid"] == first.result["pid"]  # warm: the same container

        late = scheduler.invoke("One", {"sleep": 30})
        assert late.status == "timeout"
        assert "timed out" in (late.error or "")
        # Where the run was when it was killed, in the function's log.
        assert re.search(r'File ".*app\.py", line \d+ in handler', (tmp_path / "one.log").read_text())
        after = scheduler.invoke("One", {})
        assert after.ok
        assert after.cold
        assert after.result["pid"] != first.result["pid"]
        assert one.stats.timeouts == 1
    finally:
        scheduler.stop(grace=1)
