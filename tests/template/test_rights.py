"""Every function holds exactly the rights its code uses: each AWS call a function made while the
tests drove it (recorded by tests/rights.py, in this module's own runs of every function and in every
other test of the session) is allowed by the function's role in the template as SAM transforms it,
its resource and its conditions (``dynamodb:LeadingKeys``, ``dynamodb:Attributes``) included; and
every action a role allows is one the function was seen to use.

The template is evaluated with ARNs of its own making for each resource; a recorded call names its
resource by the environment variable that told the function about it, which maps onto those ARNs.
Runs last (tests/conftest.py), after every other test has added what it recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.boxes import feed_id
from local_stack.constants import ACCOUNT, REGION
from local_stack.context import LocalContext
from local_stack.receiver import WebhookReceiver
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack, provision
from tests import rights
from tests.conftest import load_handler
from tests.e2e.test_admin_api import CLIENT_ID, admin_world
from tests.template.iam import ITEM_OPERATIONS, listed, verdict
from tests.template.sam import resources, sam_transform

#: Roles' managed policies (CloudWatch Logs) are SAM's and AWS's; the checks here are of the inline ones.
SERVICES = ("dynamodb", "sns", "s3", "secretsmanager", "sqs", "events")
POLLERS = ("ExternPollerFunction", "DiadocPollerFunction")


# -- the template, with ARNs of its own making ------------------------------------------------------


def symbolic(parameters: dict[str, str] | None = None) -> Stack:
    """template.yaml evaluated with a name for every resource, shaped as each service's ARNs are."""
    stack = Stack(name="relay", parameters=dict(parameters or {}))
    arn = f"{REGION}:{ACCOUNT}"
    for logical_id, resource in resources(stack):
        kind = resource["Type"]
        if kind == "AWS::DynamoDB::Table":
            stack.physical[logical_id] = name = f"table-{logical_id}"
            stack.attributes[(logical_id, "Arn")] = f"arn:aws:dynamodb:{arn}:table/{name}"
        elif kind == "AWS::SNS::Topic":
            stack.physical[logical_id] = stack.attributes[(logical_id, "TopicArn")] = f"arn:aws:sns:{arn}:{logical_id}"
            stack.attributes[(logical_id, "TopicName")] = logical_id
        elif kind == "AWS::S3::Bucket":
            stack.physical[logical_id] = name = f"bucket-{logical_id.lower()}"
            stack.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
        elif kind == "AWS::SecretsManager::Secret":
            stack.physical[logical_id] = f"arn:aws:secretsmanager:{arn}:secret:{logical_id}-AbCdEf"
        elif kind == "AWS::SQS::Queue":
            stack.physical[logical_id] = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{logical_id}"
            stack.attributes[(logical_id, "Arn")] = f"arn:aws:sqs:{arn}:{logical_id}"
            stack.attributes[(logical_id, "QueueName")] = logical_id
        elif kind == "AWS::Events::EventBus":
            stack.physical[logical_id] = name = str(stack.resolve(resource["Properties"]["Name"]))
            stack.attributes[(logical_id, "Arn")] = f"arn:aws:events:{arn}:event-bus/{name}"
        elif kind == "AWS::Serverless::Function":
            stack.physical[logical_id] = logical_id
            stack.attributes[(logical_id, "Arn")] = f"arn:aws:lambda:{arn}:function:{logical_id}"
            stack.attributes[(f"{logical_id}Role", "Arn")] = f"arn:aws:iam::{ACCOUNT}:role/{logical_id}Role"
        else:
            stack.physical[logical_id] = logical_id
    return stack


