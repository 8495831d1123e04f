"""A small threaded HTTP server on 127.0.0.1 for API simulators, with the fault plan they share
(``simulators.faults``).

A simulator subclasses :class:`Simulator`, registers routes (``method`` + a path pattern with
``{name}`` placeholders) and answers :class:`Response` objects. Tests and the local stack queue
faults on :attr:`Simulator.faults` for a path prefix::

    with MySimulator() as sim:
        sim.faults.add(Fault.throttle(retry_after=1), prefix="/v1/events", times=2)
        sim.faults.add(Fault.slow(5.0), prefix="/v1/events")
        sim.faults.randomly(0.05, seed=7)   # the local stack's background noise

A queued fault is consumed by the next matching request. Error faults without a body of their own
are rendered by :meth:`Simulator.error_body`, so each API answers errors in its own format.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from local_stack.constants import LOOPBACK
from local_stack.simulators.faults import RESET_MID_BODY, FaultPlan
from local_stack.simulators.load import Load


@dataclass
class Request:
    method: str
    path: str
    #: Query parameters; a repeated name keeps its last value.
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: Values of the route pattern's ``{name}`` placeholders.
    params: dict[str, str] = field(default_factory=dict)
    #: Whatever a simulator keeps for the duration of one request (e.g. its trace id).
    context: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(self.body.decode() or "null")

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode(), keep_blank_values=True))


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(value, ensure_ascii=False).encode()
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Exchange:
    """One request as the simulator saw it, for tests that count or inspect calls."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int
    fault: str | None
    #: When the answer was ready (time.monotonic, as ``Load`` counts arrivals).
    at: float = 0.0


class Simulator:
    """Routes, faults and a request journal on a ThreadingHTTPServer bound to 127.0.0.1, port 0."""

    name = "simulator"

    def __init__(self) -> None:
        self.faults = FaultPlan()
        self.load = Load()
        self.journal: list[Exchange] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._journal_lock = threading.Lock()
        self._traffic: threading.Thread | None = None
        self._traffic_stop = threading.Event()

    # -- for subclasses ----------------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer ``method`` on paths matching ``pattern``, e.g. ``/v1/{accountId}/share-events``."""
        regex = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(pattern))
        self._routes.append((method.upper(), re.compile(f"^{regex}$"), handler))

    def error_body(self, request: Request, status: int, message: str) -> Response:
        """The API's own error answer; the default is a JSON object with a message."""
        return Response.json({"status": status, "message": message}, status)

    def response_headers(self, request: Request) -> dict[str, str]:
        """Headers every answer carries (e.g. a trace id)."""
        return {}

    def expire_tokens(self) -> None:
        """What an ``expired_token`` fault does besides answering 401; override where tokens exist."""

    def advance(self) -> int:
        """One tick of a live feed's traffic; simulators of feeds override it. Returns events added."""
        raise NotImplementedError(f"the {self.name} simulator generates no traffic")

    # -- traffic -----------------------------------------------------------------------------------

    def start_traffic(self, interval: float = 1.0) -> None:
        """Call ``advance`` every ``interval`` seconds in a background thread, until ``stop_traffic``."""
        if self._traffic is not None:
            return
        self._traffic_stop.clear()

        def tick() -> None:
            while not self._traffic_stop.wait(interval):
                self.advance()

        self._traffic = threading.Thread(target=tick, name=f"{self.name}-traffic", daemon=True)
        self._traffic.start()

    def stop_traffic(self) -> None:
        self._traffic_stop.set()
        if self._traffic is not None:
            self._traffic.join(timeout=5)
            self._traffic = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the {self.name} simulator is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"{self.name}-http", kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_traffic()
        if self._server is None:
            return
        self._stopping.set()  # wakes requests sleeping in a slow fault
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self, path_prefix: str = "/", method: str | None = None) -> list[Exchange]:
        with self._journal_lock:
            return [
                e for e in self.journal if e.path.startswith(path_prefix) and (method is None or e.method == method)
            ]

    # -- dispatch ----------------------------------------------------------------------------------

    def dispatch(self, request: Request) -> tuple[Response, str | None]:
        """The answer to ``request`` and the name of the fault it got, if any."""
        fault = self.faults.take(request.method, request.path)
        acted = self._route(request) if fault is not None and fault.acted else None
        if fault is not None:
            if fault.delay and self._stopping.wait(fault.delay):
                return Response(503), fault.name
            if fault.expire_tokens:
                self.expire_tokens()
            if fault.status is not None:
                if fault.body is None:
                    answer = self.error_body(request, fault.status, f"simulated fault: {fault.name}")
                else:
                    answer = Response(fault.status, fault.body, {"Content-Type": fault.content_type})
                answer.headers.update(dict(fault.headers))
                return answer, fault.name
        answer = acted if acted is not None else self._route(request)
        if fault is not None and fault.edit is not None and answer.body:
            value = json.loads(answer.body)
            fault.edit(value)
            try:
                answer.body = json.dumps(value, ensure_ascii=False).encode()
            except UnicodeEncodeError:
                # A lone surrogate has no UTF-8: escaped (\ud800), as .NET's serializers send one.
                answer.body = json.dumps(value).encode()
        return answer, fault.name if fault else None

    def _route(self, request: Request) -> Response:
        allowed = []
        for method, regex, handler in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            request.params = match.groupdict()
            return handler(request)
        if allowed:
            answer = self.error_body(request, 405, f"{request.method} is not allowed on {request.path}")
            answer.headers["Allow"] = ", ".join(sorted(set(allowed)))
            return answer
        return self.error_body(request, 404, f"no such resource: {request.path}")

    def _record(self, request: Request, status: int, fault: str | None) -> None:
        with self._journal_lock:
            self.journal.append(
                Exchange(request.method, request.path, request.query, request.headers, status, fault, time.monotonic())
            )


def _handler_class(simulator: Simulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"{simulator.name}-simulator"
        # An answer goes out as two writes (headers, then body): with Nagle's algorithm the second
        # waits for the client's delayed ACK of the first, 40 ms on Linux, which no real API adds.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method=self.command,
                path=urllib.parse.unquote(split.path),
                query=dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True)),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            simulator.load.begin()
            try:
                if simulator.load.latency:
                    time.sleep(simulator.load.latency)
                answer, fault = simulator.dispatch(request)
            except Exception as error:  # noqa: BLE001 - a simulator bug must show as a 500, not a hung client
                answer, fault = simulator.error_body(request, 500, f"simulator error: {error!r}"), None
            finally:
                simulator.load.end()
            headers = {**simulator.response_headers(request), **answer.headers}
            simulator._record(request, answer.status, fault)
            try:
                self.send_response(answer.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if self.command != "HEAD" and fault == RESET_MID_BODY:
                    self.wfile.write(answer.body[: len(answer.body) // 2])
                    self.wfile.flush()
                    # SO_LINGER 0: close sends a reset instead of a clean end, as a dropped link does.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                elif self.command != "HEAD":
                    self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (a timeout): nothing to answer

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the journal records every request."""

    return _Handler
