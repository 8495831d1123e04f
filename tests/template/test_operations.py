"""Operating the relay, as template.yaml sets it up: alarms on the metric contract, a dashboard, logs
that expire, tracing and feeds that can be switched off, and an admin API whose callers need nothing
beyond execute-api:Invoke."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from local_stack.template import ROOT, Stack
from tests import metric_contract as contract
from tests.template.sam import offline, resources, sam_transform

BOXES = {"DiadocBoxIds": "2f8d0000-0000-0000-0000-000000000001@diadoc.ru"}
#: Where operators read what to do: the runbook (alarms, metrics) and the deployment's page (its cost).
OPERATING = (ROOT / "docs" / "operating.md").read_text()
DEPLOY = (ROOT / "docs" / "deploy.md").read_text()


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(parameters=dict(BOXES))


@pytest.fixture(scope="module")
def transformed(stack: Stack) -> dict[str, Any]:
    return sam_transform(stack)


def of_type(document: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in document["Resources"].items() if r["Type"] == resource_type}


def alarms(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every metric alarm whose Condition holds for the stack's parameters."""
    return dict(stack.resources("AWS::CloudWatch::Alarm"))


def composite_alarms(stack: Stack) -> dict[str, dict[str, Any]]:
    return dict(stack.resources("AWS::CloudWatch::CompositeAlarm"))


def globals_environment(stack: Stack) -> dict[str, Any]:
    return dict(stack.doc["Globals"]["Function"]["Environment"]["Variables"])


# -- the admin API ----------------------------------------------------------------------------------


