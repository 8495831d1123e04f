"""A credential with a line break in it (what ``jq --rawfile`` leaves at the end of a value) is a
configuration error naming the field, and its value appears nowhere: not in the logs, not on the
feed's row that ``GET /feeds`` shows every operator, not in the error the run raises (the failed-runs
queue keeps it), not in the metrics. Each format of each feed's secret, through the real pollers."""

from __future__ import annotations

import json
import logging
import secrets
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from kontur_relay.observability import logger as relay_logger
from local_stack.context import LocalContext
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack
from tests.conftest import load_handler
from tests.e2e.test_diadoc_e2e import register

CLIENT_ID = "feed-relay"


@dataclass
class World:
    identity: IdentitySimulator
    extern: ExternSimulator
    diadoc: DiadocSimulator
    api_key: str
    username: str
    password: str
    #: The Diadoc secret's legacy JSON (api_client_id, login, password) of a user who sees one box.
    legacy: dict[str, str]


def _oidc(world: World, **values: str) -> dict[str, str]:
    return {"token_url": world.identity.token_url, "client_id": CLIENT_ID, "client_secret": world.api_key, **values}


def _extern_password(world: World) -> dict[str, str]:
    values = {"grant_type": "password", "username": world.username, "password": world.password}
    return _oidc(world, scope="extern.api", api_key=world.api_key, **values)


def _extern_refresh(world: World) -> dict[str, str]:
    refresh = world.identity.refresh_token_for(world.username, CLIENT_ID)
    return _oidc(world, scope="extern.api", api_key=world.api_key, grant_type="refresh_token", refresh_token=refresh)


def _diadoc_password(world: World) -> dict[str, str]:
    login = world.legacy["login"]
    return _oidc(world, grant_type="password", username=login, password=world.legacy["password"])


def _diadoc_refresh(world: World) -> dict[str, str]:
    refresh = world.identity.refresh_token_for(world.legacy["login"], CLIENT_ID)
    return _oidc(world, grant_type="refresh_token", refresh_token=refresh)


def _extern_token(world: World) -> dict[str, str]:
    return {"access_token": world.identity.issue(world.username, CLIENT_ID), "api_key": world.api_key}


def _diadoc_token(world: World) -> dict[str, str]:
    return {"access_token": world.identity.issue(world.legacy["login"], CLIENT_ID)}


#: (feed kind, the secret's format, the field that gets a line break)
Secret = Callable[[World], dict[str, str]]
CASES: list[tuple[str, str, Secret, str]] = [
    ("extern", "static token", _extern_token, "access_token"),
    ("extern", "static token", _extern_token, "api_key"),
    ("extern", "auth.sid", lambda w: {"sid": w.extern.session(w.username), "api_key": w.api_key}, "sid"),
    ("extern", "auth.sid", lambda w: {"sid": w.extern.session(w.username), "api_key": w.api_key}, "api_key"),
    ("extern", "password grant", _extern_password, "api_key"),
    ("extern", "password grant", _extern_password, "password"),
    ("extern", "password grant", _extern_password, "client_secret"),
    ("extern", "refresh token", _extern_refresh, "api_key"),
    ("extern", "refresh token", _extern_refresh, "refresh_token"),
    ("diadoc", "bearer token", _diadoc_token, "access_token"),
    ("diadoc", "password grant", _diadoc_password, "password"),
    ("diadoc", "password grant", _diadoc_password, "client_secret"),
    ("diadoc", "refresh token", _diadoc_refresh, "refresh_token"),
    ("diadoc", "DiadocAuth", lambda w: dict(w.legacy), "api_client_id"),
    ("diadoc", "DiadocAuth", lambda w: dict(w.legacy), "login"),
    ("diadoc", "DiadocAuth", lambda w: dict(w.legacy), "password"),
]


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """What a function logs as Lambda keeps it: the relay's logger at DEBUG (LogLevel may say so),
    every other logger at INFO (the functions' application log level), each line as formatted."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.name}: {self.format(record)}")

    capture = Capture(level=logging.DEBUG)
    capture.setFormatter(relay_logger.registered_formatter)
    targets = {logging.getLogger(relay_logger.name): logging.DEBUG, logging.getLogger(): logging.INFO}
    levels = {target: target.level for target in targets}
    for target, level in targets.items():
        target.addHandler(capture)
        target.setLevel(level)
    try:
        yield lines
    finally:
        for target, level in levels.items():
            target.removeHandler(capture)
            target.setLevel(level)


@pytest.fixture
def world():
    with (
        IdentitySimulator(token_lifetime=600) as identity,
        ExternSimulator(identity, seed=3) as extern,
        DiadocSimulator(identity, seed=5) as diadoc,
    ):
        api_key = secrets.token_hex(16)
        username, password = f"svc-{uuid.uuid4().hex[:6]}@integrator.example", secrets.token_urlsafe(16)
        extern.add_integrator(CLIENT_ID, api_key, username=username, password=password)
        extern.setup(CLIENT_ID, accounts=2, backlog=20)
        legacy = diadoc.setup(boxes=1, backlog=10)
        yield World(identity, extern, diadoc, api_key, username, password, legacy)


def _run(stack: Stack, world: World, kind: str, values: dict[str, str], monkeypatch) -> BaseException | None:
    """One tick of the kind's poller, with ``values`` as its credentials secret; what it raised."""
    name = f"{kind}-credentials-{uuid.uuid4().hex}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(values))
    if kind == "extern":
        function = "ExternPollerFunction"
        handler = load_handler(
            stack.function(function), monkeypatch, EXTERN_API_URL=world.extern.url, EXTERN_CREDENTIALS_SECRET=name
        ).handler
        event: dict[str, Any] = {"feed": "extern"}
    else:
        function = "DiadocPollerFunction"
        register(stack, next(iter(world.diadoc.boxes)))
        handler = load_handler(
            stack.function(function), monkeypatch, DIADOC_API_URL=world.diadoc.url, DIADOC_CREDENTIALS_SECRET=name
        ).handler
        event = {}
    try:
        handler(event, LocalContext(function))
    except Exception as error:  # noqa: BLE001 - what the failed-runs queue would get, examined below
        return error
    return None


@pytest.mark.parametrize(
    ("kind", "secret_format", "values", "field"), CASES, ids=[f"{k}-{f}-{n}" for k, f, _, n in CASES]
)
def test_a_line_break_in_a_credential_is_a_configuration_error_that_never_shows_the_value(
    stack, world, aws, monkeypatch, capsys, kind, secret_format, values, field
):
    given = values(world)
    value = given[field]
    with captured_logs() as lines:
        raised = _run(stack, world, kind, {**given, field: value + "\n"}, monkeypatch)

    rows = json.dumps(boto3.resource("dynamodb").Table(stack.physical["CursorsTable"]).scan()["Items"], default=str)
    error = "".join(traceback.format_exception(raised)) if raised is not None else ""
    printed = capsys.readouterr()  # the metrics (EMF) and whatever else went to stdout and stderr
    places = {"logs": "\n".join(lines), "rows": rows, "error": error, "output": printed.out + printed.err}
    for where, text in places.items():
        assert value not in text, f"the {field} of the {secret_format} secret is in the {where}"
        assert value[:12] not in text, f"the start of the {field} of the {secret_format} secret is in the {where}"
    # What an operator sees says which field to mend: the run's error (Extern) or the box's (Diadoc).
    told = error if kind == "extern" else rows
    assert f"{field} in the credentials secret" in told, told[-2000:]
    assert "control character" in told
