"""The admin API's part of template.yaml: every route IAM-authenticated once SAM has transformed it,
and each function allowed only what its routes need."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest

from kontur_relay.aws import box_spellings
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.aws.cursors import DynamoCursorStore
from local_stack.template import Stack
from tests.template.sam import sam_transform

FUNCTIONS = ("FeedsApiFunction", "PublishersApiFunction", "DiadocBoxesApiFunction")
EXTERN_SECRET = {"Fn::If": ["CreateExternSecret", {"Ref": "ExternCredentials"}, {"Ref": "ExternCredentialsSecretArn"}]}
DIADOC_SECRET = {"Fn::If": ["CreateDiadocSecret", {"Ref": "DiadocCredentials"}, {"Ref": "DiadocCredentialsSecretArn"}]}
#: The stack's own cursor table, or the one ExistingCursorsTable adopts (tests/template/test_deployment.py).
CURSORS_TABLE_ARN = {
    "Fn::If": [
        "CreateCursorsTable",
        {"Fn::GetAtt": ["CursorsTable", "Arn"]},
        {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${ExistingCursorsTable}"},
    ]
}
OPS = "arn:aws:iam::123456789012:user/ops"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return Stack().doc


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    """template.yaml as SAM deploys it: the API's definition with each method's authorizer."""
    return sam_transform(Stack())


def test_every_route_of_every_rest_api_is_iam_authenticated(transformed):
    apis = {k: v for k, v in transformed["Resources"].items() if v["Type"] == "AWS::ApiGateway::RestApi"}
    assert set(apis) == {"AdminApi"}, "no implicit API: every Api event names the admin API"
    body = apis["AdminApi"]["Properties"]["Body"]
    operations = [(path, method, op) for path, item in body["paths"].items() for method, op in item.items()]
    assert len(operations) == 12
    for path, method, operation in operations:
        assert operation.get("security") == [{"AWS_IAM": []}], f"{method.upper()} {path} is not IAM-authenticated"
    assert body["securityDefinitions"]["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"


def test_the_admin_api_defaults_to_iam_and_no_event_opts_out(template):
    resources = template["Resources"]
    assert resources["AdminApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    for logical_id, resource in resources.items():
        for name, event in resource.get("Properties", {}).get("Events", {}).items():
            if event["Type"] == "Api":
                assert logical_id in FUNCTIONS
                assert event["Properties"]["RestApiId"] == {"Ref": "AdminApi"}, name
                assert "Auth" not in event["Properties"], f"{name} must not override the API's IAM authorizer"


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def _actions(statement: dict[str, Any]) -> set[str]:
    action = statement["Action"]
    return {action} if isinstance(action, str) else set(action)


def test_the_feeds_function_reads_the_cursor_table_and_only_sets_cursors(transformed):
    statements = _statements(transformed["Resources"]["FeedsApiFunctionRole"])

    actions = set().union(*(_actions(s) for s in statements))

    assert actions == {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"}
    update = next(s for s in statements if "dynamodb:UpdateItem" in _actions(s))
    assert update["Resource"] == CURSORS_TABLE_ARN
    assert update["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    for statement in statements:
        assert "CursorsTable" in json.dumps(statement["Resource"])


#: What a function that renews a rotating token holds on its feed kind's secret: reading it in one
#: statement, writing the rotated refresh token back in another.
READ = {"secretsmanager:GetSecretValue"}
WRITE_BACK = {"secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"}
SHARED_TOKEN = {"dynamodb:GetItem", "dynamodb:UpdateItem"}


def _by_sid(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {statement["Sid"]: statement for statement in _statements(role)}


def test_the_publishers_function_renews_the_extern_token_and_touches_nothing_else(transformed, template):
    statements = _by_sid(transformed["Resources"]["PublishersApiFunctionRole"])

    assert set(statements) == {"ReadExternCredentials", "WriteBackExternRefreshToken", "SharedExternTokens"}
    assert _actions(statements["ReadExternCredentials"]) == READ
    assert _actions(statements["WriteBackExternRefreshToken"]) == WRITE_BACK
    for sid in ("ReadExternCredentials", "WriteBackExternRefreshToken"):
        assert statements[sid]["Resource"] == EXTERN_SECRET
    shared = statements["SharedExternTokens"]
    assert _actions(shared) == SHARED_TOKEN
    assert shared["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["extern~credentials"]}}
    environment = template["Resources"]["PublishersApiFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["EXTERN_CREDENTIALS_SECRET"] == EXTERN_SECRET


def test_the_diadoc_boxes_function_keeps_the_registry_and_can_renew_a_rotating_diadoc_token(transformed, template):
    """POST /diadoc/boxes/discover renews a rotating Diadoc token, often first of all (before any box or
    poller run exists): it writes the rotated refresh token back as the poller does."""
    statements = _by_sid(transformed["Resources"]["DiadocBoxesApiFunctionRole"])

    assert set(statements) == {
        "BoxRegistry",
        "ReadDiadocCredentials",
        "WriteBackDiadocRefreshToken",
        "SharedDiadocTokens",
    }
    registry = statements["BoxRegistry"]
    assert _actions(registry) == {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Scan", "dynamodb:UpdateItem"}
    assert registry["Resource"] == CURSORS_TABLE_ARN
    assert registry["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    assert registry["Condition"]["ForAllValues:StringLike"] == {"dynamodb:LeadingKeys": ["diadoc:*"]}
    assert _actions(statements["ReadDiadocCredentials"]) == READ
    assert _actions(statements["WriteBackDiadocRefreshToken"]) == WRITE_BACK
    for sid in ("ReadDiadocCredentials", "WriteBackDiadocRefreshToken"):
        assert statements[sid]["Resource"] == DIADOC_SECRET
    assert _actions(statements["SharedDiadocTokens"]) == SHARED_TOKEN
    properties = template["Resources"]["DiadocBoxesApiFunction"]["Properties"]
    assert properties["Environment"]["Variables"]["DIADOC_CREDENTIALS_SECRET"] == DIADOC_SECRET
    assert (properties["Timeout"], properties["MemorySize"]) == (28, 256)


def test_the_api_url_is_an_output(template):
    assert "${AdminApi}.execute-api" in template["Outputs"]["AdminApiUrl"]["Value"]["Fn::Sub"]


def _attributes(params: dict[str, Any]) -> set[str]:
    """The top-level attributes an UpdateItem names: IAM's dynamodb:Attributes for the request."""
    names = dict(params.get("ExpressionAttributeNames", {}))
    found = set(params["Key"])
    for expression in (params.get("UpdateExpression", ""), params.get("ConditionExpression", "")):
        for token in re.findall(r"[#:]?[A-Za-z_][A-Za-z0-9_]*", expression):
            if token.startswith("#"):
                found.add(names[token])
            elif not token.startswith(":") and token not in {
                "SET",
                "REMOVE",
                "ADD",
                "DELETE",
                "AND",
                "OR",
                "NOT",
                "attribute_exists",
                "attribute_not_exists",
                "if_not_exists",
            }:
                found.add(token)
    return found


