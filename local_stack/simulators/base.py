"""A small threaded HTTP server on 127.0.0.1 for API simulators, and a fault plan they share.

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
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from local_stack.constants import LOOPBACK
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
#: The name of the fault that resets the connection halfway through the body.
RESET_MID_BODY = "reset_mid_body"


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Fault:
    """What one request gets instead of (or before) its normal answer.

    ``status`` set: answer that status with ``body`` (or the API's error body when None).
    ``delay`` set: wait that long first; with no status the normal answer follows, late.
    ``expire_tokens``: the simulator's :meth:`Simulator.expire_tokens` runs, then 401 is answered.
    ``edit`` set: it changes the normal answer's JSON body in place (a well-formed JSON page that is not
    the API's shape: a key missing, a null). ``cut_body``: the answer's headers and half its body go
    out, then the connection is reset (a proxy or a load balancer dropping mid-transfer).
    """

    name: str
    status: int | None = None
    body: bytes | None = None
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    expire_tokens: bool = False
    edit: Callable[[Any], object] | None = None
    cut_body: bool = False

    @classmethod
    def throttle(cls, retry_after: float | None = None) -> Fault:
        """429, with ``Retry-After: <seconds>`` when given."""
        headers = () if retry_after is None else (("Retry-After", _seconds(retry_after)),)
        return cls("throttle", status=429, headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(f"http_{status}", status=status)

    @classmethod
    def html_error(cls, status: int = 502) -> Fault:
        """What a proxy in front of the API answers: an HTML page, not the API's JSON."""
        page = f"<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1><hr>nginx</body></html>"
        return cls(f"html_{status}", status=status, body=page.encode(), content_type="text/html")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """The normal answer after ``delay`` seconds: longer than a client's timeout, it times out."""
        return cls("slow", delay=delay)

    @classmethod
    def malformed(cls, body: bytes = b'{"api-events": [{"id": "0_1"', status: int = 200) -> Fault:
        """A success status with a body the client cannot read (by default, truncated JSON)."""
        return cls("malformed", status=status, body=body)

    @classmethod
    def altered(cls, name: str, edit: Callable[[Any], object]) -> Fault:
        """The normal answer, its JSON body changed in place by ``edit`` (what it returns is ignored)."""
        return cls(name, edit=edit)

    @classmethod
    def reset_mid_body(cls) -> Fault:
        """The normal answer's status, headers and first half, then a connection reset."""
        return cls(RESET_MID_BODY, cut_body=True)

    @classmethod
    def expired_token(cls) -> Fault:
        """Every token issued so far expires and this request answers 401."""
        return cls("expired_token", status=401, expire_tokens=True)


#: What ``FaultPlan.randomly`` picks from unless told otherwise: transient faults a client retries.
TRANSIENT_FAULTS: tuple[Fault, ...] = (
    Fault.throttle(retry_after=1),
    Fault.throttle(),
    Fault.server_error(500),
    Fault.server_error(503),
    Fault.html_error(502),
)


@dataclass
class _Queued:
    fault: Fault
    prefix: str
    method: str | None
    remaining: int


class FaultPlan:
    """Faults queued for path prefixes, consumed in order by matching requests; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self._rate = 0.0
        self._rng = random.Random(0)
        self._random_faults: Sequence[Fault] = TRANSIENT_FAULTS
        self._random_prefix = "/"
        #: Names of the faults served so far, in order: what a test or the local stack reports.
        self.served: list[str] = []

    def add(self, fault: Fault, *, prefix: str = "/", times: int = 1, method: str | None = None) -> FaultPlan:
        """The next ``times`` requests whose path starts with ``prefix`` (and of ``method``) get ``fault``."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._queue.append(_Queued(fault, prefix, method.upper() if method else None, times))
        return self

    def randomly(
        self, rate: float, *, seed: int, faults: Sequence[Fault] = TRANSIENT_FAULTS, prefix: str = "/"
    ) -> FaultPlan:
        """Besides the queue, each request under ``prefix`` gets one of ``faults`` with probability
        ``rate``; the seeded RNG makes a run's faults repeat. A rate of 0 turns this off."""
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        with self._lock:
            self._rate = rate
            self._rng = random.Random(seed)
            self._random_faults = tuple(faults)
            self._random_prefix = prefix
        return self

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._rate = 0.0

    def pending(self) -> int:
        """Requests the queued faults will still take."""
        with self._lock:
            return sum(item.remaining for item in self._queue)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault this request gets, if any; consumes one use of a queued fault."""
        with self._lock:
            for item in self._queue:
                if path.startswith(item.prefix) and item.method in (None, method):
                    item.remaining -= 1
                    if item.remaining == 0:
                        self._queue.remove(item)
                    self.served.append(item.fault.name)
                    return item.fault
            if self._rate and path.startswith(self._random_prefix) and self._rng.random() < self._rate:
                fault = self._rng.choice(self._random_faults)
                self.served.append(fault.name)
                return fault
        return None


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
        answer = self._route(request)
        if fault is not None and fault.edit is not None and answer.body:
            value = json.loads(answer.body)
            fault.edit(value)
            answer.body = json.dumps(value, ensure_ascii=False).encode()
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
