"""The pooled HTTP session every Kontur API gets: urllib3 retries capped to what an invocation can
afford, and every request, retries included, held to the invocation's budget."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from kontur_relay.kontur.budget import Budget
from kontur_relay.observability import logger

USER_AGENT = "kontur-feed-relay/0.1 (+https://github.com/kontur-feed-relay)"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Answers that say the request was turned away before anything was done with it. A POST is retried
#: on these only: a 500, 502 or 504 can come after the server acted (a gateway that gave up on an
#: identity provider that went on to redeem the refresh token), and a second try would present a
#: single-use token again.
REFUSED_BEFORE = frozenset({429, 503})


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

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        # A POST is retried only when it was turned away (REFUSED_BEFORE). One whose answer was lost
        # (a read error) is not retried either: urllib3 retries reads of allowed methods only.
        if method.upper() == "POST":
            if status_code not in REFUSED_BEFORE:
                return False
            method = "GET"
        return bool(super().is_retry(method, status_code, has_retry_after))

    def increment(self, *args: Any, **kwargs: Any) -> CappedRetry:
        response = kwargs.get("response")
        asked = retry_after(response.headers) if response is not None else None
        if asked is not None and asked > self.max_retry_after:
            # Longer than a run can wait: not retried. urllib3 hands the answer back (raise_on_status
            # is off), and the caller ends the attempt as unavailable, with the wait Kontur asked for.
            raise urllib3.exceptions.MaxRetryError(kwargs.get("_pool"), kwargs.get("url"), None)  # type: ignore[arg-type]
        return super().increment(*args, **kwargs)

    def get_retry_after(self, response: Any) -> float | None:
        seconds = retry_after(response.headers)
        return None if seconds is None else min(seconds, self.max_retry_after)

    def get_backoff_time(self) -> float:
        # urllib3 retries the first failure at once, without jitter; a throttled feed (Kontur's
        # 20-requests limit) must get a pause before every retry, or the retry is refused too.
        backoff = super().get_backoff_time()
        if backoff > 0 or not self.history:
            return backoff
        return min(self.backoff_max, self.backoff_factor + random.random() * self.backoff_jitter)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The seconds a ``Retry-After`` header asks for (either of its forms); None without one."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(Retry().parse_retry_after(value))
    except urllib3.exceptions.InvalidHeader:
        # A value urllib3 cannot read ("0.5", a misspelt date): the backoff decides instead.
        logger.warning("Ignored an unreadable Retry-After header", extra={"value": value})
        return None


class BudgetedAdapter(HTTPAdapter):
    """Every request through the session takes its place in the budget first."""

    def __init__(self, budget: Budget, **kwargs: Any) -> None:
        self.budget = budget
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        with self.budget.request():
            response = super().send(request, *args, **kwargs)
        if _slow_down(response.status_code, response.headers):
            # The retries ran out on a 429, or Kontur asked for a longer wait than a run has: the next
            # request of any box would meet it too.
            asked = retry_after(response.headers)
            limit = getattr(self.max_retries, "max_retry_after", None)
            if asked is not None and limit is not None and asked > limit:
                self.budget.close(asked)
            else:
                self.budget.pause(min(asked, limit or asked) if asked is not None else 1.0)
        return response


def _slow_down(status: int, headers: Mapping[str, str]) -> bool:
    return status == 429 or "Retry-After" in headers


def longest_request(http: requests.Session, timeout: float) -> float:
    """The longest one request through ``http`` can take: every try's connection and answer (each up
    to ``timeout``) and the longest wait before each retry."""
    retry = getattr(http.get_adapter("https://"), "max_retries", None)
    retries = (retry.total or 0) if isinstance(retry, Retry) else 0
    wait = max(getattr(retry, "max_retry_after", 0.0), getattr(retry, "backoff_max", 0.0))
    return (retries + 1) * 2 * timeout + retries * wait


def session(
    *,
    retries: int = 4,
    backoff: float = 0.5,
    statuses: Collection[int] = RETRYABLE_STATUSES,
    # POST only on an answer that turned it away (see CappedRetry.is_retry), never after a lost one.
    methods: Collection[str] = ("GET", "DELETE"),
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
