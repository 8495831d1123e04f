"""template.yaml, read and evaluated for the local stack, so that local resources come from the
same description as deployed ones, not from a second hand-kept copy.

Only what the template uses is evaluated: Ref, Fn::Sub, Fn::If, Fn::GetAtt, Fn::Join, Fn::Select,
Fn::Split, Fn::Equals, Fn::Not, Fn::And, Fn::Or and Condition. Resources are created in moto and
DynamoDB Local by ``provision``; functions, their environment and their schedules are read by the local scheduler.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import decode

from local_stack.constants import ACCOUNT, REGION
from local_stack.cron import average_period

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"

_NO_VALUE = object()
_RATE = re.compile(r"rate\((?P<amount>\d+) (?P<unit>minute|hour|day)s?\)")


@dataclass(frozen=True)
class Schedule:
    """A ScheduleV2 event of a function: its expression and the JSON it invokes the function with."""

    name: str
    expression: str
    input: dict[str, Any]

    @property
    def seconds(self) -> float:
        """The period of a ``rate(...)`` expression, or a ``cron(...)`` one's average period."""
        if self.expression.startswith("cron("):
            return average_period(self.expression)
        rate = _RATE.fullmatch(self.expression)
        if rate is None:
            raise ValueError(
                f"schedule {self.name} {self.expression!r}: expected rate(N minutes|hours|days) or cron(...)"
            )
        return int(rate["amount"]) * {"minute": 60, "hour": 3600, "day": 86400}[rate["unit"]]


@dataclass(frozen=True)
class Function:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    environment: dict[str, str]
    schedules: list[Schedule]
    memory_size: int = 128


