"""The modes against real services: Kontur with real credentials, and a deployed stack in a real
AWS account. Real credentials come from a file or variables, and a refresh token Kontur rotated
during the run is written back to that file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3

from local_stack import feeds
from local_stack.cli import Options
from local_stack.feeds import FeedKit
from local_stack.runtime import FeedRun, Runtime
from local_stack.template import Stack


def real_kontur(options: Options, kits: Sequence[FeedKit]) -> list[FeedRun]:
    """The feeds that run against real Kontur, with the credentials each needs."""
    if options.aws == "real":
        return [FeedRun(kit) for kit in kits]  # the deployed stack's own endpoints and secrets
    return load_real_credentials(kits, options.credentials)


def deployed(options: Options, out: Callable[[str], None], header: list[str]) -> Stack:
    """The deployed stack, with the run's ``--parameter`` overrides."""
    assert options.stack_name is not None
    out(f"reading the deployed stack {options.stack_name} ...")
    stack = deployed_stack(options.stack_name)
    stack.parameters.update(options.parameters)
    header.append(f"AWS: the deployed stack {stack.name} ({boto3.session.Session().region_name})")
    return stack


def load_real_credentials(kits: Sequence[FeedKit], path: Path | None) -> list[FeedRun]:
    """Real Kontur: per feed, ``{"<feed>": {<the secret's JSON>, "api_url": ...}}`` from ``path``, or
    the variables ``KONTUR_<FEED>_CREDENTIALS`` (that JSON) and ``KONTUR_<FEED>_API_URL``."""
    from_file: dict[str, Any] = {}
    if path is not None:
        try:
            from_file = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"cannot read the credentials file {path}: {error}") from error
        if not isinstance(from_file, dict):
            raise SystemExit(f"{path} must hold a JSON object keyed by feed ({', '.join(feeds.KITS)})")
    runs = []
    for kit in kits:
        variable = f"KONTUR_{kit.feed.upper()}_CREDENTIALS"
        entry = from_file.get(kit.feed)
        if entry is None and os.environ.get(variable):
            try:
                entry = json.loads(os.environ[variable])
            except ValueError as error:
                raise SystemExit(f"{variable} is not JSON") from error
        if not isinstance(entry, dict):
            print(f"{kit.feed}: no real credentials ({path or variable}): this feed does not run")
            continue
        secret = dict(entry)
        api_url = secret.pop("api_url", None) or os.environ.get(f"KONTUR_{kit.feed.upper()}_API_URL")
        parameters = {kit.api_url_parameter: api_url} if api_url else {}
        runs.append(FeedRun(kit, credentials=secret, parameters=parameters, credentials_file=path))
    if not runs:
        raise SystemExit("--kontur real: no feed has credentials")
    return runs


def deployed_stack(name: str) -> Stack:
    """template.yaml evaluated with a deployed stack's parameters and physical resource ids."""
    cloudformation = boto3.client("cloudformation")
    described = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    parameters = {
        item["ParameterKey"]: item.get("ResolvedValue", item.get("ParameterValue", ""))
        for item in described.get("Parameters", [])
    }
    physical = {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=name):
        for resource in page["StackResourceSummaries"]:
            if resource.get("PhysicalResourceId"):
                physical[resource["LogicalResourceId"]] = resource["PhysicalResourceId"]
    stack = Stack(name=name, parameters=parameters, physical=physical)
    for logical_id, _ in stack.resources("AWS::SNS::Topic"):
        arn = physical.get(logical_id, "")
        stack.attributes[(logical_id, "TopicArn")] = arn
        stack.attributes[(logical_id, "TopicName")] = arn.rsplit(":", 1)[-1]
    return stack


def write_back_rotated(runtime: Runtime) -> None:
    """A refresh token rotated during the run lives in the (local) secret: keep it for the next run."""
    for run in runtime.feeds:
        if run.credentials is None or not run.credentials.get("refresh_token"):
            continue
        secret_id = runtime.stack.function(run.kit.function).environment[run.kit.secret_variable]
        current = json.loads(
            runtime.clients["secretsmanager"].get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")[
                "SecretString"
            ]
        )
        rotated = current.get("refresh_token")
        if not rotated or rotated == run.credentials.get("refresh_token"):
            continue
        if run.credentials_file is None:
            print(
                f"{run.kit.feed}: Kontur rotated the refresh token during this run; the one in "
                f"KONTUR_{run.kit.feed.upper()}_CREDENTIALS no longer works. Use --credentials FILE to keep it."
            )
            continue
        document = json.loads(run.credentials_file.read_text())
        document[run.kit.feed]["refresh_token"] = rotated
        run.credentials_file.write_text(json.dumps(document, indent=2) + "\n")
        print(f"{run.kit.feed}: wrote the rotated refresh token back to {run.credentials_file}")
