"""The questions a deployment asks: every parameter says what it does, belongs to one labelled group
of the console's form, and a combination that cannot work is refused before anything is created."""

from __future__ import annotations

import re
import tomllib

import pytest

from local_stack.template import ROOT, Stack
from tests.template.parameter_reference import REFERENCE, reference
from tests.template.sam import refusals

README = (ROOT / "README.md").read_text()
#: The README and every page of the documentation but the reference itself.
DOCS = {
    path: path.read_text()
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    if path.name != "parameters.md"
}


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack()


def test_every_pattern_says_in_words_what_it_allows(stack: Stack):
    # CloudFormation's refusal quotes it, and the reference shows it instead of a regular expression.
    for name, spec in stack.doc["Parameters"].items():
        assert "AllowedPattern" not in spec or spec.get("ConstraintDescription"), name


def test_every_parameter_says_what_it_does(stack: Stack):
    vague = [
        name
        for name, spec in stack.doc["Parameters"].items()
        if len(" ".join(str(spec.get("Description", "")).split())) < 60
    ]

    assert not vague, f"parameters without a description that explains them: {vague}"


def test_every_parameter_is_in_exactly_one_labelled_group_of_the_console_form(stack: Stack):
    interface = stack.doc.get("Metadata", {}).get("AWS::CloudFormation::Interface", {})
    grouped = [name for group in interface.get("ParameterGroups", []) for name in group["Parameters"]]
    labels = interface.get("ParameterLabels", {})

    assert sorted(grouped) == sorted(stack.doc["Parameters"]), "each parameter in one group, none twice"
    for group in interface["ParameterGroups"]:
        assert group["Label"]["default"], group
    assert set(labels) == set(stack.doc["Parameters"])
    assert all(label["default"] for label in labels.values())


