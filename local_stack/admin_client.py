"""The admin API as a caller meets it: SigV4-signed requests to the local API Gateway front, with
the local stack's credentials (as awscurl or curl --aws-sigv4 would sign them)."""

from __future__ import annotations

import json
from typing import Any

import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local_stack.constants import REGION
from local_stack.services import LOCAL_CREDENTIALS


class AdminClient:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.credentials = Credentials(
            LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"], LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        )

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The answer's status and JSON body (None when it has none)."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = AWSRequest(method=method, url=f"{self.url}{path}", data=data, headers=headers)
        SigV4Auth(self.credentials, "execute-api", REGION).add_auth(request)
        url = f"{self.url}{path}"
        response = requests.request(method, url, data=data, headers=dict(request.headers), timeout=30)
        return response.status_code, response.json() if response.content else None
