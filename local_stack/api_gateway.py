"""API Gateway's REST API, locally: a loopback HTTP server that turns each request into the Lambda
proxy event API Gateway sends (``requestContext.identity`` included), hands it to the handler
template.yaml deploys for that route, and turns the handler's answer back into HTTP.

The routes are template.yaml's ``Api`` events, so a route exists locally exactly when it exists
deployed. As deployed, the stage is the first path segment (``/Prod/feeds``; ``/feeds`` works too),
the path reaches the handler still percent-encoded, a path no route matches answers 403
``Missing Authentication Token``, a handler that fails answers 502 ``Internal server error``, and a
request whose event would be over Lambda's 6 MB answers 413 ``Request Too Long`` (see EVENT_LIMIT).

IAM is checked only as far as a request must be SigV4-signed (awscurl; any credentials): an
unsigned one answers 403 ``Missing Authentication Token``, as deployed. Signatures are not verified;
a request is attributed to ``arn:aws:iam::<account>:user/<the access key id that signed it>``.

The local stack starts it with :func:`start`, giving it a way to invoke a function by logical id;
tests and ``local_stack.openapi`` load the handlers into their own process with :func:`load_modules`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

from local_stack.constants import ACCOUNT, LOOPBACK
from local_stack.context import LocalContext
from local_stack.template import ROOT, Stack

LAYER = ROOT / "layers" / "relay"
STAGE = "Prod"
LOCAL_USER = "local-operator"
#: An in-process handler's Timeout: just under the 29 s after which API Gateway gives up on it.
HANDLER_TIMEOUT = 28.0
#: The limit mirrored is Lambda's, not API Gateway's: a synchronous invocation's event may be 6 MB
#: (6,291,456 bytes), where API Gateway takes a body of up to 10 MB. Lambda's is the one a caller
#: meets: the event wraps the body (escaped, beside the headers and the request context), so even a
#: body just under 6 MB is refused, and API Gateway answers 413. Measured as the event serialized.
EVENT_LIMIT = 6 * 1024 * 1024

#: Calls a function (by logical id) with an event and returns its answer; raises if the invocation failed.
Invoke = Callable[[str, dict[str, Any]], Mapping[str, Any]]
Handler = Callable[[dict[str, Any], Any], Any]

_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/\s,]+)/")


@dataclass(frozen=True)
class ApiRoute:
    """One ``Api`` event of a function: a method on a resource path with ``{name}`` parameters."""

    function: str
    method: str
    resource: str

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.resource))
        return re.compile(f"^{regex}$")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        found = self.pattern.match(path)
        return None if found is None else found.groupdict()


def api_routes(stack: Stack) -> list[ApiRoute]:
    """Every ``Api`` event of every function in the template."""
    routes = []
    for logical_id, resource in stack.resources("AWS::Serverless::Function"):
        for event in resource["Properties"].get("Events", {}).values():
            if event.get("Type") == "Api":
                props = event["Properties"]
                routes.append(ApiRoute(logical_id, str(props["Method"]).upper(), str(props["Path"])))
    return routes


def signer(authorization: str | None) -> str | None:
    """The access key id of a SigV4 ``Authorization`` header; None when the request is not signed."""
    if not authorization or not authorization.startswith("AWS4-HMAC-SHA256 "):
        return None
    found = _SIGV4_CREDENTIAL.search(authorization)
    return found.group(1) if found else None


def identity(authorization: str | None, source_ip: str, user_agent: str | None) -> dict[str, Any]:
    """``requestContext.identity`` as the IAM authorizer fills it, for the access key that signed."""
    access_key = signer(authorization)
    user = access_key or LOCAL_USER
    return {
        "accountId": ACCOUNT,
        "accessKey": access_key,
        "caller": user,
        "user": user,
        "userArn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
        "sourceIp": source_ip,
        "userAgent": user_agent,
        "apiKey": None,
        "apiKeyId": None,
        "cognitoAuthenticationProvider": None,
        "cognitoAuthenticationType": None,
        "cognitoIdentityId": None,
        "cognitoIdentityPoolId": None,
        "principalOrgId": None,
    }


def proxy_event(
    route: ApiRoute,
    *,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    parameters: Mapping[str, str],
    source_ip: str,
    stage: str = STAGE,
) -> dict[str, Any]:
    """The REST API's Lambda proxy event (payload 1.0) for one request."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    query_single = dict(pairs)
    query_multi: dict[str, list[str]] = {}
    for name, value in pairs:
        query_multi.setdefault(name, []).append(value)
    lowered = {name.lower(): value for name, value in single.items()}
    # The API declares no binary media types, so API Gateway passes every body as text.
    text = body.decode(errors="replace") if body else None
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": dict(parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "domainName": lowered.get("host", LOOPBACK),
            "extendedRequestId": request_id,
            "httpMethod": method,
            "identity": identity(lowered.get("authorization"), source_ip, lowered.get("user-agent")),
            "path": f"/{stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": "local",
            "resourcePath": route.resource,
            "stage": stage,
        },
        "body": text,
        "isBase64Encoded": False,
    }


