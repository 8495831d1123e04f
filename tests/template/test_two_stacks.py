"""Two stacks of the relay in one account and Region (staging beside production) deploy side by side:
no resource carries a name fixed by the template, so none of one stack's names is taken by the other."""

from __future__ import annotations

import json
from typing import Any

from tests.template.sam import offline, sam_transform

#: The name properties of the resource types a name collision would fail to create in one account
#: and Region. (A layer's name is shared on purpose: stacks add versions to it, never collide.)
NAMES = {
    "AWS::Scheduler::Schedule": "Name",
    "AWS::Scheduler::ScheduleGroup": "Name",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::ApiGateway::RestApi": "Name",
    "AWS::CloudWatch::Dashboard": "DashboardName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::DynamoDB::Table": "TableName",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::Role": "RoleName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::CloudWatch::Alarm": "AlarmName",
}
#: Scheduler's limit on a schedule's name.
SCHEDULE_NAME_MAX = 64


def _transformed(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    return sam_transform(offline(parameters or {"FifoTopic": "true"}))


def test_every_schedule_is_named_by_cloudformation_from_the_stack_name_within_schedulers_limit():
    resources = _transformed()["Resources"]
    schedules = {lid: r["Properties"] for lid, r in resources.items() if r["Type"] == "AWS::Scheduler::Schedule"}
    assert set(schedules) == {"ExternPollerFunctionPoll", "DiadocPollerFunctionPoll"}
    for logical_id, properties in schedules.items():
        # Without a Name, CloudFormation names the schedule <stack name>-<logical id>-<random suffix>,
        # cut to the 64 characters Scheduler allows: unique per stack, and never too long. SAM's own
        # default (the logical id) is the same in every stack, so a second stack failed to deploy.
        assert "Name" not in properties, f"{logical_id} has the fixed name {properties['Name']!r}"
        assert len(logical_id) < SCHEDULE_NAME_MAX
        assert "GroupName" not in properties, "the default group, shared by every stack: names must differ"


def test_every_name_a_collision_would_fail_on_is_the_stacks_own():
    for parameters in ({"FifoTopic": "true"}, {"FifoTopic": "false"}):
        for logical_id, resource in _transformed(parameters)["Resources"].items():
            name = resource.get("Properties", {}).get(NAMES.get(resource["Type"], ""))
            if name is None or name == {"Ref": "AWS::NoValue"}:
                continue
            text = json.dumps(name)
            assert "${AWS::StackName}" in text or "AWS::StackName" in text, (
                f"{logical_id} ({resource['Type']}) is named {text}: a second stack in the Region cannot take it"
            )
