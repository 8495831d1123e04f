"""Failures the relay names. Each carries what an operator needs to act, and never a credential."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Base of every failure the relay reports itself."""

    #: The value of the ``Errors`` metric's ``kind`` dimension.
    kind = "relay"


class FeedError(RelayError):
    """The feed answered, or failed to answer, in a way that ends this run; the cursor stays."""

    kind = "feed"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        details = [
            f"{name}={value}"
            for name, value in (("status", status), ("error", error_code), ("trace_id", trace_id))
            if value is not None
        ]
        super().__init__(f"{message} ({', '.join(details)})" if details else message)
        self.status = status
        self.error_code = error_code
        self.trace_id = trace_id


class FeedUnavailable(FeedError):
    """Throttling, 5xx, timeouts or connection errors that outlasted every retry: try again later.
    ``retry_after``: the seconds Kontur asked to be left alone (``Retry-After``), longer than a run
    can wait; the feed's next runs skip it until then."""

    kind = "feed_unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, **details: Any) -> None:
        if retry_after is not None:
            message = f"{message}; Kontur asks to wait {retry_after:.0f} s"
        super().__init__(message, **details)
        self.retry_after = retry_after


class FeedTimeout(FeedUnavailable):
    """The feed did not answer within the timeout, on every try (a gateway answers 504, not 502).

    The metric kind stays ``feed_unavailable``: for the relay, a timeout is one more way of being down."""


class FeedRejected(FeedError):
    """A 4xx that retrying cannot fix (bad cursor or parameters): a person must look."""

    kind = "feed_rejected"


class FeedAuthError(FeedError):
    """The credentials were refused even after getting a fresh token."""

    kind = "feed_auth"


class FeedStopped(FeedError):
    """The feed must not be polled until someone acts (Diadoc 402: not paid; 403: no access)."""

    kind = "feed_stopped"


class MalformedPage(FeedError):
    """The feed answered 2xx with a body the relay cannot read."""

    kind = "malformed_page"


class PublishError(RelayError):
    """SNS did not accept every message of a page; the cursor stays, the page is read again."""

    kind = "publish"


class CursorConflict(RelayError):
    """Another writer moved the cursor since this run read it; this run's write changed nothing."""

    kind = "cursor_conflict"


class ConfigurationError(RelayError):
    """The deployment is missing a setting or a secret field."""

    kind = "configuration"


class NotConfigured(ConfigurationError):
    """The feed's credentials secret is still the empty one the stack created: nothing to run yet,
    and nothing failing either."""

    kind = "not_configured"