def roles(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    """Each function's role statements, as SAM writes them, evaluated: its inline policies, and the
    policies of their own attached to its role (the sink's)."""
    transformed = sam_transform(stack)["Resources"]
    found: dict[str, list[dict[str, Any]]] = {}
    for logical_id, resource in resources(stack):
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        role = transformed[f"{logical_id}Role"]["Properties"]
        documents = [policy["PolicyDocument"] for policy in role.get("Policies", [])] + [
            attached["Properties"]["PolicyDocument"]
            for attached in transformed.values()
            if attached["Type"] == "AWS::IAM::Policy"
            and {"Ref": f"{logical_id}Role"} in attached["Properties"].get("Roles", [])
            and ("Condition" not in attached or stack.condition(attached["Condition"]))
        ]
        found[logical_id] = [
            statement
            for document in documents
            for statement in (stack.resolve(item) for item in listed(document["Statement"]))
            if statement is not None  # a statement of another sink
        ]
    return found


def resource_arn(stack: Stack, function: str, call: rights.Call) -> str | None:  # noqa: PLR0911 - per service
    """The ARN of what ``call`` named, by the variable of ``function``'s environment that named it."""
    if call.variable is None:
        return None
    globals_ = stack.doc["Globals"]["Function"]["Environment"]["Variables"]
    variables = {
        **globals_,
        **stack.doc["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}),
    }
    if call.variable not in variables:
        return None
    value = str(stack.resolve(variables[call.variable]))
    service = call.action.split(":", 1)[0]
    if service == "dynamodb":
        return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{value}"
    if service == "s3":
        return f"arn:aws:s3:::{value}/{call.object_key or ''}"
    if service == "events" and not value.startswith("arn:"):
        return f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{value}"
    if service == "sqs":
        # https://sqs.<region>.amazonaws.com/<account>/<name>
        host, account, name = value.split("/")[2:5]
        return f"arn:aws:sqs:{host.split('.')[1]}:{account}:{name}"
    return value


# -- driving every function -------------------------------------------------------------------------


def _fill(stack: Stack, logical_id: str, values: dict[str, Any]) -> None:
    """A new current version of the secret. (moto leaves AWSCURRENT on a version UpdateSecretVersionStage
    moved it to, as a write-back does, when a put comes later; Secrets Manager moves it.)"""
    client, name = boto3.client("secretsmanager"), stack.physical[logical_id]
    current = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["VersionId"]
    new = client.put_secret_value(SecretId=name, SecretString=json.dumps(values))["VersionId"]
    if client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["VersionId"] != new:
        client.update_secret_version_stage(
            SecretId=name, VersionStage="AWSCURRENT", MoveToVersionId=new, RemoveFromVersionId=current
        )


def drive_the_pollers(stack: Stack, monkeypatch: pytest.MonkeyPatch, *, pad: int = 200_000) -> None:
    """Each poller: not configured yet, then with a rotating refresh token, an event over its sink's
    limit (``pad`` Cyrillic letters: 2 bytes each), and a 401 that renews its token."""
    with (
        IdentitySimulator(token_lifetime=600) as identity,
        ExternSimulator(identity, seed=3) as extern,
        DiadocSimulator(identity, seed=5) as diadoc,
    ):
        for function, api, secret in (
            ("ExternPollerFunction", {"EXTERN_API_URL": extern.url}, "ExternCredentials"),
            ("DiadocPollerFunction", {"DIADOC_API_URL": diadoc.url}, "DiadocCredentials"),
        ):
            _fill(stack, secret, {})  # as the stack creates it
            empty = load_handler(stack.function(function), monkeypatch, **api).handler
            assert empty({}, LocalContext(function))["outcome"] == "not_configured"

        api_key, username = secrets.token_hex(16), "svc@integrator.example"
        extern.add_integrator(CLIENT_ID, api_key, username=username, password=secrets.token_urlsafe(12))
        extern.setup(CLIENT_ID, accounts=2, backlog=30)
        refresh = identity.refresh_token_for(username, CLIENT_ID)
        oidc = {"token_url": identity.token_url, "client_id": CLIENT_ID, "client_secret": api_key}
        _fill(stack, "ExternCredentials", {**oidc, "grant_type": "refresh_token", "refresh_token": refresh})
        extern.faults.add(Fault.expired_token(), prefix="/v1/events")
        huge = Fault.altered("huge", lambda body: body["api-events"][0].update(big="я" * pad))
        extern.faults.add(huge, prefix="/v1/events")
        poller = load_handler(stack.function("ExternPollerFunction"), monkeypatch, EXTERN_API_URL=extern.url).handler
        assert poller({"feed": "extern"}, LocalContext("ExternPollerFunction"))["outcome"] == "caught_up"
        poller({"feed": "extern"}, LocalContext("ExternPollerFunction"))

        legacy = diadoc.setup(boxes=1, backlog=5)
        box = next(iter(diadoc.boxes))
        identity.register_client(CLIENT_ID, api_key)
        refresh = identity.refresh_token_for(legacy["login"], CLIENT_ID)
        _fill(stack, "DiadocCredentials", {**oidc, "grant_type": "refresh_token", "refresh_token": refresh})
        event = pb.BoxEvent.FromString(diadoc.raw_event(box, diadoc.generate(box, 1)[0]))
        event.EventId, event.Message.FromTitle = str(uuid.uuid4()), "я" * pad
        diadoc.add_event(box, event)
        registry = DynamoBoxRegistry(boto3.resource("dynamodb").Table(stack.physical["CursorsTable"]))
        registry.register(
            feed_id(box),
            {"start": "oldest", "limit": 100},
            "",
            by="test",
            expected_version=0,
            restart=False,
            first_poll_at=0,
        )
        poller = load_handler(stack.function("DiadocPollerFunction"), monkeypatch, DIADOC_API_URL=diadoc.url).handler
        assert poller({}, LocalContext("DiadocPollerFunction"))["events"] == 7


def drive_the_admin_api(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every route, the integrator's tokens rotating: the feeds, the publishers, the boxes and discovery."""
    with admin_world(stack, monkeypatch) as world:
        secret = json.loads(world.secretsmanager.get_secret_value(SecretId=world.secret_id)["SecretString"])
        refresh = world.identity.refresh_token_for(secret["username"], CLIENT_ID)
        _fill(stack, "ExternCredentials", {**secret, "grant_type": "refresh_token", "refresh_token": refresh})
        diadoc = json.loads(
            world.secretsmanager.get_secret_value(SecretId=stack.physical["DiadocCredentials"])["SecretString"]
        )
        world.identity.register_client("relay-diadoc", "diadoc-secret")
        oidc = {"token_url": world.identity.token_url, "client_id": "relay-diadoc", "client_secret": "diadoc-secret"}
        refresh = world.identity.refresh_token_for(diadoc["login"], "relay-diadoc")
        _fill(stack, "DiadocCredentials", {**oidc, "grant_type": "refresh_token", "refresh_token": refresh})

        account = world.extern.add_account()
        api = world.api
        assert world.share(account).status_code == 200
        assert api.request("GET", "/event-publishers").status_code == 200
        assert api.request("DELETE", "/event-publishers/ep-unknown").status_code == 404
        box = next(iter(world.diadoc.boxes))
        assert api.request("PUT", f"/diadoc/boxes/{box}").status_code == 201
        assert api.request("GET", f"/diadoc/boxes/{box}").status_code == 200
        assert api.request("GET", "/diadoc/boxes").status_code == 200
        assert api.request("POST", "/diadoc/boxes/discover", json_body={"register": True}).status_code == 200
        assert api.request("DELETE", f"/diadoc/boxes/{box}").status_code == 204
        assert api.request("GET", "/feeds").status_code == 200
        assert api.request("GET", "/feeds/extern").status_code in (200, 404)
        current = api.request("GET", f"/feeds/diadoc:{box}").json()
        change = {"cursor": None, "expectedVersion": current["version"]}
        assert api.request("PUT", f"/feeds/diadoc:{box}/cursor", json_body=change).status_code == 200


# -- the proof --------------------------------------------------------------------------------------


def judge(template: Stack, calls: list[rights.Call], functions: set[str] | None = None) -> tuple[list[str], list[str]]:
    """The calls ``template``'s roles refuse, and the rights of ``functions`` (every function: None)
    that no call used."""
    statements = roles(template)
    used: dict[str, set[str]] = defaultdict(set)
    refused: list[str] = []
    for call in set(calls):
        if call.function not in statements:
            continue  # a function of another template (examples/consumer)
        used[call.function].add(call.action)
        arn = resource_arn(template, call.function, call)
        if arn is None:
            refused.append(
                f"{call.function}: {call.action} on {call.resource!r}, named by no variable of its environment"
            )
        elif not verdict(statements[call.function], call, arn):
            refused.append(
                f"{call.function}: {call.action} on {arn} (key {call.key}, attributes {sorted(call.attributes)})"
            )
    judged = set(statements) if functions is None else functions
    assert judged <= set(used), f"not driven: {sorted(judged - set(used))}"
    unused = [
        f"{function}: {action}"
        for function in judged
        for statement in statements[function]
        if statement["Effect"] == "Allow" and not _failure_destination(statement)
        for action in listed(statement["Action"])
        if action.split(":", 1)[0] in SERVICES and action not in used[function]
    ]
    return sorted(refused), sorted(unused)


def test_every_function_holds_exactly_the_rights_its_code_uses(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    drive_the_admin_api(stack, monkeypatch)
    drive_the_pollers(stack, monkeypatch)

    # The default sink's (SNS) deployment: every call but those of other sinks' tests below.
    refused, unused = judge(symbolic(), [call for call in rights.CALLS if call.sink in (None, "sns")])

    assert not refused, "calls the template's roles do not allow:\n" + "\n".join(refused)
    assert not unused, "rights no code of the function was seen to use:\n" + "\n".join(unused)


def _failure_destination(statement: dict[str, Any]) -> bool:
    """What SAM grants for EventInvokeConfig's OnFailure queue: Lambda sends there with the function's
    role, no code of the function does."""
    return listed(statement["Action"]) == ["sqs:SendMessage"] and "FailedRunsQueue" in json.dumps(statement)


def test_the_pollers_reach_only_their_own_kinds_items(stack: Stack):
    """Item rights are narrowed by key (a Scan names none, so it cannot be)."""
    statements = roles(symbolic())
    for function, prefix in (("ExternPollerFunction", "extern"), ("DiadocPollerFunction", "diadoc")):
        for statement in statements[function]:
            if set(listed(statement["Action"])) & ITEM_OPERATIONS:
                keys = [
                    value
                    for tests in statement["Condition"].values()
                    for value in tests.get("dynamodb:LeadingKeys", [])
                ]
                assert keys, f"{function}: {statement['Sid']} reaches every item of the table"
                assert all(key.startswith(prefix) for key in keys), (function, keys)
        other = "diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru" if prefix == "extern" else "extern"
        call = rights.Call(function, "dynamodb:UpdateItem", "CURSORS_TABLE", "t", key=other)
        assert not verdict(statements[function], call, resource_arn(symbolic(), function, call) or ""), (
            f"{function} may write {other}"
        )


# -- the other sinks ----------------------------------------------------------------------------------


@contextmanager
def deployed_with(sink: str, aws: dict[str, Any]) -> Iterator[tuple[Stack, dict[str, str]]]:
    """The template provisioned with ``sink``, and the parameters the symbolic template takes for it."""
    parameters = {"Sink": sink.removesuffix("-compatible")}
    symbolic_parameters = dict(parameters)
    receiver = None
    if sink == "webhook":
        receiver = WebhookReceiver().start()
        parameters["WebhookUrl"] = symbolic_parameters["WebhookUrl"] = receiver.endpoint
    if sink == "sqs-compatible":
        # moto stands in for the other service, reached with keys of its own, not the function's.
        queue = aws["sqs"].create_queue(QueueName=f"elsewhere-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        keys = {"aws_access_key_id": "yc-key", "aws_secret_access_key": "yc-secret", "region_name": REGION}
        secret = aws["secretsmanager"].create_secret(Name=f"yc-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(keys))
        parameters |= {
            "QueueEndpointUrl": os.environ["AWS_ENDPOINT_URL"],
            "QueueUrl": queue,
            "QueueCredentialsSecretArn": secret["ARN"],
        }
        symbolic_parameters |= {
            "QueueEndpointUrl": "https://message-queue.api.cloud.yandex.net",
            "QueueUrl": "https://message-queue.api.cloud.yandex.net/b1g/dj6/events",
            "QueueCredentialsSecretArn": secret["ARN"],
        }
    stack = provision(Stack(name=f"t{uuid.uuid4().hex[:10]}", parameters=parameters), aws)
    if sink == "sqs":
        # A queue that takes 256 KiB, as queues did for years: the drive's 400 KB event is offloaded.
        limit = {"MaximumMessageSize": "262144"}
        aws["sqs"].set_queue_attributes(QueueUrl=stack.physical["EventsQueue"], Attributes=limit)
    if receiver is not None:
        secret_id = stack.physical["WebhookSecret"]
        receiver.set_secret(aws["secretsmanager"].get_secret_value(SecretId=secret_id)["SecretString"])
    try:
        yield stack, symbolic_parameters
    finally:
        if receiver is not None:
            receiver.stop()


@pytest.mark.slow
@pytest.mark.parametrize("sink", ["eventbridge", "sqs", "sqs-compatible", "webhook"])
def test_each_sink_s_pollers_hold_exactly_the_rights_their_sink_uses(sink: str, aws, monkeypatch: pytest.MonkeyPatch):
    """The pollers deployed with each other sink: every call allowed, every right granted used."""
    with deployed_with(sink, aws) as (stack, parameters):
        # The webhook offloads above 1 MiB.
        drive_the_pollers(stack, monkeypatch, pad=600_000 if sink == "webhook" else 200_000)

    calls = [call for call in rights.CALLS if call.sink == sink]
    refused, unused = judge(symbolic(parameters), calls, set(POLLERS))

    assert not refused, "calls the template's roles do not allow:\n" + "\n".join(refused)
    assert not unused, "rights no code of the function was seen to use:\n" + "\n".join(unused)
