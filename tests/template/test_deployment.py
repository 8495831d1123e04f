"""A first deployment succeeds in a fresh account and Region, and a deployment survives its stack:
the admin API's access log only where API Gateway can write it, and only once it can; the cursor
table kept when the stack goes, and adopted by the next one.

Checked on the template as CloudFormation gets it (after SAM's transform), for the parameter sets a
user can choose."""

from __future__ import annotations

from typing import Any

import pytest

from local_stack.template import Stack
from tests.template.sam import dependencies, deployed, offline, table_arn

STAGE = "AdminApiProdStage"
#: What the template can be told about API Gateway's CloudWatch Logs role (one per account and Region).
NO_ROLE: dict[str, str] = {}
ROLE_CREATED = {"CreateApiGatewayLogsRole": "true"}
ROLE_PRESENT = {"AccountHasApiGatewayLogsRole": "true"}


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


# -- the cursor table: kept, and adopted -------------------------------------------------------------

ADOPTED = {"ExistingCursorsTable": "kontur-feed-relay-CursorsTable-1A2B3C4D5E6F"}


def dynamodb_grants(document: dict[str, Any], stack: Stack) -> list[tuple[str, Any]]:
    """(role, resource) of every statement of the transformed template that grants a DynamoDB action on
    the cursor table. The Diadoc boxes' event memory is a table of its own, made by every stack: it holds
    only what a box published lately, so a new stack starting it empty republishes nothing it must not."""
    grants = []
    for logical_id, resource in created(document, stack).items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            statements = stack.resolve(policy["PolicyDocument"])["Statement"]
            for statement in statements if isinstance(statements, list) else [statements]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if any(action.startswith("dynamodb:") for action in actions):
                    resources = statement["Resource"]
                    for granted in resources if isinstance(resources, list) else [resources]:
                        if "EventMemoryTable" in str(granted):
                            continue
                        # A table's indexes are the table's (SAM's DynamoDBReadPolicy grants them).
                        grants.append((logical_id, granted.removesuffix("/index/*")))
    return grants


def test_the_cursor_table_outlives_its_stack_whether_deleted_or_replaced():
    document, stack = deployed({})

    table = created(document, stack)["CursorsTable"]

    # Its items are every feed's cursor and every registered Diadoc box: lost, every feed replays.
    assert (table.get("DeletionPolicy"), table.get("UpdateReplacePolicy")) == ("Retain", "Retain")


def test_a_stack_given_an_existing_table_creates_none_and_every_function_and_grant_uses_that_one():
    document, stack = deployed(ADOPTED)
    name = ADOPTED["ExistingCursorsTable"]

    assert "CursorsTable" not in created(document, stack)
    for function in offline(ADOPTED).functions():
        assert function.environment["CURSORS_TABLE"] == name, function.logical_id
    grants = dynamodb_grants(document, stack)
    assert grants
    for role, resource in grants:
        assert resource == table_arn(name), role
    assert offline(ADOPTED).outputs()["CursorsTableName"] == name


def test_a_stack_of_its_own_table_grants_on_that_table_only():
    document, stack = deployed({})

    assert {resource for _, resource in dynamodb_grants(document, stack)} == {table_arn("CursorsTable-physical")}
    for function in offline({}).functions():
        assert function.environment["CURSORS_TABLE"] == "CursorsTable-physical", function.logical_id


def test_every_reference_to_the_cursor_table_chooses_between_the_stacks_and_the_adopted_one():
    """One choice (the CreateCursorsTable condition), so that no function or grant is left on a
    table an adopting stack does not have."""
    references = list(_table_references(Stack().doc, chosen=False))

    assert references, "template.yaml names no cursor table at all"
    bare = [where for where, chosen in references if not chosen]
    assert not bare, f"these name the stack's own table without the CreateCursorsTable choice: {bare}"


def _table_references(value: Any, *, chosen: bool, where: str = "") -> Any:
    """(path, inside the choice) for each Ref or GetAtt of CursorsTable in ``value``."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _table_references(item, chosen=chosen, where=f"{where}[{index}]")
    elif isinstance(value, dict):
        attribute = value.get("Fn::GetAtt", "")
        if value.get("Ref") == "CursorsTable" or (attribute.split(".") if isinstance(attribute, str) else attribute)[
            :1
        ] == ["CursorsTable"]:
            yield where, chosen
            return
        choice = value.get("Fn::If")
        if choice and choice[0] == "CreateCursorsTable" and "ExistingCursorsTable" in str(choice[2]):
            yield from _table_references(choice[1], chosen=True, where=where)
            return
        for key, item in value.items():
            yield from _table_references(item, chosen=chosen, where=f"{where}.{key}")
