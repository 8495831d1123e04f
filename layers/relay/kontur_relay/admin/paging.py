"""Pages of the admin API's lists: ``limit`` and ``nextToken``, the table key a page ends at.

A token is the key of the last item of its page, so the next page scans on from there: no state is
kept between requests, and a page reads only as far as it needs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Query

from kontur_relay.admin.problems import ApiError

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page (default 100)")]
NextToken = Annotated[
    str | None,
    Query(
        alias="nextToken",
        min_length=1,
        # A token holds a feed id (a DynamoDB key, at most 2048 bytes); a longer one is none we gave.
        max_length=2048,
        description="The nextToken of the previous page, as given",
    ),
]
NOT_OURS = "The nextToken is not one this API gave"


def start_key(token: str | None) -> dict[str, Any] | None:
    """Where the page starts; 400 for a token this API did not give."""
    if token is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, NOT_OURS) from None
    if not isinstance(key, dict) or set(key) != {"feed"} or not isinstance(key["feed"], str) or not key["feed"]:
        raise ApiError(400, NOT_OURS)
    return key


def next_token(last: Mapping[str, Any] | None) -> str | None:
    """The token of the page after the one that ended at the key ``last`` (None: no page follows)."""
    return None if last is None else base64.urlsafe_b64encode(json.dumps(dict(last)).encode()).decode()
