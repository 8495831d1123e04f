"""HTTP to Kontur: one pooled session per API with urllib3 retries, and errors mapped to FeedErrors.

urllib3 retries 429, 5xx, timeouts and connection errors with exponential backoff and jitter and
honours ``Retry-After``; what outlasts the retries becomes FeedUnavailable. A 401 gets one fresh
credential and one more try. Any other 4xx is the caller's problem and fails loudly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from kontur_relay.domain.errors import FeedAuthError, FeedError, FeedRejected, FeedTimeout, FeedUnavailable
from kontur_relay.kontur.budget import Budget
from kontur_relay.observability import logger

USER_AGENT = "kontur-feed-relay/0.1 (+https://github.com/kontur-feed-relay)"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The connection broke while the body was read (a reset, a truncated or undecodable transfer).
#: urllib3 retries only until the headers arrive; requests reads the body after that, so these reach
#: the caller unretried unless it retries them itself.
BROKEN_BODY: tuple[type[Exception], ...] = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    urllib3.exceptions.ProtocolError,
)
#: Everything that means "the other side did not answer properly": retried, then FeedUnavailable.
TRANSIENT: tuple[type[Exception], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.RetryError,
    *BROKEN_BODY,
)
#: Tries more after a body broke off, with a short randomised pause before each.
BODY_RETRIES = 2


class Authenticator(Protocol):
    """Supplies the headers that authenticate a request."""

    def headers(self) -> dict[str, str]: ...

    def renew(self) -> bool:
        """Drop the current credential after a 401; True if a new one may be accepted."""
        ...


class CappedRetry(Retry):
    """urllib3's Retry, but a ``Retry-After`` longer than the invocation can afford is shortened:
    the run then fails as unavailable and the next tick tries again, instead of the Lambda timing out."""

    def __init__(self, *args: Any, max_retry_after: float = 20.0, budget: Budget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retry_after = max_retry_after
        self.budget = budget

    def new(self, **kwargs: Any) -> CappedRetry:
        # urllib3 makes a new Retry after each attempt from __init__'s arguments only.
        retry = super().new(**kwargs)
        retry.max_retry_after = self.max_retry_after
        retry.budget = self.budget
        return retry

    def sleep(self, response: Any = None) -> None:
        # A retry is one more request: it waits for the budget like the first, and a 429 it
        # answers pauses every request of the budget, not only this one.
        if self.budget is not None and response is not None and _slow_down(response.status, response.headers):
            self.budget.pause(self.get_retry_after(response) or self.get_backoff_time())
        super().sleep(response)
        if self.budget is not None:
            self.budget.send()

    def get_retry_after(self, response: Any) -> float | None:
        try:
            seconds = super().get_retry_after(response)
        except urllib3.exceptions.InvalidHeader:
            # A value urllib3 cannot read ("0.5", a misspelt date): the backoff decides instead.
            logger.warning(
                "Ignored an unreadable Retry-After header", extra={"value": response.headers.get("Retry-After")}
            )
            return None
        return None if seconds is None else min(seconds, self.max_retry_after)

    def get_backoff_time(self) -> float:
        # urllib3 retries the first failure at once, without jitter; a throttled feed (Kontur's
        # 20-requests limit) must get a pause before every retry, or the retry is refused too.
        backoff = super().get_backoff_time()
        if backoff > 0 or not self.history:
            return backoff
        return min(self.backoff_max, self.backoff_factor + random.random() * self.backoff_jitter)


class BudgetedAdapter(HTTPAdapter):
    """Every request through the session takes its place in the budget first."""

    def __init__(self, budget: Budget, **kwargs: Any) -> None:
        self.budget = budget
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        with self.budget.request():
            response = super().send(request, *args, **kwargs)
        if _slow_down(response.status_code, response.headers):
            # The retries ran out on a 429: the next request of any box would meet it too.
            retry = self.max_retries
            wait = retry.get_retry_after(response.raw) if isinstance(retry, Retry) else None
            self.budget.pause(wait if wait is not None else 1.0)
        return response


def _slow_down(status: int, headers: Mapping[str, str]) -> bool:
    return status == 429 or "Retry-After" in headers


def session(
    *,
    retries: int = 4,
    backoff: float = 0.5,
    statuses: Collection[int] = RETRYABLE_STATUSES,
    methods: Collection[str] = ("GET", "POST", "DELETE"),
    pool_size: int = 10,
    max_retry_after: float = 20.0,
    budget: Budget | None = None,
) -> requests.Session:
    """A session whose adapter retries what is worth retrying; each API gets its own. Its requests,
    retries included, are counted and held to ``budget`` (a counting one by default)."""
    budget = budget or Budget()
    retry = CappedRetry(
        max_retry_after=max_retry_after,
        budget=budget,
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=20,
        status_forcelist=statuses,
        allowed_methods=frozenset(methods),
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    http = requests.Session()
    adapter = BudgetedAdapter(budget, max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    http.headers["User-Agent"] = USER_AGENT
    return http


@dataclass(frozen=True)
class ErrorDetails:
    code: str | None
    message: str
    trace_id: str | None


#: Reads an API's error response: Extern sends JSON, Diadoc plain text with a header.
ErrorReader = Callable[[requests.Response], ErrorDetails]


class KonturApi:
    """One Kontur API: base URL, session, credentials, timeout and how its errors read."""

    def __init__(
        self,
        base_url: str,
        http: requests.Session,
        auth: Authenticator,
        read_error: ErrorReader,
        *,
        timeout: float = 20.0,
        retryable: Collection[int] = RETRYABLE_STATUSES,
        name: str = "Kontur",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.auth = auth
        self.read_error = read_error
        self.timeout = timeout
        self.retryable = frozenset(retryable)
        self.name = name

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """Send, renewing the credential once on a 401; return a response whose status is in ``ok``."""
        # Kontur's APIs answer in place; a redirect followed would carry the credential elsewhere.
        kwargs.setdefault("allow_redirects", False)
        response = self._send(method, path, params, headers, **kwargs)
        if response.status_code == 401 and self.auth.renew():
            logger.info("%s answered 401; retrying once with a fresh credential", self.name)
            response = self._send(method, path, params, headers, **kwargs)
        if response.status_code in ok:
            return response
        raise self.error_for(response)

    def error_for(self, response: requests.Response) -> FeedError:
        details = self.read_error(response)
        status = response.status_code
        cls: type[FeedError] = FeedRejected
        if status == 401:
            cls = FeedAuthError
        elif status in self.retryable:
            cls = FeedUnavailable
        what = f"{self.name} answered {status} to {response.request.method} {_path(response)}"
        error = cls(f"{what}: {details.message}", status=status, error_code=details.code, trace_id=details.trace_id)
        logger.warning(str(error), extra={"status": status, "error_code": details.code, "trace_id": details.trace_id})
        return error

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        **kwargs: Any,
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                return self.http.request(
                    method,
                    url,
                    params=params,
                    headers={**self.auth.headers(), **(headers or {})},
                    timeout=self.timeout,
                    **kwargs,
                )
            except BROKEN_BODY as error:
                if attempt == BODY_RETRIES:
                    raise FeedUnavailable(
                        f"{self.name} broke off its answer to {method} {path} on every try: {type(error).__name__}"
                    ) from error
                attempt += 1
                logger.info("%s broke off the answer to %s %s; trying again", self.name, method, path)
                time.sleep(random.uniform(0, 0.2 * 2**attempt))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError) as error:
                cls = FeedTimeout if _timed_out(error) else FeedUnavailable
                raise cls(
                    f"{self.name} did not answer {method} {path} after every retry: {type(error).__name__}"
                ) from error


def _timed_out(error: Exception) -> bool:
    """A timeout that outlasted urllib3's retries reaches us as a ConnectionError around a
    MaxRetryError whose reason is the timeout, not as requests.Timeout. urllib3 makes a refused
    connection (NewConnectionError) a ConnectTimeoutError too: that one is not a timeout."""
    if isinstance(error, requests.Timeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    )


def _path(response: requests.Response) -> str:
    url = response.request.path_url or ""
    return url.split("?", 1)[0]
