"""template.yaml's Diadoc part: one schedule for one poller of every registered box, its budget and
intervals from parameters, no box in the template at all, and the template still passes cfn-lint and
`sam validate --lint`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform

from local_stack.template import ROOT, TEMPLATE, Stack

FUNCTION = "DiadocPollerFunction"
#: The parameters of the budget and the intervals, each the poller's variable of the same name.
BUDGET = ("DiadocMaxInFlight", "DiadocMaxRequestsPerSecond", "DiadocMinPollSeconds", "DiadocMaxPollSeconds")


def _evaluated(parameters: dict[str, str]) -> Stack:
    """The template for a parameter set, with made-up physical names instead of provisioned ones."""
    stack = Stack(parameters=parameters)
    for logical_id in (
        "CursorsTable",
        "EventsTopic",
        "ExternCredentials",
        "DiadocCredentials",
        "FailedRunsQueue",
        "PayloadBucket",
    ):
        stack.physical[logical_id] = f"{logical_id}-physical"
    stack.attributes[("EventsTopic", "TopicName")] = "events"
    stack.attributes[("FailedRunsQueue", "Arn")] = "arn:aws:sqs:us-east-1:123456789012:failed"
    return stack


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def _transformed(stack: Stack) -> dict[str, Any]:
    """The template as SAM hands it to CloudFormation: the resources a deployment creates."""
    document = json.loads(json.dumps(stack.doc))
    for resource in document["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = "s3://bucket/key"  # what `sam package` puts there
    region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "eu-central-1"
    try:
        parameters = {name: stack._parameter(name) for name in stack.parameters}
        result: dict[str, Any] = transform(document, parameters, _NoManagedPolicies())
    finally:
        if region is None:
            del os.environ["AWS_DEFAULT_REGION"]
        else:
            os.environ["AWS_DEFAULT_REGION"] = region
    return result


def test_one_schedule_invokes_the_poller_with_no_box_at_the_parameters_rate():
    stack = _evaluated({"DiadocPollSchedule": "rate(2 minutes)"})

    events = stack.doc["Resources"][FUNCTION]["Properties"]["Events"]
    assert [event["Type"] for event in events.values()] == ["ScheduleV2"]
    (event,) = events.values()
    assert event["Properties"]["ScheduleExpression"] == {"Ref": "DiadocPollSchedule"}
    (schedule,) = stack.function(FUNCTION).schedules
    assert (schedule.input, schedule.seconds) == ({}, 120)

    # As deployed: one EventBridge Scheduler schedule with input {} targets the poller.
    resources = _transformed(stack)["Resources"]
    schedules = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Scheduler::Schedule" and r["Properties"]["Target"]["Arn"]["Fn::GetAtt"][0] == FUNCTION
    ]
    assert len(schedules) == 1
    assert schedules[0]["Target"]["Arn"] == {"Fn::GetAtt": [FUNCTION, "Arn"]}
    assert json.loads(schedules[0]["Target"]["Input"]) == {}
    assert schedules[0]["ScheduleExpression"] == {"Ref": "DiadocPollSchedule"}


def test_the_budget_and_the_intervals_reach_the_poller_from_the_parameters_of_the_same_names():
    variables = Stack().doc["Resources"][FUNCTION]["Properties"]["Environment"]["Variables"]
    for parameter in BUDGET:
        assert variables[_upper_snake(parameter)] == {"Ref": parameter}

    given = {"DiadocMaxInFlight": "3", "DiadocMaxRequestsPerSecond": "17", "DiadocMinPollSeconds": "30"}
    environment = _evaluated({**given, "DiadocMaxPollSeconds": "900"}).function(FUNCTION).environment
    assert {name: environment[name] for name in map(_upper_snake, BUDGET)} == {
        "DIADOC_MAX_IN_FLIGHT": "3",
        "DIADOC_MAX_REQUESTS_PER_SECOND": "17",
        "DIADOC_MIN_POLL_SECONDS": "30",
        "DIADOC_MAX_POLL_SECONDS": "900",
    }
    defaults = _evaluated({}).function(FUNCTION).environment
    assert [defaults[_upper_snake(name)] for name in BUDGET] == ["4", "20", "60", "3600"]


def test_the_poller_is_told_the_deployments_defaults_and_no_boxes():
    environment = _evaluated({}).function(FUNCTION).environment
    assert environment["DIADOC_API_URL"] == "https://diadoc-api.kontur.ru"
    assert (environment["DIADOC_API_VERSION"], environment["DIADOC_PAGE_SIZE"], environment["DIADOC_START"]) == (
        "V8",
        "500",
        "oldest",
    )
    assert environment["DIADOC_CREDENTIALS_SECRET"] == "DiadocCredentials-physical"
    assert not [name for name in environment if "BOX" in name]


def test_boxes_are_no_part_of_the_template_so_it_does_not_grow_with_them():
    text = TEMPLATE.read_text()
    assert "Fn::ForEach" not in text
    assert "AWS::LanguageExtensions" not in text
    stack = _evaluated({})
    transforms = stack.doc["Transform"] if isinstance(stack.doc["Transform"], list) else [stack.doc["Transform"]]
    assert transforms == ["AWS::Serverless-2016-10-31"]
    assert not [name for name in stack.doc["Parameters"] if "Box" in name], "boxes are registered, not deployed"
    assert "language_extensions" not in (ROOT / "samconfig.toml").read_text()

    # Whatever the parameters, the same resources: nothing is made per box.
    small = _transformed(_evaluated({}))["Resources"]
    busy = {"DiadocMaxInFlight": "8", "DiadocMaxRequestsPerSecond": "100", "DiadocPollSchedule": "rate(5 minutes)"}
    assert set(_transformed(_evaluated(busy))["Resources"]) == set(small)
    functions = sorted(lid for lid, r in small.items() if r["Type"] == "AWS::Lambda::Function" and "Diadoc" in lid)
    assert functions == ["DiadocBoxesApiFunction", FUNCTION], "one poller and the boxes' admin routes, none per box"


def test_cfn_lint_and_sam_validate_accept_the_template():
    environment = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    binaries = Path(sys.executable).parent
    lint = subprocess.run(
        [str(binaries / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, env=environment, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    validate = subprocess.run(
        [str(binaries / "sam"), "validate", "--lint", "--template-file", str(TEMPLATE)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "is a valid SAM Template" in validate.stdout + validate.stderr
