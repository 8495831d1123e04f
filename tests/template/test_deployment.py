"""A first deployment succeeds in a fresh account and Region, and a deployment survives its stack:
the admin API's access log only where API Gateway can write it, and only once it can; the cursor
table kept when the stack goes, and adopted by the next one.

Checked on the template as CloudFormation gets it (after SAM's transform), for the parameter sets a
user can choose."""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.template import Stack
from tests.template.sam import dependencies, offline, sam_transform

STAGE = "AdminApiProdStage"
#: What the template can be told about API Gateway's CloudWatch Logs role (one per account and Region).
NO_ROLE: dict[str, str] = {}
ROLE_CREATED = {"CreateApiGatewayLogsRole": "true"}
ROLE_PRESENT = {"AccountHasApiGatewayLogsRole": "true"}


def deployed(parameters: dict[str, str]) -> tuple[dict[str, Any], Stack]:
    """The transformed template, and an evaluator of its conditions for ``parameters``."""
    document = sam_transform(Stack(parameters=dict(parameters)))
    return document, offline(parameters, document)


def created(document: dict[str, Any], stack: Stack) -> dict[str, dict[str, Any]]:
    """The resources CloudFormation creates for the stack's parameters."""
    return {
        logical_id: resource
        for logical_id, resource in document["Resources"].items()
        if "Condition" not in resource or stack.condition(resource["Condition"])
    }


# -- the admin API's access log and API Gateway's account setting ---------------------------------------


def test_with_the_defaults_the_stage_asks_for_no_access_log_so_a_fresh_account_deploys():
    document, stack = deployed(NO_ROLE)

    stage = created(document, stack)[STAGE]["Properties"]
    assert stack.resolve(stage.get("AccessLogSetting")) is None, (
        "API Gateway refuses an access log until the account names a CloudWatch Logs role"
    )
    assert "ApiGatewayAccount" not in created(document, stack)


def test_a_stack_that_sets_the_account_role_logs_and_its_stage_waits_for_the_setting():
    document, stack = deployed(ROLE_CREATED)

    resources = created(document, stack)
    assert {"ApiGatewayLogsRole", "ApiGatewayAccount"} <= set(resources)
    assert stack.resolve(resources[STAGE]["Properties"]["AccessLogSetting"])["DestinationArn"]
    assert "ApiGatewayAccount" in dependencies(document, stack, STAGE), (
        "the stage is created before the account setting it needs"
    )


def test_an_account_that_has_the_role_already_gets_the_access_log_and_keeps_its_setting():
    document, stack = deployed(ROLE_PRESENT)

    resources = created(document, stack)
    assert stack.resolve(resources[STAGE]["Properties"]["AccessLogSetting"])["DestinationArn"]
    assert not {"ApiGatewayLogsRole", "ApiGatewayAccount"} & set(resources), "the account's setting is not ours"


@pytest.mark.parametrize("parameters", [NO_ROLE, ROLE_PRESENT], ids=["no role", "role present"])
def test_the_stage_depends_on_no_resource_that_is_not_created(parameters: dict[str, str]):
    document, stack = deployed(parameters)

    missing = dependencies(document, stack, STAGE) - set(created(document, stack))

    assert not missing, f"the stage waits for resources this deployment does not create: {missing}"
