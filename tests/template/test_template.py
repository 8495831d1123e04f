"""template.yaml: SAM and cfn-lint accept it, `sam build` builds it, and it holds what a reviewer
checks by hand: least-privilege roles, pollers whose failures go somewhere, a recoverable table, and
the environment the code reads.

Every check runs over all functions, tables and roles, whoever adds them: a new function is held to
the same rules without touching this file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local_stack.services import LOCAL_CREDENTIALS
from local_stack.template import ROOT, TEMPLATE, Stack
from tests.template.sam import resources, sam_transform

BIN = Path(sys.executable).parent
#: Managed policies SAM attaches itself: CloudWatch Logs for every function, X-Ray for Tracing: Active
#: (X-Ray's PutTraceSegments takes no resource, so no narrower grant exists).
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
#: The one role API Gateway's account setting names, for every API's logs in the Region: AWS's own policy.
ACCOUNT_LOGS_POLICY = {
    "ApiGatewayLogsRole": {"arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"}
}


def tool_environment() -> dict[str, str]:
    """SAM CLI and cfn-lint run offline: a region, placeholder credentials, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    return {**env, **LOCAL_CREDENTIALS, "SAM_CLI_TELEMETRY": "0", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def run(command: list[str], *, env: dict[str, str] | None = None, timeout: float = 240) -> str:
    result = subprocess.run(
        command, cwd=ROOT, env=env or tool_environment(), capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed ({result.returncode}):\n{output[-6000:]}"
    return output


def with_python313(env: dict[str, str]) -> dict[str, str]:
    """``sam build`` needs the runtime's python3.13 on PATH. The Makefile adds pyenv's; a bare pytest
    may only see pyenv's shim, which fails unless 3.13 is the selected version."""

    def works(path: str) -> bool:
        found = shutil.which("python3.13", path=path)
        if found is None:
            return False
        probe = subprocess.run([found, "--version"], capture_output=True, env={**env, "PATH": path}, check=False)
        return probe.returncode == 0

    path = env["PATH"]
    if works(path):
        return env
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.13*/bin"), reverse=True):
        if works(f"{candidate}{os.pathsep}{path}"):
            return {**env, "PATH": f"{candidate}{os.pathsep}{path}"}
    pytest.fail(
        "sam build needs python3.13 (the Lambda runtime of template.yaml) on PATH, and none runs here: "
        "install it (e.g. `pyenv install 3.13`) or put its bin directory on PATH, then rerun."
    )


# -- the tools ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sam_validate_lint_accepts_the_template() -> None:
    output = run([str(BIN / "sam"), "validate", "--lint", "--template-file", str(TEMPLATE)])
    assert "is a valid SAM Template" in output


@pytest.mark.slow
def test_cfn_lint_finds_nothing() -> None:
    run([str(BIN / "cfn-lint"), str(TEMPLATE)])


def requirement_pins() -> dict[str, str]:
    """The layer's lock: every package, transitive ones included, by normalised name."""
    lines = (ROOT / "layers" / "relay" / "requirements.txt").read_text().splitlines()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", "\n".join(lines), flags=re.MULTILINE))
    return {re.sub(r"[-_.]+", "_", name).lower(): version for name, version in pins.items()}


@pytest.mark.slow
def test_sam_build_builds_every_function_and_the_layer_for_arm64(tmp_path: Path) -> None:
    build = tmp_path / "build"
    run(
        [str(BIN / "sam"), "build", "--build-dir", str(build), "--template-file", str(TEMPLATE)],
        env=with_python313(tool_environment()),
        timeout=280,
    )

    assert (build / "template.yaml").is_file()
    for logical_id, resource in resources(Stack()):
        if resource["Type"] == "AWS::Serverless::Function":
            module = resource["Properties"]["Handler"].split(".")[0]
            assert (build / logical_id / f"{module}.py").is_file(), f"{logical_id}'s handler was not built"
    layer = build / "RelayLayer" / "python"
    assert (layer / "kontur_relay" / "domain" / "engine.py").is_file()
    built = dict(path.name.removesuffix(".dist-info").lower().split("-", 1) for path in layer.glob("*.dist-info"))
    # The lock, exactly: every package at its version, and nothing the tests did not run on.
    assert built == requirement_pins()
    sources = [path for path in (layer / "kontur_relay").rglob("*.py") if "_pb2" not in path.name]
    # Compiled at build time by CPython 3.13, the runtime's: a cold start does not compile the layer.
    missing = [path for path in sources if not (path.parent / "__pycache__" / f"{path.stem}.cpython-313.pyc").is_file()]
    assert not missing, f"shipped without bytecode: {missing[:5]}"
    extensions = [path.name for path in layer.rglob("*.so")]
    assert extensions, "no compiled extension at all: was anything installed?"
    assert not [name for name in extensions if "x86_64" in name], "x86 binaries in an arm64 layer"


# -- the template, read -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack()


@pytest.fixture(scope="module")
def functions(stack: Stack) -> dict[str, dict[str, Any]]:
    found = {lid: r["Properties"] for lid, r in resources(stack) if r["Type"] == "AWS::Serverless::Function"}
    assert found, "no functions in template.yaml"
    return found


@pytest.fixture(scope="module")
def transformed(stack: Stack) -> dict[str, Any]:
    return sam_transform(stack)


def environment(stack: Stack, props: dict[str, Any]) -> dict[str, Any]:
    globals_ = stack.doc.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    return {**globals_, **props.get("Environment", {}).get("Variables", {})}


def referenced(value: Any) -> set[str]:
    """Logical ids and parameters a value may refer to (every branch of an Fn::If)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return {target.split(".")[0] if isinstance(target, str) else target[0]}
        if "Fn::If" in value:
            return referenced(value["Fn::If"][1]) | referenced(value["Fn::If"][2])
        return set().union(*(referenced(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced(v) for v in value)) if value else set()
    return set()


# -- least privilege ------------------------------------------------------------------------------


def test_every_function_gets_a_role_sam_writes_from_policies_in_the_template(functions) -> None:
    for logical_id, props in functions.items():
        assert "Role" not in props, f"{logical_id} brings its own role: its permissions escape review here"
        for policy in props.get("Policies", []):
            assert not isinstance(policy, str) or policy in SAM_MANAGED_POLICIES, (
                f"{logical_id} attaches the managed policy {policy}: grant named actions on named resources"
            )


def _statements(transformed: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in transformed["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            documents = [policy["PolicyDocument"] for policy in props.get("Policies", [])]
        elif resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [props["PolicyDocument"]]
        else:
            continue
        for document in documents:
            statements = document["Statement"]
            for statement in statements if isinstance(statements, list) else [statements]:
                for branch in _branches(statement):
                    yield logical_id, branch


def _branches(statement: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A statement, or each statement an Fn::If may make of it (a sink's, granted with that sink only)."""
    if "Fn::If" not in statement:
        yield statement
        return
    for branch in statement["Fn::If"][1:]:
        if isinstance(branch, dict) and branch != {"Ref": "AWS::NoValue"}:
            yield from _branches(branch)


def _resource_texts(value: Any) -> Iterator[str]:
    """The ARN patterns a Resource can take; an intrinsic that names a resource yields nothing."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _resource_texts(item)
    elif isinstance(value, dict) and "Fn::Sub" in value:
        arg = value["Fn::Sub"]
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        for name, variable in variables.items():
            if isinstance(variable, str):
                text = text.replace("${" + name + "}", variable)
        yield text
    elif isinstance(value, dict) and "Fn::If" in value:
        yield from _resource_texts(value["Fn::If"][1:])
    elif isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        yield separator.join(part if isinstance(part, str) else "${named}" for part in parts)


def _too_broad(pattern: str) -> bool:
    """``*``, or an ARN whose account, region, service or resource name is a wildcard.
    ``table/${tableName}/index/*`` (every index of one table) is fine."""
    if pattern.strip() == "*":
        return True
    # A substitution (${AWS::Region}, ${tableName}) names one thing; its colons are not the ARN's.
    parts = re.sub(r"\$\{[^}]*\}", "named", pattern).split(":", 5)
    if len(parts) < 6:
        return False
    _, partition, service, region, account, rest = parts
    if any("*" in part for part in (partition, service, region, account)):
        return True
    return any(segment.startswith("*") for segment in re.split(r"[:/]", rest)[:2])


def test_every_role_grants_named_actions_on_named_resources(transformed: dict[str, Any]) -> None:
    broad = []
    for logical_id, statement in _statements(transformed):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            broad.append(f"{logical_id}: NotAction/NotResource grants everything else")
        actions = statement.get("Action", [])
        for action in [actions] if isinstance(actions, str) else actions:
            if "*" in action:
                broad.append(f"{logical_id}: action {action}")
        for pattern in _resource_texts(statement.get("Resource")):
            if _too_broad(pattern):
                broad.append(f"{logical_id}: resource {pattern} for {actions}")
    assert not broad, "grants wider than least privilege:\n" + "\n".join(broad)


def test_roles_attach_no_managed_policy_beyond_what_sam_adds(transformed: dict[str, Any]) -> None:
    for logical_id, resource in transformed["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            allowed = SAM_MANAGED_POLICIES | ACCOUNT_LOGS_POLICY.get(logical_id, set())
            extra = set(resource["Properties"].get("ManagedPolicyArns", [])) - allowed
            assert not extra, f"{logical_id} attaches {extra}"


def test_a_function_that_names_a_secret_may_read_that_secret(stack: Stack, functions) -> None:
    for logical_id, props in functions.items():
        # Its own policies, and those of the policies attached to its role (the sink's).
        attached = [
            resource["Properties"]["PolicyDocument"]
            for _, resource in resources(stack)
            if resource["Type"] == "AWS::IAM::Policy"
            and {"Ref": f"{logical_id}Role"} in resource["Properties"].get("Roles", [])
        ]
        readable = [
            statement.get("Resource")
            for policy in [*props.get("Policies", []), *attached]
            if isinstance(policy, dict)
            for wrapped in policy.get("Statement", [])
            for statement in _branches(wrapped)
            if "secretsmanager:GetSecretValue" in statement.get("Action", [])
        ]
        for name, value in environment(stack, props).items():
            if name.endswith("_SECRET"):
                assert _when_set(value) in readable, f"{logical_id} is told {name} but may not read it"


def _when_set(value: Any) -> Any:
    """A variable's value where it is set at all (a sink's only with that sink)."""
    if isinstance(value, dict) and "Fn::If" in value and value["Fn::If"][2] == {"Ref": "AWS::NoValue"}:
        return _when_set(value["Fn::If"][1])
    return value


# -- pollers ----------------------------------------------------------------------------------------


def scheduled(stack: Stack, functions: dict[str, dict[str, Any]]) -> set[str]:
    """Functions a schedule invokes: by a SAM Schedule event, or as an AWS::Scheduler::Schedule's target."""
    return {
        logical_id
        for logical_id, props in functions.items()
        if any(event["Type"] in ("Schedule", "ScheduleV2") for event in props.get("Events", {}).values())
        or stack.scheduler_schedules(logical_id)
    }


def test_every_scheduled_function_sends_its_failed_runs_somewhere_and_is_not_retried(stack: Stack, functions) -> None:
    scheduled_ids = scheduled(stack, functions)
    assert {"ExternPollerFunction", "DiadocPollerFunction"} <= scheduled_ids
    kinds = {logical_id: resource["Type"] for logical_id, resource in resources(stack)}
    for logical_id in scheduled_ids:
        config = functions[logical_id].get("EventInvokeConfig")
        assert config, f"{logical_id} has no EventInvokeConfig"
        # Lambda's own retries would rerun a failed tick beside the next one; the next tick is the retry.
        assert config.get("MaximumRetryAttempts") == 0, f"{logical_id}: Lambda retries failed runs"
        on_failure = config.get("DestinationConfig", {}).get("OnFailure", {})
        targets = referenced(on_failure.get("Destination"))
        assert targets, f"{logical_id}: a failed run goes nowhere"
        assert all(kinds.get(target) in ("AWS::SQS::Queue", "AWS::SNS::Topic") for target in targets), (
            f"{logical_id}: OnFailure {targets} is not a queue or topic of this template"
        )


#: Each sink's variable naming where events go, and what it may name: the stack's own resource, or
#: the parameter naming an existing one.
SINK_TARGETS = {
    "EVENTS_TOPIC_ARN": {"AWS::SNS::Topic"},
    "EVENT_BUS_NAME": {"AWS::Events::EventBus", "EventBusName"},
    "EVENTS_QUEUE_URL": {"AWS::SQS::Queue", "QueueUrl"},
    "WEBHOOK_URL": {"WebhookUrl"},
}


def test_every_scheduled_function_is_told_where_cursors_and_events_go(stack: Stack, functions) -> None:
    kinds = {logical_id: resource["Type"] for logical_id, resource in resources(stack)}
    for logical_id in scheduled(stack, functions):
        env = environment(stack, functions[logical_id])
        # A parameter may name the table instead (ExistingCursorsTable): the resource is still a table.
        tables = referenced(env.get("CURSORS_TABLE")) - set(stack.doc["Parameters"])
        assert {kinds.get(t) for t in tables} == {"AWS::DynamoDB::Table"}
        assert referenced(env.get("SINK")) == {"Sink"}
        for variable, targets in SINK_TARGETS.items():
            named = {kinds.get(t, t) for t in referenced(env.get(variable)) - {"AWS::NoValue"}}
            assert named == targets, f"{logical_id}: {variable} names {named}"


def test_the_pollers_are_told_the_same_sink(stack: Stack, functions) -> None:
    """The two pollers each carry the sink's variables (the admin functions none): one list, twice."""
    sink = {
        name: value
        for name, value in functions["ExternPollerFunction"]["Environment"]["Variables"].items()
        if name == "SINK" or name.startswith(("EVENT", "WEBHOOK_"))
    }
    diadoc = functions["DiadocPollerFunction"]["Environment"]["Variables"]
    assert {name: diadoc.get(name) for name in sink} == sink
    for logical_id, props in functions.items():
        if logical_id not in ("ExternPollerFunction", "DiadocPollerFunction"):
            assert "SINK" not in environment(stack, props), f"{logical_id} is told the sink it never uses"


def test_the_extern_poller_is_told_the_api_and_its_credentials(stack: Stack, functions) -> None:
    env = environment(stack, functions["ExternPollerFunction"])

    for name in ("CURSORS_TABLE", "SINK", "EXTERN_API_URL", "EXTERN_CREDENTIALS_SECRET"):
        assert name in env, f"the Extern poller's environment lacks {name}"
    assert referenced(env["EXTERN_API_URL"]) == {"ExternApiUrl"}
    assert referenced(env["EXTERN_CREDENTIALS_SECRET"]) == {"ExternCredentials", "ExternCredentialsSecretArn"}


# -- the cursor table -------------------------------------------------------------------------------


def test_every_table_is_on_demand_and_recoverable_to_a_point_in_time(stack: Stack) -> None:
    tables = {lid: r for lid, r in resources(stack) if r["Type"] == "AWS::DynamoDB::Table"}
    assert "CursorsTable" in tables
    for logical_id, table in tables.items():
        props = table["Properties"]
        assert props.get("BillingMode") == "PAY_PER_REQUEST", f"{logical_id} is not on-demand"
        pitr = props.get("PointInTimeRecoverySpecification", {})
        assert pitr.get("PointInTimeRecoveryEnabled") is True, f"{logical_id} has no point-in-time recovery"
        # Losing the cursors means replaying every feed from its start: a stack deletion keeps them.
        assert table.get("DeletionPolicy") == "Retain", f"{logical_id} is deleted with the stack"