@dataclass
class Stack:
    """The template evaluated for one stack name and parameter set."""

    name: str = "kontur-feed-relay"
    parameters: dict[str, str] = field(default_factory=dict)
    #: Ref values of created resources (table names, topic ARNs, secret ARNs, queue URLs).
    physical: dict[str, str] = field(default_factory=dict)
    #: Fn::GetAtt values of created resources.
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    doc: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.doc:
            decoded, problems = decode(str(TEMPLATE))
            if problems or decoded is None:
                raise ValueError(f"template.yaml does not parse: {problems}")
            self.doc = json.loads(json.dumps(decoded))  # plain dicts, without cfn-lint's node classes
        for name, spec in self.doc.get("Parameters", {}).items():
            self.parameters.setdefault(name, str(spec.get("Default", "")))

    # -- evaluation -------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        return bool(self._value(self.doc["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        result = self._value(value)
        return None if result is _NO_VALUE else result

    def _value(self, value: Any) -> Any:  # noqa: PLR0911, PLR0912 - one branch per intrinsic
        if isinstance(value, list):
            return [item for item in (self._value(v) for v in value) if item is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::If":
                name, yes, no = arg
                return self._value(yes if self.condition(name) else no)
            if key == "Fn::Equals":
                left, right = (self._value(a) for a in arg)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._value(arg[0])
            if key == "Fn::And":
                return all(self._value(a) for a in arg)
            if key == "Fn::Or":
                return any(self._value(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(i) for i in self._value(items))
            if key == "Fn::Split":
                sep, text = arg
                return str(self._value(text)).split(sep)
            if key == "Fn::Select":
                index, items = arg
                return self._value(items)[int(index)]
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.attributes[(logical, attribute)]
        return {k: v for k, v in ((k, self._value(v)) for k, v in value.items()) if v is not _NO_VALUE}

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::NoValue": _NO_VALUE,
            "AWS::StackName": self.name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self._parameter(name)
        return self.physical[name]

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self._value(arg[1]))
        out, rest = "", text
        while "${" in rest:
            before, _, after = rest.partition("${")
            name, _, rest = after.partition("}")
            if name in variables:
                out += before + str(variables[name])
            elif "." in name:
                logical, attribute = name.split(".", 1)
                out += before + str(self.attributes[(logical, attribute)])
            else:
                out += before + str(self._ref(name))
        return out + rest

    # -- reading ----------------------------------------------------------------------------------

    def _parameter(self, name: str) -> Any:
        """A parameter's value; a CommaDelimitedList is a list, as CloudFormation gives it to Ref."""
        value = self.parameters[name]
        if self.doc.get("Parameters", {}).get(name, {}).get("Type") == "CommaDelimitedList":
            return value.split(",")
        return value

    def resources(self, resource_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(logical id, raw definition) of each resource of a type whose Condition holds."""
        for logical_id, resource in self.doc["Resources"].items():
            if resource["Type"] != resource_type:
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            yield logical_id, resource

    def functions(self) -> list[Function]:
        globals_ = self.doc.get("Globals", {}).get("Function", {})
        result = []
        for logical_id, resource in self.resources("AWS::Serverless::Function"):
            props = resource["Properties"]
            environment = {
                **globals_.get("Environment", {}).get("Variables", {}),
                **props.get("Environment", {}).get("Variables", {}),
            }
            schedules = [
                Schedule(
                    name=name,
                    expression=str(self.resolve(event["Properties"]["ScheduleExpression"])),
                    input=json.loads(self.resolve(event["Properties"].get("Input", "{}"))),
                )
                for name, event in props.get("Events", {}).items()
                if event["Type"] in ("ScheduleV2", "Schedule") and self._enabled(event["Properties"])
            ] + self.scheduler_schedules(logical_id)
            result.append(
                Function(
                    logical_id=logical_id,
                    code_uri=ROOT / props["CodeUri"],
                    handler=props["Handler"],
                    timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
                    environment={k: str(v) for k, v in self.resolve(environment).items()},
                    schedules=schedules,
                    memory_size=int(self.resolve(props.get("MemorySize", globals_.get("MemorySize", 128)))),
                )
            )
        return result

    def scheduler_schedules(self, function_id: str) -> list[Schedule]:
        """The AWS::Scheduler::Schedule resources that invoke the function (none in template.yaml today)."""
        schedules = []
        for logical_id, resource in self.resources("AWS::Scheduler::Schedule"):
            props = resource.get("Properties", {})
            target = props.get("Target", {})
            if _target_function(target.get("Arn")) != function_id:
                continue
            if not self._enabled(props):
                continue
            schedules.append(
                Schedule(
                    name=logical_id,
                    expression=str(self.resolve(props["ScheduleExpression"])),
                    input=json.loads(self.resolve(target.get("Input", "{}"))),
                )
            )
        return schedules

    def _enabled(self, schedule: dict[str, Any]) -> bool:
        """A schedule's State (a feed switched off by its parameter has a DISABLED one)."""
        return str(self.resolve(schedule.get("State", "ENABLED"))) != "DISABLED"

    def sink(self) -> tuple[str, dict[str, str]]:
        """The sink the pollers deliver to (their SINK) and their environment, which names it (the
        topic, bus, queue or webhook); resolvable once the stack's resources exist."""
        for function in self.functions():
            if "SINK" in function.environment:
                return function.environment["SINK"], function.environment
        raise ValueError("no function of template.yaml has a SINK")

    def function(self, logical_id: str) -> Function:
        return next(f for f in self.functions() if f.logical_id == logical_id)

    def outputs(self) -> dict[str, str]:
        return {
            name: str(self.resolve(output["Value"]))
            for name, output in self.doc.get("Outputs", {}).items()
            if "Condition" not in output or self.condition(output["Condition"])
        }


def _target_function(arn: Any) -> str | None:
    """The logical id of the function a target's Arn refers to (GetAtt <Function>.Arn or Ref)."""
    if isinstance(arn, dict) and "Fn::GetAtt" in arn:
        target = arn["Fn::GetAtt"]
        logical, _, attribute = target.partition(".") if isinstance(target, str) else (target[0], ".", target[1])
        return logical if attribute == "Arn" else None
    if isinstance(arn, dict) and "Ref" in arn:
        return str(arn["Ref"])
    return None


def provision_tables(stack: Stack, dynamodb: Any) -> dict[str, str]:
    """Create the template's DynamoDB tables through ``dynamodb`` (a client); their names by logical id."""
    for logical_id, resource in stack.resources("AWS::DynamoDB::Table"):
        props = stack.resolve(resource["Properties"])
        name = props.get("TableName") or f"{stack.name}-{logical_id}"
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=props["AttributeDefinitions"],
            KeySchema=props["KeySchema"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name)
        stack.physical[logical_id] = name
    return {logical_id: stack.physical[logical_id] for logical_id, _ in stack.resources("AWS::DynamoDB::Table")}


def provision(stack: Stack, clients: Mapping[str, Any]) -> Stack:
    """Create the template's tables, topics, queues, buses, buckets and secrets through ``clients`` (by
    service name: ``dynamodb``, ``sns``, ``sqs``, ``events``, ``s3``, ``secretsmanager``) and record
    their names in ``stack``."""
    provision_tables(stack, clients["dynamodb"])
    for logical_id, resource in stack.resources("AWS::SQS::Queue"):
        props = stack.resolve(resource.get("Properties", {}))
        fifo = str(props.get("FifoQueue", "")).lower() == "true"
        name = props.get("QueueName") or f"{stack.name}-{logical_id}" + (".fifo" if fifo else "")
        attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        url = clients["sqs"].create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        stack.physical[logical_id] = url
        stack.attributes[(logical_id, "Arn")] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        stack.attributes[(logical_id, "QueueName")] = name
    for logical_id, resource in stack.resources("AWS::SNS::Topic"):
        props = stack.resolve(resource.get("Properties", {}))
        fifo = str(props.get("FifoTopic", "")).lower() == "true"
        name = props.get("TopicName") or f"{stack.name}-{logical_id}"
        attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        arn = clients["sns"].create_topic(Name=name, Attributes=attributes)["TopicArn"]
        stack.physical[logical_id] = arn
        stack.attributes[(logical_id, "TopicName")] = name
        stack.attributes[(logical_id, "TopicArn")] = arn
    provision_buses(stack, clients)
    for logical_id, _ in stack.resources("AWS::S3::Bucket"):
        # Bucket names are global and lower-case; the stack name keeps tests' buckets apart.
        name = f"{stack.name}-{logical_id}".lower()
        clients["s3"].create_bucket(Bucket=name)
        stack.physical[logical_id] = name
        stack.attributes[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
    for logical_id, resource in stack.resources("AWS::SecretsManager::Secret"):
        props = stack.resolve(resource.get("Properties", {}))
        name = props.get("Name") or f"{stack.name}-{logical_id}"
        value = generated(props["GenerateSecretString"]) if "GenerateSecretString" in props else None
        value = value or props.get("SecretString", "{}")
        arn = clients["secretsmanager"].create_secret(Name=name, SecretString=value)["ARN"]
        stack.physical[logical_id] = arn
    return stack


def provision_buses(stack: Stack, clients: Mapping[str, Any]) -> None:
    """The template's EventBridge buses, then their archives (which name a bus)."""
    for logical_id, resource in stack.resources("AWS::Events::EventBus"):
        name = str(stack.resolve(resource["Properties"]["Name"]))
        arn = clients["events"].create_event_bus(Name=name)["EventBusArn"]
        stack.physical[logical_id] = name
        stack.attributes[(logical_id, "Arn")] = arn
        stack.attributes[(logical_id, "Name")] = name
    for logical_id, resource in stack.resources("AWS::Events::Archive"):
        props = stack.resolve(resource["Properties"])
        name = f"{stack.name}-{logical_id}"[:48]
        arn = clients["events"].create_archive(
            ArchiveName=name, EventSourceArn=props["SourceArn"], RetentionDays=int(props["RetentionDays"])
        )["ArchiveArn"]
        stack.physical[logical_id] = name
        stack.attributes[(logical_id, "Arn")] = arn


def generated(spec: Mapping[str, Any]) -> str:
    """What GenerateSecretString makes of ``spec``, for the properties the template uses (a length,
    no punctuation): letters and digits."""
    if set(spec) - {"PasswordLength", "ExcludePunctuation"} or not spec.get("ExcludePunctuation"):
        raise ValueError(f"GenerateSecretString {dict(spec)}: only a PasswordLength without punctuation is known here")
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
