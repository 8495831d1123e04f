"""template.yaml as CloudFormation gets it, through SAM's own translator, so that checks see the
roles, API definitions and schedules AWS will create, not the shorthand."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from typing import Any

from local_stack.services import LOCAL_CREDENTIALS
from local_stack.template import Stack


def resources(stack: Stack) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every resource, whatever its Condition."""
    yield from stack.doc["Resources"].items()


def sam_transform(stack: Stack) -> dict[str, Any]:
    """The IAM roles SAM writes from each function's policies (policy templates expanded), the API's
    OpenAPI body with each route's integration, the schedules' resources."""
    from samtranslator.translator.transform import transform  # noqa: PLC0415 - SAM CLI's own, slow to import

    doc = copy.deepcopy(stack.doc)
    doc["Resources"] = dict(resources(stack))
    transforms = doc["Transform"] if isinstance(doc["Transform"], list) else [doc["Transform"]]
    doc["Transform"] = next(t for t in transforms if t.startswith("AWS::Serverless"))
    for resource in doc["Resources"].values():
        # The translator wants code in S3; where it is changes no policy.
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/code.zip"
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            resource["Properties"]["ContentUri"] = "s3://bucket/layer.zip"

    class NoManagedPolicyNames:
        def load(self) -> dict[str, str]:
            return {}

    previous = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"]
    try:
        parameters = {name: stack._parameter(name) for name in stack.parameters}
        return dict(transform(doc, parameters, NoManagedPolicyNames()))
    finally:
        if previous is None:
            del os.environ["AWS_DEFAULT_REGION"]
        else:
            os.environ["AWS_DEFAULT_REGION"] = previous


class _MadeUp(dict[Any, str]):
    def __missing__(self, key: Any) -> str:
        return f"{'-'.join(key) if isinstance(key, tuple) else key}-physical"


def offline(parameters: dict[str, str], doc: dict[str, Any] | None = None) -> Stack:
    """The template (or ``doc``, the template transformed) evaluated for a parameter set, with made-up
    names for what provisioning would create."""
    stack = Stack(parameters=dict(parameters), doc=doc or {})
    stack.physical = _MadeUp()
    stack.attributes = _MadeUp()
    return stack


def deployed(parameters: dict[str, str]) -> tuple[dict[str, Any], Stack]:
    """The template as SAM hands it to CloudFormation for ``parameters``, and an evaluator of it with
    made-up physical names (the cursor table's ARN an ARN, as grants build it for an adopted one)."""
    document = sam_transform(Stack(parameters=dict(parameters)))
    stack = offline(parameters, document)
    stack.attributes[("CursorsTable", "Arn")] = table_arn(stack.physical["CursorsTable"])
    return document, stack


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:us-east-1:123456789012:table/{name}"


def dependencies(document: dict[str, Any], stack: Stack, logical_id: str) -> set[str]:
    """Every resource ``logical_id`` waits for in ``document`` (transformed) as CloudFormation orders
    it for the stack's parameters: DependsOn, and each Ref, GetAtt and Sub of its properties and
    metadata, through the branch of each Fn::If its condition takes; and theirs in turn."""
    resources = document["Resources"]
    found: set[str] = set()
    waiting = [logical_id]
    while waiting:
        resource = resources[waiting.pop()]
        depends = resource.get("DependsOn", [])
        named = {depends} if isinstance(depends, str) else set(depends)
        named |= _named(stack, [resource.get("Properties", {}), resource.get("Metadata", {})])
        for name in (named & set(resources)) - found:
            found.add(name)
            waiting.append(name)
    return found


def _named(stack: Stack, value: Any) -> set[str]:  # noqa: PLR0911 - one branch per intrinsic
    """The logical ids and parameters a value refers to, through the Fn::If branches taken."""
    if isinstance(value, list):
        return set().union(*(_named(stack, item) for item in value))
    if not isinstance(value, dict):
        return set()
    if "Fn::If" in value:
        condition, yes, no = value["Fn::If"]
        return _named(stack, yes if stack.condition(condition) else no)
    if "Ref" in value:
        return {value["Ref"]}
    if "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return {target.split(".")[0] if isinstance(target, str) else target[0]}
    if "Fn::Sub" in value:
        text, variables = (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
        names = {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)} - set(variables)
        return names | _named(stack, variables)
    return _named(stack, list(value.values()))


def refusals(stack: Stack) -> list[str]:
    """Why CloudFormation would refuse the stack's parameters before creating anything: a value
    outside its parameter's constraints, or a combination one of the template's Rules forbids."""
    declared = stack.doc["Parameters"]
    found = [f"{name}: no such parameter" for name in stack.parameters if name not in declared]
    for name, spec in declared.items():
        value = stack.parameters[name]
        if "AllowedValues" in spec and value not in [str(allowed) for allowed in spec["AllowedValues"]]:
            found.append(f"{name}: {value!r} is not one of {spec['AllowedValues']}")
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], value):
            found.append(f"{name}: {value!r} does not match {spec['AllowedPattern']}")
        if spec["Type"] == "Number":
            number = float(value)
            if number < float(spec.get("MinValue", number)) or number > float(spec.get("MaxValue", number)):
                found.append(f"{name}: {value} is outside {spec.get('MinValue')}..{spec.get('MaxValue')}")
    for rule in stack.doc.get("Rules", {}).values():
        if _rule_value(stack, rule.get("RuleCondition", True)):
            found += [a["AssertDescription"] for a in rule["Assertions"] if not _rule_value(stack, a["Assert"])]
    return found


#: The functions CloudFormation allows in Rules that template.yaml uses, over evaluated arguments.
_RULE_FUNCTIONS: dict[str, Any] = {
    "Fn::Equals": lambda arguments: str(arguments[0]) == str(arguments[1]),
    "Fn::Not": lambda arguments: not arguments[0],
    "Fn::And": all,
    "Fn::Or": any,
    "Fn::Contains": lambda arguments: str(arguments[1]) in [str(item) for item in arguments[0]],
}


def _rule_value(stack: Stack, value: Any) -> Any:
    """A value of a rule: a parameter's, or a function's over its evaluated arguments."""
    if isinstance(value, list):
        return [_rule_value(stack, item) for item in value]
    if not isinstance(value, dict):
        return value
    ((function, argument),) = value.items()
    if function == "Ref":
        return stack.parameters[argument]
    return _RULE_FUNCTIONS[function](_rule_value(stack, argument))
