"""The admin API's OpenAPI description, generated from the handlers of the functions that serve it:
the committed ``openapi.json`` (a test fails when it is stale).

``python -m local_stack.openapi`` (``make openapi``) rewrites ``openapi.json``; ``--stdout`` prints it.
"""

from __future__ import annotations

import sys
from typing import Any

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge

from local_stack.api_gateway import load_modules
from local_stack.template import ROOT, Stack

#: The committed OpenAPI description of the admin API.
OPENAPI = ROOT / "openapi.json"

#: How OpenAPI names IAM authentication; API Gateway's own extension says which kind.
SIGV4_SCHEME: Any = {
    "sigv4": {
        "type": "apiKey",
        "name": "Authorization",
        "in": "header",
        "description": "AWS Signature Version 4 (service execute-api), checked by API Gateway against IAM",
        "x-amazon-apigateway-authtype": "awsSigv4",
    }
}
#: Where the deployed API answers (the stack's AdminApiUrl output); locally, the front's URL.
DEPLOYED: Any = {
    "url": "https://{restApiId}.execute-api.{region}.amazonaws.com/Prod",
    "description": "The deployed stack (its AdminApiUrl output)",
    "variables": {
        "restApiId": {"default": "restApiId", "description": "The AdminApi's id"},
        "region": {"default": "eu-central-1"},
    },
}


def openapi_document(stack: Stack | None = None) -> str:
    """The admin API's OpenAPI description, merged from the resolvers of the functions that serve it."""
    modules = load_modules(stack or Stack())
    merge = OpenAPIMerge(
        title="Kontur Feed Relay admin API",
        version="1.0.0",
        description="Share Extern accounts' events with the integrator, manage its event publishers, and "
        "see and steer the relay's feeds. Every route is IAM-authenticated: sign requests with SigV4 "
        "(service execute-api).",
        servers=[DEPLOYED],
        security_schemes=SIGV4_SCHEME,
        security=[{"sigv4": []}],
        on_conflict="error",
    )
    for module in modules.values():
        merge.add_schema(module.app.get_openapi_schema())
    return merge.get_openapi_json_schema() + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--stdout"]:
        sys.stdout.write(openapi_document())
        return 0
    if argv[1:]:
        print("usage: python -m local_stack.openapi [--stdout]", file=sys.stderr)
        return 2
    OPENAPI.write_text(openapi_document())
    print(f"wrote {OPENAPI.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
