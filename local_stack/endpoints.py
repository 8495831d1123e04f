"""``.local/endpoints.json``: where this run's services listen, for scripts, since every run picks
new ports (``jq -r .adminUrl .local/endpoints.json``).

Written once the stack is up, removed as soon as it stops. A run killed outright (SIGKILL) cannot
remove it: the ``pid`` it names is then no longer running, which is how a script tells it is stale.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3

from local_stack.constants import REGION
from local_stack.feeds import ADMIN_API
from local_stack.runtime import LOCAL_DIR, Runtime

ENDPOINTS = LOCAL_DIR / "endpoints.json"
#: The services boto3 and the AWS CLI reach through ``aws`` (moto), and DynamoDB (DynamoDB Local).
MOTO_SERVICES = ("sns", "sqs", "secretsmanager", "s3")


def describe(runtime: Runtime) -> dict[str, Any]:
    """The file's content: the admin API, the AWS endpoints by service, the simulators by feed."""
    local = runtime.options.aws == "local"
    aws: dict[str, str] = {}
    if local:
        aws = dict.fromkeys(MOTO_SERVICES, os.environ["AWS_ENDPOINT_URL"])
        aws["dynamodb"] = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]
    return {
        "pid": os.getpid(),
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stackName": runtime.stack.name,
        "region": REGION if local else boto3.session.Session().region_name,
        "adminUrl": runtime.fronts.get(ADMIN_API.name),
        "aws": aws,
        "simulators": {run.kit.feed: run.simulated.endpoints() for run in runtime.feeds if run.simulated is not None},
    }


def write(runtime: Runtime) -> None:
    """Replace the file in one step: a script never reads half of it."""
    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    partial = ENDPOINTS.with_suffix(".partial")
    partial.write_text(json.dumps(describe(runtime), indent=2) + "\n")
    partial.replace(ENDPOINTS)


def remove() -> None:
    ENDPOINTS.unlink(missing_ok=True)
