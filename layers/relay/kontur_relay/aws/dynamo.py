"""Small helpers every DynamoDB adapter shares: a failed condition, timestamps and optional strings."""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.exceptions import ClientError


def conditional_failed(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def text(value: object) -> str | None:
    return None if value is None else str(value)
