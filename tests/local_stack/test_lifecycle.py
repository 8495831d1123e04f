"""What a run leaves for scripts and what it leaves behind: ``.local/endpoints.json`` while it runs,
and no process of its own (Java, moto, a function's worker) once it ended, however it ended:
Ctrl-C, a failed start, or killed outright."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import boto3
import pytest
import requests

from local_stack.admin_client import AdminClient
from local_stack.constants import REGION
from local_stack.endpoints import ENDPOINTS
from tests.local_stack.harness import StackRun, run_stack, survivors

pytestmark = pytest.mark.slow


def client(service: str, endpoint: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local"
    )


def test_a_script_finds_the_stack_in_endpoints_json_until_ctrl_c_stops_everything():
    with StackRun("--duration", "60") as run:
        run.wait_for(r"\[running [1-9]\d*s")
        endpoints = json.loads(ENDPOINTS.read_text())

        assert endpoints["pid"] == run.process.pid
        assert endpoints["region"] == REGION
        status, answer = AdminClient(endpoints["adminUrl"]).call("GET", "/feeds")
        assert status == 200, answer
        queues = client("sqs", endpoints["aws"]["sqs"]).list_queues()["QueueUrls"]
        assert any(url.endswith(f"{endpoints['stackName']}-demo-all") for url in queues), queues
        tables = client("dynamodb", endpoints["aws"]["dynamodb"]).list_tables()["TableNames"]
        assert any(table.startswith(endpoints["stackName"]) for table in tables), tables
        assert set(endpoints["simulators"]) == {"extern", "diadoc"}
        for simulator in endpoints["simulators"].values():
            # Unsigned, unauthenticated: refused, but by the simulator itself.
            assert requests.get(simulator["api"], timeout=10).status_code in (401, 403, 404)
            assert requests.get(f"{simulator['identity']}/connect/token", timeout=10).status_code in (404, 405)

        run.interrupt()
        code, text = run.finish()

    assert code == 128 + signal.SIGINT, text
    assert "Stopped by SIGINT" in text
    assert "Summary:" in text
    assert not ENDPOINTS.exists()
    assert survivors(run.marker) == []


def test_a_run_that_fails_to_start_stops_what_it_had_started():
    # The schedule is read once DynamoDB Local, moto, the simulators and the workers' stack are up.
    code, text, marker = run_stack("--parameter", "ExternPollSchedule=rate(soon)")

    assert code == 1, text
    assert "DynamoDB Local http://" in text
    assert "rate(soon)" in text
    assert not ENDPOINTS.exists()
    assert survivors(marker) == []


def test_a_killed_run_leaves_no_process_and_an_endpoints_file_naming_a_dead_pid():
    with StackRun("--duration", "60") as run:
        run.wait_for(r"\[running [1-9]\d*s")
        os.kill(run.process.pid, signal.SIGKILL)
        code, _ = run.finish()

    assert code == -signal.SIGKILL
    assert survivors(run.marker) == []
    left = json.loads(ENDPOINTS.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(left["pid"], 0)  # how a script tells the file is stale
    ENDPOINTS.unlink()