def test_api_gateway_invokes_every_route_through_the_function_policy_not_the_callers_credentials(transformed):
    operations = [
        (path, method, operation)
        for api in of_type(transformed, "AWS::ApiGateway::RestApi").values()
        for path, item in api["Properties"]["Body"]["paths"].items()
        for method, operation in item.items()
    ]
    assert operations
    for path, method, operation in operations:
        integration = operation["x-amazon-apigateway-integration"]
        assert "credentials" not in integration, f"{method.upper()} {path} invokes with {integration['credentials']}"
    permitted = {
        p["Properties"]["FunctionName"]["Ref"]
        for p in of_type(transformed, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    }
    invoked = {
        found
        for *_, operation in operations
        for found in re.findall(r"\$\{(\w+)\.Arn\}", json.dumps(operation["x-amazon-apigateway-integration"]))
    }
    assert invoked
    assert invoked <= permitted, f"API Gateway may not invoke {invoked - permitted}"


def test_the_api_logs_each_request_as_json_to_a_log_group_that_expires(stack: Stack):
    # Where the account lets API Gateway log at all (tests/template/test_deployment.py).
    condition, logged, _ = stack.doc["Resources"]["AdminApi"]["Properties"]["AccessLogSetting"]["Fn::If"]
    assert condition == "AccessLogOn"
    target = logged["DestinationArn"]["Fn::GetAtt"][0]
    assert stack.doc["Resources"][target]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    fields = json.loads(logged["Format"])
    assert {"requestId", "caller", "status", "method", "path"} <= set(fields)


# -- alarms and the metric contract -----------------------------------------------------------------


def test_every_alarm_watches_a_metric_of_the_contract_with_its_exact_dimensions(stack: Stack):
    environment = globals_environment(stack)
    assert (environment["POWERTOOLS_METRICS_NAMESPACE"], environment["POWERTOOLS_SERVICE_NAME"]) == (
        contract.NAMESPACE,
        contract.SERVICE,
    )
    watched = set()
    for logical_id, resource in resources(stack):
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        if props["Namespace"] != contract.NAMESPACE:
            # AWS's own metrics: the failed-runs queue and the API's stage.
            assert (props["Namespace"], props["MetricName"]) in {
                ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
                ("AWS/ApiGateway", "5XXError"),
            }, logical_id
            continue
        metric = props["MetricName"]
        dimensions = {d["Name"]: d["Value"] for d in props["Dimensions"]}
        assert contract.kinds(metric), f"{logical_id} watches {metric}, which the relay does not emit"
        assert set(dimensions) == contract.dimensions(metric), (
            f"{logical_id}: {metric} is emitted with other dimensions"
        )
        assert dimensions["service"] == contract.SERVICE
        assert dimensions["kind"] in contract.kinds(metric), logical_id
        watched.add((metric, dimensions["kind"]))
    for kind in contract.KINDS:
        assert {
            (m, kind)
            for m in ("RunSucceeded", "NotConfigured", "RunFailed", "StoppedFeeds", "Backlog", "KonturThrottled")
        } <= watched


def test_a_poller_that_is_never_invoked_trips_its_stale_alarm_which_pages_unless_the_kind_is_unconfigured():
    # How the three play out over time: tests/template/test_alarm_timeline.py.
    stack = offline(BOXES)
    for kind in ("Extern", "Diadoc"):
        no_success = alarms(stack)[f"{kind}NoSuccessAlarm"]["Properties"]
        assert no_success["MetricName"] == "RunSucceeded"
        assert no_success["TreatMissingData"] == "breaching"
        assert no_success["ComparisonOperator"] == "LessThanThreshold"
        assert no_success["EvaluationPeriods"] == no_success["DatapointsToAlarm"] == {"Ref": "StaleAfterMinutes"}
        assert no_success["Period"] == 60
        rule = stack.resolve(composite_alarms(stack)[f"{kind}StaleFeedAlarm"]["Properties"]["AlarmRule"])
        assert rule == f'ALARM("{kind}NoSuccessAlarm-physical") AND NOT ALARM("{kind}NotConfiguredAlarm-physical")'


def test_every_alarm_notifies_the_stacks_topic_or_the_given_one_and_is_documented():
    stack = offline(BOXES)
    topic = {"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}
    found = {**alarms(stack), **composite_alarms(stack)}
    notify = {lid: a["Properties"].get("AlarmActions") for lid, a in found.items()}
    silent = {lid for lid, actions in notify.items() if not actions}
    # Each kind's stale page reads its NoSuccess alarm, which notifies nobody itself.
    assert silent == {f"{kind}NoSuccessAlarm" for kind in ("Extern", "Diadoc")}
    for logical_id, alarm in found.items():
        assert logical_id in silent or notify[logical_id] == [topic], logical_id
        # A notice is said once, when it starts: its end is no news.
        assert ("NotConfigured" in logical_id) is (logical_id not in silent and "OKActions" not in alarm["Properties"])
        assert f"`{logical_id}`" in OPERATING, f"docs/operating.md does not say what to do when {logical_id} fires"
    assert len(found) == 18
    email = Stack(parameters={**BOXES, "AlarmEmail": "ops@example.com", "AlarmTopicArn": "arn:aws:sns:x:1:t"})
    assert not email.condition("CreateAlarmTopic")
    assert [lid for lid, _ in email.resources("AWS::SNS::Subscription")] == ["AlarmEmailSubscription"]


def test_the_dashboard_shows_each_kind_from_the_contract_and_the_real_timeout(stack: Stack):
    body = json.loads(stack.resolve(stack.doc["Resources"]["Dashboard"]["Properties"]["DashboardBody"]))
    shown: dict[str, set[str]] = {kind: set() for kind in contract.KINDS}
    for widget in body["widgets"]:
        for line in widget["properties"]["metrics"]:
            namespace, metric, *pairs = [item for item in line if isinstance(item, str)]
            dimensions = dict(zip(pairs[::2], pairs[1::2], strict=True))
            assert namespace == contract.NAMESPACE
            assert set(dimensions) == contract.dimensions(metric), f"{metric}: {dimensions}"
            assert dimensions["service"] == contract.SERVICE
            shown[dimensions["kind"]].add(metric)
        for line in widget["properties"].get("annotations", {}).get("horizontal", []):
            assert line["value"] == stack.doc["Globals"]["Function"]["Timeout"] * 1000
    wanted = {"EventsPublished", "RunSucceeded", "RunFailed", "Backlog", "LagSeconds", "KonturRequests"}
    for kind in contract.KINDS:
        assert wanted | {"KonturThrottled", "RunDuration"} <= shown[kind], kind


def test_the_readme_states_the_metric_contract():
    section = OPERATING.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", section, flags=re.MULTILINE))
    assert rows == {**contract.METRICS, **contract.DIADOC_METRICS}
    for text in (contract.NAMESPACE, contract.SERVICE, "`error`"):
        assert text in section


# -- logs and tracing -------------------------------------------------------------------------------


def test_every_function_logs_to_a_declared_group_with_retention(transformed):
    groups = of_type(transformed, "AWS::Logs::LogGroup")
    for logical_id, function in of_type(transformed, "AWS::Lambda::Function").items():
        declared = function["Properties"].get("LoggingConfig", {}).get("LogGroup")
        if declared is None:  # Lambda's default group, which only a declared resource gives an expiry
            named = [
                g for g in groups.values() if json.dumps(g["Properties"].get("LogGroupName")).find(logical_id) >= 0
            ]
            assert named, f"{logical_id} logs to a group nobody declared: kept forever"
            group = named[0]
        else:
            group = groups[declared["Ref"]]
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, logical_id


@pytest.mark.parametrize("tracing", ["true", "false"])
def test_tracing_follows_its_parameter_everywhere(tracing):
    stack = offline({"Tracing": tracing})
    on = tracing == "true"
    assert stack.resolve(stack.doc["Globals"]["Function"]["Tracing"]) == ("Active" if on else "PassThrough")
    assert stack.resolve(stack.doc["Resources"]["AdminApi"]["Properties"]["TracingEnabled"]) is on
    for function in stack.functions():
        assert function.environment["POWERTOOLS_TRACE_DISABLED"] == str(not on).lower(), function.logical_id


# -- feeds switched off -----------------------------------------------------------------------------


def _alarm_kinds(stack: Stack) -> set[str]:
    kinds = {d["Value"] for a in alarms(stack).values() for d in a["Properties"]["Dimensions"] if d["Name"] == "kind"}
    return kinds | {lid.removesuffix("StaleFeedAlarm").lower() for lid in composite_alarms(stack)}


def test_a_switched_off_kind_has_no_schedule_and_no_alarms():
    everything = offline(BOXES)
    assert everything.function("ExternPollerFunction").schedules
    assert everything.function("DiadocPollerFunction").schedules
    assert _alarm_kinds(everything) == set(contract.KINDS)

    no_extern = offline({**BOXES, "ExternEnabled": "false"})
    assert no_extern.function("ExternPollerFunction").schedules == []
    assert no_extern.function("DiadocPollerFunction").schedules
    assert _alarm_kinds(no_extern) == {"diadoc"}

    no_diadoc = offline({**BOXES, "DiadocEnabled": "false"})
    assert no_diadoc.function("DiadocPollerFunction").schedules == []
    assert list(no_diadoc.resources("AWS::Scheduler::Schedule")) == []
    assert _alarm_kinds(no_diadoc) == {"extern"}


def test_a_switched_off_extern_schedule_is_disabled_in_what_sam_deploys():
    deployed = sam_transform(Stack(parameters={"ExternEnabled": "false"}))
    schedule = deployed["Resources"]["ExternPollerFunctionPoll"]
    assert schedule["Properties"]["State"] == {"Fn::If": ["ExternOn", "ENABLED", "DISABLED"]}


def test_other_stacks_can_import_the_events_topic(stack: Stack):
    export = stack.doc["Outputs"]["EventsTopicArn"]["Export"]["Name"]
    assert stack.resolve(export) == f"{stack.name}-EventsTopicArn"


def test_the_readme_costs_at_rest_the_alarms_dashboards_and_secrets_the_template_makes():
    stack = offline({})
    section = DEPLOY.split("## What it costs at rest", 1)[1].split("\n## ", 1)[0]
    rows = {cells[0]: cells[1] for cells in re.findall(r"^\| ([a-z ]+) \| ([^|]+) \|", section, flags=re.MULTILINE)}

    metric, composite = len(alarms(stack)), len(composite_alarms(stack))
    assert rows["alarms"].startswith(f"{metric} metric alarms, {composite} composite")
    assert rows["dashboard"].strip() == str(len(list(stack.resources("AWS::CloudWatch::Dashboard"))))
    assert rows["secrets"].startswith(f"{len(list(stack.resources('AWS::SecretsManager::Secret')))},")
