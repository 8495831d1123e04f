"""template.yaml's Diadoc part: one schedule per box from a parameter, as CloudFormation will expand it,
and the template still passes cfn-lint and `sam validate --lint`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from samcli.lib.cfn_language_extensions.api import process_template

from local_stack.template import ROOT, TEMPLATE, Stack, expand_for_each

FUNCTION = "DiadocPollerFunction"
BOXES = ["2f8d1c3e6b0a4c57a1d0c6b1e9f04a21@diadoc.ru", "box-2@diadoc.ru", "3"]


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


def test_each_box_of_the_parameter_gets_a_schedule_invoking_the_poller_with_its_id():
    stack = _evaluated({"DiadocBoxIds": ",".join(BOXES), "DiadocPollSchedule": "rate(2 minutes)"})

    schedules = stack.function(FUNCTION).schedules
    assert [s.input for s in schedules] == [{"boxId": box} for box in BOXES]
    assert {s.seconds for s in schedules} == {120}
    assert [s.name for s in schedules] == [
        "DiadocSchedule2f8d1c3e6b0a4c57a1d0c6b1e9f04a21diadocru",
        "DiadocSchedulebox2diadocru",
        "DiadocSchedule3",
    ]
    assert stack.condition("HasDiadocBoxes")
    assert [logical for logical, _ in stack.resources("AWS::IAM::Role")] == ["DiadocSchedulerRole"]


def test_without_boxes_there_is_no_diadoc_schedule_but_the_function_exists():
    stack = _evaluated({})
    assert not stack.condition("HasDiadocBoxes")
    assert stack.function(FUNCTION).schedules == []
    assert list(stack.resources("AWS::Scheduler::Schedule")) == []
    environment = stack.function(FUNCTION).environment
    assert environment["DIADOC_API_URL"] == "https://diadoc-api.kontur.ru"
    assert (environment["DIADOC_API_VERSION"], environment["DIADOC_PAGE_SIZE"], environment["DIADOC_START"]) == (
        "V8",
        "100",
        "oldest",
    )
    assert environment["DIADOC_CREDENTIALS_SECRET"] == "DiadocCredentials-physical"
    assert environment["DIADOC_BOX_SETTINGS"] == ""


def test_the_local_expansion_is_cloudformations():
    """SAM CLI's implementation of AWS::LanguageExtensions, the reference for the local stack's."""
    stack = _evaluated({"DiadocBoxIds": ",".join(BOXES)})
    theirs = process_template(json.loads(json.dumps(stack.doc)), {"DiadocBoxIds": BOXES})["Resources"]
    ours = expand_for_each(stack.doc["Resources"], stack.resolve)
    schedules = sorted(k for k, v in ours.items() if v.get("Type") == "AWS::Scheduler::Schedule")
    assert schedules == sorted(k for k, v in theirs.items() if v.get("Type") == "AWS::Scheduler::Schedule")
    for logical_id in schedules:
        target = ours[logical_id]["Properties"]["Target"]
        assert stack.resolve(target["Input"]) == theirs[logical_id]["Properties"]["Target"]["Input"]
        assert target["Arn"] == {"Fn::GetAtt": [FUNCTION, "Arn"]}


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