def test_the_update_condition_lists_every_attribute_a_cursor_change_writes(stack: Stack, template):
    allowed = _allowed_attributes(template, "FeedsApiFunction")
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    cursors = DynamoCursorStore(table)
    sent = _sent_updates(table)
    cursors.advance(cursors.load("extern"), "1_a", relayed=1)
    cursors.record_failure("extern", "stopped", stop=True)
    sent.clear()

    cursors.set_cursor("extern", "0_0", expected_version=1, by="arn:aws:iam::123456789012:user/ops")
    cursors.set_cursor("extern", None, expected_version=2, by="arn:aws:iam::123456789012:user/ops")
    cursors.set_cursor("diadoc:new", "k", expected_version=0, by="arn:aws:iam::123456789012:user/ops")

    assert len(sent) == 3
    for params in sent:
        assert _attributes(params) <= allowed, _attributes(params) - allowed


def _allowed_attributes(template: dict[str, Any], function: str) -> set[str]:
    """The dynamodb:Attributes condition of the function's statement that allows UpdateItem."""
    statements = [s for p in template["Resources"][function]["Properties"]["Policies"] for s in p.get("Statement", [])]
    update = next(s for s in statements if "dynamodb:UpdateItem" in _actions(s))
    return set(update["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"])


def _sent_updates(table: Any) -> list[dict[str, Any]]:
    """Every UpdateItem the table's client sends from now on, as its parameters (a transaction's
    updates too: IAM authorises each as an UpdateItem)."""
    sent: list[dict[str, Any]] = []
    events = table.meta.client.meta.events
    events.register("provide-client-params.dynamodb.UpdateItem", lambda params, **_: sent.append(dict(params)))
    events.register(
        "provide-client-params.dynamodb.TransactWriteItems",
        lambda params, **_: sent.extend(dict(item["Update"]) for item in params["TransactItems"]),
    )
    return sent


def test_the_update_condition_lists_exactly_what_the_box_registry_writes(stack: Stack, template):
    allowed = _allowed_attributes(template, "DiadocBoxesApiFunction")
    table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])
    registry, cursors = DynamoBoxRegistry(table), DynamoCursorStore(table)
    feed = "diadoc:a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5d@diadoc.ru"
    settings = {"start": "oldest", "limit": 500}
    sent = _sent_updates(table)

    registry.register(feed, settings, "", by=OPS, expected_version=0, restart=False, first_poll_at=1.0)
    registry.register(feed, {**settings, "limit": 10}, "", by=OPS, expected_version=0, restart=False, first_poll_at=1.0)
    cursors.advance(cursors.load(feed), "AAA=", relayed=1)
    registry.register(feed, {**settings, "orderBy": "Descending"}, "orderBy=Descending", by=OPS, expected_version=1,
                      restart=True, first_poll_at=2.0)  # fmt: skip
    assert registry.unregister(feed)
    del sent[2]  # the poller's cursor write
    # A box registered under both spellings (before one box was one feed), merged going on from the other cursor.
    twin = "diadoc:a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
    registry.register(feed, settings, "", by=OPS, expected_version=2, restart=False, first_poll_at=1.0)
    registry.register(twin, settings, "", by=OPS, expected_version=0, restart=False, first_poll_at=1.0)
    kept, stopped = registry.get(feed), registry.get(twin)
    assert kept is not None
    assert stopped is not None
    box_spellings.merge(registry, kept, stopped, position="AAA=", move=True, audit={"by": OPS}, by=OPS)

    assert len(sent) == 8
    written = set().union(*(_attributes(params) for params in sent))
    assert written == allowed, (written - allowed, allowed - written)
