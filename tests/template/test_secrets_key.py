"""Credentials secrets under a customer-managed KMS key: with SecretsKmsKeyArn, each function that
reads or writes a secret may use that key, and only that key, only through Secrets Manager; the
secrets the stack creates are encrypted with it. Without it, no function holds any KMS permission."""

from __future__ import annotations

from typing import Any

from tests.template.sam import deployed, offline

KEY = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
VIA_SECRETS_MANAGER = {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}


def grants(parameters: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each function's statements, as deployed for ``parameters``: its role's and any policy attached to it."""
    document, stack = deployed(parameters)
    roles = {
        resource["Properties"]["Role"]["Fn::GetAtt"][0]: logical_id
        for logical_id, resource in document["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    found: dict[str, list[dict[str, Any]]] = {function: [] for function in roles.values()}
    for logical_id, resource in document["Resources"].items():
        if "Condition" in resource and not stack.condition(resource["Condition"]):
            continue
        props = stack.resolve(resource.get("Properties", {}))
        if resource["Type"] == "AWS::IAM::Role" and logical_id in roles:
            for policy in props.get("Policies", []):
                found[roles[logical_id]] += _listed(policy["PolicyDocument"]["Statement"])
        elif resource["Type"] == "AWS::IAM::Policy":
            attached = resource["Properties"]["Roles"]
            for role in (ref["Ref"] for ref in attached):
                found[roles[role]] += _listed(props["PolicyDocument"]["Statement"])
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _actions(statement: dict[str, Any]) -> set[str]:
    return set(_listed(statement["Action"]))


def test_without_a_key_no_function_may_use_kms():
    for function, statements in grants({}).items():
        kms = [s for s in statements if any(action.startswith("kms:") for action in _actions(s))]
        assert not kms, f"{function} holds KMS permissions no secret needs: {kms}"


def test_with_a_key_each_function_using_a_secret_may_use_that_key_through_secrets_manager_only():
    found = grants({"SecretsKmsKeyArn": KEY})

    users = {
        function
        for function, statements in found.items()
        if any(action.startswith("secretsmanager:") for s in statements for action in _actions(s))
    }
    assert users == {"PublishersApiFunction", "DiadocBoxesApiFunction", "ExternPollerFunction", "DiadocPollerFunction"}
    for function, statements in found.items():
        kms = [s for s in statements if any(action.startswith("kms:") for action in _actions(s))]
        if function not in users:
            assert not kms, function
            continue
        secrets = {action for s in statements for action in _actions(s) if action.startswith("secretsmanager:")}
        needed = {"kms:Decrypt"} | ({"kms:GenerateDataKey"} if "secretsmanager:PutSecretValue" in secrets else set())
        assert kms, f"{function} reads a secret it cannot decrypt"
        for statement in kms:
            assert statement["Effect"] == "Allow"
            assert statement["Resource"] == KEY, f"{function} may use another key: {statement['Resource']}"
            assert statement["Condition"] == VIA_SECRETS_MANAGER, function
        assert set().union(*(_actions(s) for s in kms)) == needed, function


def test_the_secrets_the_stack_creates_are_encrypted_with_the_key():
    for parameters, expected in (({}, None), ({"SecretsKmsKeyArn": KEY}, KEY)):
        stack = offline(parameters)
        for logical_id, secret in stack.resources("AWS::SecretsManager::Secret"):
            assert stack.resolve(secret["Properties"]).get("KmsKeyId") == expected, (logical_id, parameters)
