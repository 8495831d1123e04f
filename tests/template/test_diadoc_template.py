"""template.yaml's Diadoc part: one schedule for one poller of every registered box, its budget and
intervals from parameters, and no box in the template at all."""

from __future__ import annotations

import json
import re

from kontur_relay.feeds.diadoc.polling import Reconciling
from kontur_relay.settings import Env
from local_stack.template import ROOT, TEMPLATE, Stack
from tests.template.sam import offline, sam_transform

FUNCTION = "DiadocPollerFunction"
#: The parameters of the budget and the intervals, each the poller's variable of the same name.
BUDGET = ("DiadocMaxInFlight", "DiadocMaxRequestsPerSecond", "DiadocMinPollSeconds", "DiadocMaxPollSeconds")


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def test_one_schedule_invokes_the_poller_with_no_box_at_the_parameters_rate():
    stack = offline({"DiadocPollSchedule": "rate(2 minutes)"})

    events = stack.doc["Resources"][FUNCTION]["Properties"]["Events"]
    assert [event["Type"] for event in events.values()] == ["ScheduleV2"]
    (event,) = events.values()
    assert event["Properties"]["ScheduleExpression"] == {"Ref": "DiadocPollSchedule"}
    (schedule,) = stack.function(FUNCTION).schedules
    assert (schedule.input, schedule.seconds) == ({}, 120)

    # As deployed: one EventBridge Scheduler schedule with input {} targets the poller.
    resources = sam_transform(stack)["Resources"]
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
    environment = offline({**given, "DiadocMaxPollSeconds": "900"}).function(FUNCTION).environment
    assert {name: environment[name] for name in map(_upper_snake, BUDGET)} == {
        "DIADOC_MAX_IN_FLIGHT": "3",
        "DIADOC_MAX_REQUESTS_PER_SECOND": "17",
        "DIADOC_MIN_POLL_SECONDS": "30",
        "DIADOC_MAX_POLL_SECONDS": "900",
    }
    defaults = offline({}).function(FUNCTION).environment
    assert [defaults[_upper_snake(name)] for name in BUDGET] == ["4", "20", "60", "3600"]


RECONCILIATION = (
    "DiadocReconcileWindowSeconds",
    "DiadocReconcileEverySeconds",
    "DiadocLastEventCheckSeconds",
    "DiadocReconcileShare",
)


def test_reconciliation_reaches_the_poller_from_its_parameters_and_reads_the_memory_table_alone():
    variables = Stack().doc["Resources"][FUNCTION]["Properties"]["Environment"]["Variables"]
    for parameter in RECONCILIATION:
        assert variables[_upper_snake(parameter)] == {"Ref": parameter}
    defaults = offline({}).function(FUNCTION).environment
    assert [defaults[_upper_snake(name)] for name in RECONCILIATION] == ["3600", "300", "21600", "10"]
    assert defaults["EVENT_MEMORY_TABLE"] == "EventMemoryTable-physical"
    assert Reconciling.from_env(Env(defaults)).memory_seconds == 2 * (3600 + 300)

    policies = Stack().doc["Resources"][FUNCTION]["Properties"]["Policies"]
    (memory,) = [
        statement
        for policy in policies
        for statement in policy.get("Statement", [])
        if statement.get("Resource") == {"Fn::GetAtt": ["EventMemoryTable", "Arn"]}
    ]
    # Its chunks read and written, only under Diadoc feed ids; nothing else of the table.
    assert sorted(memory["Action"]) == ["dynamodb:PutItem", "dynamodb:Query"]
    assert memory["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["diadoc:*"]}}
    table = Stack().doc["Resources"]["EventMemoryTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires", "Enabled": True}


def test_the_poller_is_told_the_deployments_defaults_and_no_boxes():
    environment = offline({}).function(FUNCTION).environment
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
    stack = offline({})
    transforms = stack.doc["Transform"] if isinstance(stack.doc["Transform"], list) else [stack.doc["Transform"]]
    assert transforms == ["AWS::Serverless-2016-10-31"]
    assert not [name for name in stack.doc["Parameters"] if "Box" in name], "boxes are registered, not deployed"
    assert "language_extensions" not in (ROOT / "samconfig.toml").read_text()

    # Whatever the parameters, the same resources: nothing is made per box.
    small = sam_transform(offline({}))["Resources"]
    busy = {"DiadocMaxInFlight": "8", "DiadocMaxRequestsPerSecond": "100", "DiadocPollSchedule": "rate(5 minutes)"}
    assert set(sam_transform(offline(busy))["Resources"]) == set(small)
    functions = sorted(lid for lid, r in small.items() if r["Type"] == "AWS::Lambda::Function" and "Diadoc" in lid)
    assert functions == ["DiadocBoxesApiFunction", FUNCTION], "one poller and the boxes' admin routes, none per box"