class ApiGatewayFront:
    """The server. ``url`` includes the stage, like the deployed API's Outputs."""

    def __init__(
        self, routes: list[ApiRoute], invoke: Invoke, *, port: int = 0, stage: str = STAGE, log: Any = None
    ) -> None:
        self.routes = routes
        self.invoke = invoke
        self.stage = stage
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._server = ThreadingHTTPServer((LOOPBACK, port), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/{self.stage}"

    def start(self) -> ApiGatewayFront:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="api-gateway", kwargs={"poll_interval": 0.1}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ApiGatewayFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body) for one HTTP request."""
        split = urllib.parse.urlsplit(target)
        path = split.path
        if path == f"/{self.stage}" or path.startswith(f"/{self.stage}/"):
            path = path[len(self.stage) + 1 :] or "/"
        for route in self.routes:
            # The path as sent, percent-encoded: what API Gateway's REST API passes on, too.
            parameters = route.match(method, path)
            if parameters is not None:
                break
        else:
            return _json(403, {"message": "Missing Authentication Token"})
        if signer(next((value for name, value in headers if name.lower() == "authorization"), None)) is None:
            return _json(403, {"message": "Missing Authentication Token"})
        event = proxy_event(
            route,
            method=method,
            path=path,
            query=split.query,
            headers=headers,
            body=body,
            parameters=parameters,
            source_ip=source_ip,
            stage=self.stage,
        )
        if len(json.dumps(event, ensure_ascii=False).encode()) > EVENT_LIMIT:
            self.log(f"{method} {target} -> 413: the event is over Lambda's {EVENT_LIMIT} bytes")
            return _too_large()
        started = time.monotonic()
        try:
            result = self.invoke(route.function, event)
            status, answer_headers, answer_body = _http_answer(result)
        except Exception as error:  # noqa: BLE001 - API Gateway's answer to a failed invocation
            self.log(f"{method} {target}: {route.function} failed: {type(error).__name__}: {error}")
            return _json(502, {"message": "Internal server error"})
        self.log(f"{method} {target} -> {status} ({route.function}, {1000 * (time.monotonic() - started):.0f} ms)")
        return status, answer_headers, answer_body


def _json(status: int, body: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", "application/json")], json.dumps(body).encode()


def _too_large() -> tuple[int, list[tuple[str, str]], bytes]:
    return _json(413, {"message": "Request Too Long"})


def _http_answer(result: Mapping[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda proxy result as HTTP; what API Gateway refuses to pass on raises."""
    if not isinstance(result, Mapping) or not isinstance(result.get("statusCode"), int):
        raise ValueError("Malformed Lambda proxy response")
    headers: list[tuple[str, str]] = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    single = {name.lower() for name, _ in headers}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if name.lower() not in single:
            headers.extend((str(name), str(value)) for value in values)
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    return int(result["statusCode"]), headers, body


def _handler_class(front: ApiGatewayFront) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-api-gateway"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > EVENT_LIMIT:
                # Read and dropped, never held: the caller gets its answer rather than a reset connection.
                while length > 0 and (chunk := self.rfile.read(min(length, 1 << 20))):
                    length -= len(chunk)
                status, headers, answer = _too_large()
            else:
                body = self.rfile.read(length) if length else b""
                status, headers, answer = front.answer(
                    self.command, self.path, list(self.headers.items()), body, self.client_address[0]
                )
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)

        def __getattr__(self, name: str) -> Any:
            # Every method reaches API Gateway's routing (which answers 403 where no route has it),
            # not http.server's 501 for methods it has no do_<METHOD> for.
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: ``ApiGatewayFront.answer`` logs each request once, with its function."""

    return _Handler


# -- running the handlers in this process -----------------------------------------------------------


def load_modules(stack: Stack) -> dict[str, ModuleType]:
    """The handler module of every function that serves a route, imported into this process.

    The functions read their settings from ``os.environ`` when first called: set each one's
    environment (``stack.function(id).environment``) before. In one process they share it, which
    the admin API's functions can (their variables agree); the local stack runs each in its own.
    """
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    modules = {}
    for logical_id in sorted({route.function for route in api_routes(stack)}):
        module_name = _handler(stack, logical_id).rpartition(".")[0]
        path = ROOT / _properties(stack, logical_id)["CodeUri"] / f"{module_name.replace('.', '/')}.py"
        name = f"api_{logical_id}_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"no handler module {module_name} at {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic resolves the routes' models through sys.modules
        spec.loader.exec_module(module)
        modules[logical_id] = module
    return modules


def load_handlers(stack: Stack) -> dict[str, Handler]:
    """Each route-serving function's handler, imported into this process (see :func:`load_modules`)."""
    modules = load_modules(stack)
    return {
        logical_id: getattr(module, _handler(stack, logical_id).rpartition(".")[2])
        for logical_id, module in modules.items()
    }


def _properties(stack: Stack, logical_id: str) -> dict[str, Any]:
    # Read unevaluated: code and handler need no provisioned resources, unlike the environment.
    properties: dict[str, Any] = stack.doc["Resources"][logical_id]["Properties"]
    return properties


def _handler(stack: Stack, logical_id: str) -> str:
    return str(_properties(stack, logical_id)["Handler"])


def in_process(handlers: Mapping[str, Handler]) -> Invoke:
    """Invoke handlers directly, each call with a fresh context."""

    def invoke(function: str, event: dict[str, Any]) -> Mapping[str, Any]:
        result: Mapping[str, Any] = handlers[function](event, LocalContext(function, HANDLER_TIMEOUT))
        return result

    return invoke


def start(stack: Stack, invoke: Invoke | None = None, *, port: int = 0, log: Any = None) -> ApiGatewayFront:
    """Serve the template's API on 127.0.0.1:``port`` (0: any free port); stop it with ``.stop()``.

    ``invoke`` runs a function by logical id (the local stack's own function runners); without it,
    the handlers run in this process (see :func:`load_handlers` about their environment).
    """
    routes = api_routes(stack)
    return ApiGatewayFront(routes, invoke or in_process(load_handlers(stack)), port=port, log=log).start()
