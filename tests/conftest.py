"""Shared fixtures: the real local services (DynamoDB Local, moto's server) and the template's
resources provisioned in them, one fresh stack per test."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from local_stack import api_gateway
from local_stack.services import aws_environment, dynamodb_local, moto_server
from local_stack.template import Function, Stack, provision
from tests import rights

# Before any Powertools object is built: no X-Ray daemon here, and metrics need a namespace.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayTests")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay-tests")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")


@pytest.fixture(scope="session", autouse=True)
def recorded_rights() -> None:
    """Every AWS call a function makes in any test, recorded for tests/template/test_rights.py."""
    rights.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The rights test judges every call the other tests recorded: it runs after them.
    items.sort(key=lambda item: "test_rights.py" in item.nodeid)


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> Iterator[str]:
    with dynamodb_local() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, dynamodb_endpoint: str) -> dict[str, Any]:
    """boto3 pointed at the local services through its own AWS_ENDPOINT_URL variables; clients by name."""
    for name, value in aws_environment(moto_endpoint, dynamodb_endpoint).items():
        monkeypatch.setenv(name, value)
    return {name: boto3.client(name) for name in ("dynamodb", "sns", "sqs", "events", "s3", "secretsmanager")}


@pytest.fixture
def stack(aws: dict[str, Any]) -> Stack:
    """template.yaml's tables, topic, queues and secrets, under a stack name of this test's own."""
    return provision(Stack(name=f"t{uuid.uuid4().hex[:10]}"), aws)


def load_handler(function: Function, monkeypatch: pytest.MonkeyPatch, **overrides: str) -> ModuleType:
    """Import a function's handler module fresh, with the environment the template gives it."""
    for name, value in {**function.environment, **overrides}.items():
        monkeypatch.setenv(name, value)
    module_name, _, _ = function.handler.partition(".")
    path = function.code_uri / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(f"handler_{function.logical_id}_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.handler = rights.attributed(function.logical_id, module.handler)  # type: ignore[attr-defined]
    return module


def _attributed_modules(stack: Stack) -> dict[str, ModuleType]:
    """The admin API's handler modules, each handler's AWS calls recorded as its function's."""
    modules = _load_modules(stack)
    for logical_id, module in modules.items():
        module.handler = rights.attributed(logical_id, module.handler)  # type: ignore[attr-defined]
    return modules


_load_modules = api_gateway.load_modules
api_gateway.load_modules = _attributed_modules


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno >= level]


@pytest.fixture
def logs() -> Iterator[Records]:
    """What the relay logs (Powertools' logger does not propagate to the root, so caplog misses it)."""
    from kontur_relay.observability import logger  # noqa: PLC0415 - after the environment above is set

    handler = Records()
    target = logging.getLogger(logger.service)
    target.addHandler(handler)
    yield handler
    target.removeHandler(handler)