def test_the_guided_prompts_ask_in_the_order_of_the_groups(stack: Stack):
    # sam deploy --guided shows neither groups nor descriptions: it asks in the template's order.
    groups = stack.doc["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]

    assert list(stack.doc["Parameters"]) == [name for group in groups for name in group["Parameters"]]


def test_the_defaults_break_no_rule():
    assert refusals(Stack()) == []


REFUSED = [
    ({"DiadocApiVersion": "V7", "DiadocPageSize": "500"}, "DiadocPageSize"),
    ({"DiadocApiVersion": "V7", "DiadocPageSize": "101"}, "DiadocPageSize"),
    ({"DiadocMinPollSeconds": "3600", "DiadocMaxPollSeconds": "60"}, "DiadocMinPollSeconds"),
    ({"DiadocMinPollSeconds": "900", "DiadocMaxPollSeconds": "600"}, "DiadocMinPollSeconds"),
    ({"DiadocMinPollSeconds": "45"}, "DiadocMinPollSeconds"),
    ({"CreateApiGatewayLogsRole": "true", "AccountHasApiGatewayLogsRole": "true"}, "CreateApiGatewayLogsRole"),
    ({"PollIntervalSeconds": "5", "ExternPollSchedule": "rate(5 minutes)"}, "PollIntervalSeconds"),
    ({"DiadocMaxRequestsPerSecond": "150"}, "DiadocMaxRequestsPerSecond"),
    ({"SafetyMarginSeconds": "300"}, "SafetyMarginSeconds"),
    ({"ExternApiUrl": "http://extern-api.kontur.ru"}, "ExternApiUrl"),
    ({"AlarmEmail": "on-call"}, "AlarmEmail"),
    ({"ExternCredentialsSecretArn": "extern-credentials"}, "ExternCredentialsSecretArn"),
    ({"ExternPollSchedule": "every minute"}, "ExternPollSchedule"),
    ({"SecretsKmsKeyArn": "alias/relay"}, "SecretsKmsKeyArn"),
    ({"Sink": "kafka"}, "Sink"),
    ({"Sink": "webhook"}, "WebhookUrl"),
    ({"Sink": "webhook", "WebhookUrl": "http://erp.example/kontur"}, "WebhookUrl"),
    ({"Sink": "sqs", "QueueEndpointUrl": "https://message-queue.api.cloud.yandex.net"}, "QueueEndpointUrl"),
    ({"EventArchiveDays": "a week"}, "EventArchiveDays"),
]


@pytest.mark.parametrize(("parameters", "named"), REFUSED, ids=[" ".join(p) for p, _ in REFUSED])
def test_a_combination_that_cannot_work_is_refused_naming_the_parameter(parameters: dict[str, str], named: str):
    refused = refusals(Stack(parameters=dict(parameters)))

    assert refused, f"{parameters} would deploy"
    assert any(named in reason for reason in refused), refused


ACCEPTED = [
    {"DiadocApiVersion": "V7", "DiadocPageSize": "100"},
    {"DiadocApiVersion": "V8", "DiadocPageSize": "500"},
    {"DiadocMinPollSeconds": "900", "DiadocMaxPollSeconds": "900"},
    {"DiadocMinPollSeconds": "15", "DiadocMaxPollSeconds": "300"},
    {"CreateApiGatewayLogsRole": "true"},
    {"AccountHasApiGatewayLogsRole": "true"},
    {"PollIntervalSeconds": "5", "ExternPollSchedule": "rate(1 minute)"},
    {"ExternPollSchedule": "rate(5 minutes)"},
    {"ExternPollSchedule": "cron(0/2 * * * ? *)"},
    {"ExternApiUrl": "https://extern-api.testkontur.ru"},
    {"AlarmEmail": "on-call@example.com"},
    {"ExternCredentialsSecretArn": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:extern-AbCdEf"},
    {"SecretsKmsKeyArn": "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
    {"Sink": "eventbridge", "EventBusName": "default", "EventArchiveDays": "30"},
    {"Sink": "eventbridge", "EventBusName": "arn:aws:events:eu-central-1:123456789012:event-bus/edi"},
    {"Sink": "sqs", "FifoQueue": "true"},
    {
        "Sink": "sqs",
        "QueueEndpointUrl": "https://message-queue.api.cloud.yandex.net",
        "QueueUrl": "https://message-queue.api.cloud.yandex.net/b1gvlrnlei4l5idm9cbj/dj6000000000jbk402ng/events",
        "QueueCredentialsSecretArn": "arn:aws:secretsmanager:eu-central-1:123456789012:secret:yc-AbCdEf",
    },
    {"Sink": "webhook", "WebhookUrl": "https://erp.example/kontur/events", "WebhookBatchSize": "1"},
]


@pytest.mark.parametrize("parameters", ACCEPTED, ids=[" ".join(p) for p in ACCEPTED])
def test_a_combination_that_works_is_accepted(parameters: dict[str, str]):
    assert refusals(Stack(parameters=dict(parameters))) == []


def test_the_region_offered_is_the_one_the_docs_use():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())

    region = config["default"]["global"]["parameters"].get("region")

    assert region == "eu-central-1"
    assert any(f"--region {region}" in text for text in DOCS.values())


def test_the_parameter_reference_is_what_the_template_says():
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""

    assert committed == reference(), f"{REFERENCE.relative_to(ROOT)} is stale: regenerate it with `make parameters`"


def test_every_parameter_has_one_row_in_the_reference(stack: Stack):
    rows = re.findall(r"^\| `(\w+)`<br>", reference(stack), flags=re.MULTILINE)

    assert sorted(rows) == sorted(stack.doc["Parameters"])
    assert "LogLevel" in rows


def test_the_readme_links_the_reference_and_documents_no_parameter_of_its_own():
    assert "docs/reference/parameters.md" in README
    tables = [path.name for path, text in DOCS.items() if re.search(r"^\| parameter \|", text, flags=re.MULTILINE)]
    assert not tables, f"parameter tables in {tables}: parameters are documented in docs/reference/parameters.md alone"
