"""HTTP to Kontur: one API's requests over its pooled session (``kontur.session``), and errors mapped
to FeedErrors.

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

from kontur_relay.domain.errors import (
    ConfigurationError,
    FeedAuthError,
    FeedError,
    FeedRejected,
    FeedTimeout,
    FeedUnavailable,
)
from kontur_relay.kontur.secret_fields import described
from kontur_relay.kontur.session import RETRYABLE_STATUSES, retry_after
from kontur_relay.observability import logger

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

    def renew(self, refused: Mapping[str, str]) -> bool:
        """After a 401 to a request sent with ``refused``: drop that credential if it is still the one
        in use; True if a request sent again may be accepted."""
        ...

    def refused(self, headers: Mapping[str, str]) -> None:
        """A 401 again, to the credential a retry carried: leave it alone for a while, unless it
        had been accepted before."""
        ...

    def accepted(self, headers: Mapping[str, str]) -> None:
        """A request sent with ``headers`` was answered as asked: that credential works."""
        ...


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
        if response.status_code == 401 and self.auth.renew(response.request.headers):
            logger.info("%s answered 401; retrying once with a fresh credential", self.name)
            response = self._send(method, path, params, headers, **kwargs)
            if response.status_code == 401:
                self.auth.refused(response.request.headers)
        if response.status_code in ok:
            self.auth.accepted(response.request.headers)
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
        message, fields = f"{what}: {details.message}", {"error_code": details.code, "trace_id": details.trace_id}
        if cls is FeedUnavailable:
            error: FeedError = FeedUnavailable(
                message, status=status, retry_after=retry_after(response.headers), **fields
            )
        else:
            error = cls(message, status=status, **fields)
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
            sent = {**self.auth.headers(), **(headers or {})}
            try:
                return self.http.request(method, url, params=params, headers=sent, timeout=self.timeout, **kwargs)
            except BROKEN_BODY as error:
                if attempt == BODY_RETRIES:
                    raise FeedUnavailable(
                        f"{self.name} broke off its answer to {method} {path} on every try: {described(error)}"
                    ) from error
                attempt += 1
                logger.info("%s broke off the answer to %s %s; trying again", self.name, method, path)
                time.sleep(random.uniform(0, 0.2 * 2**attempt))
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError) as error:
                cls = FeedTimeout if _timed_out(error) else FeedUnavailable
                raise cls(
                    f"{self.name} did not answer {method} {path} after every retry: {described(error)}"
                ) from error
            except (requests.RequestException, ValueError) as error:
                # The request could not even be made (a header with a line break, say): its error
                # quotes the request, credentials included, so neither it nor its chain goes on.
                raise ConfigurationError(
                    f"{self.name}: {method} {path} could not be sent: {described(error)}"
                ) from None


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
