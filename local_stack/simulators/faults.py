"""The faults a simulator can serve instead of (or before) a normal answer, and the plan that queues
them for path prefixes or serves them at random: what :attr:`Simulator.faults` holds."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    ``acted``: the request is served first, its effects take place (a refresh token redeemed, a
    session opened), and only then does the fault's answer replace the real one: a gateway that gave
    up on a backend that went on.
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
    acted: bool = False

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
    def after_acting(cls, status: int = 502) -> Fault:
        """The request takes effect, then a gateway answers ``status`` instead of the real answer
        (what a load balancer in front of an identity provider does when the provider is slow)."""
        return cls(f"after_acting_{status}", status=status, acted=True)

    @classmethod
    def answer_lost(cls, delay: float) -> Fault:
        """The request takes effect, and its answer comes ``delay`` seconds later: after the client's
        timeout, it is lost."""
        return cls("answer_lost", delay=delay, acted=True)

    @classmethod
    def expired_token(cls) -> Fault:
        """Every token issued so far expires and this request answers 401."""
        return cls("expired_token", status=401, expire_tokens=True)


#: A token lives minutes at the least: a random ``expired_token`` fault this soon after the last one
#: expires nothing (the token was got since, so it is fresh) and the request is answered as usual.
#: Queued faults are served as queued, so a test can still make a fresh token fail.
MIN_TOKEN_LIFE = 5.0

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
        self._expired_at = float("-inf")

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
                if fault.expire_tokens:
                    if time.monotonic() - self._expired_at < MIN_TOKEN_LIFE:
                        return None
                    self._expired_at = time.monotonic()
                self.served.append(fault.name)
                return fault
        return None
