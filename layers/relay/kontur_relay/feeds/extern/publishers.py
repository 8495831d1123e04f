"""Extern's publishers: the accounts that share their docflow events with the integrator.

``share-events`` acts for an account administrator with their own Kontur credential, used for that
one call and never logged or kept. Listing and removing publishers use the integrator's credentials
from the Extern secret, as the poller does.

Every answer of Kontur's other than success becomes a PublishersError whose class says what it
means to whoever asked and whose message says what to do; Kontur's error id and trace id travel along.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import FeedAuthError, FeedTimeout, FeedUnavailable
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.source import read_extern_error
from kontur_relay.kontur import session as http
from kontur_relay.kontur.auth import StaticCredential
from kontur_relay.kontur.client import Authenticator, KonturApi
from kontur_relay.kontur.secret_fields import field

#: Answers Kontur gives when it did what was asked (share-events' own code is not documented).
SUCCESS = frozenset({200, 201, 204})
#: Every status comes back to us: this module decides what each one means.
ANY_STATUS = range(100, 600)
#: One retry: API Gateway gives up on a Lambda after 29 s, so a caller cannot wait as a poller can.
RETRIES = 1
#: A Retry-After longer than this is not waited for: the caller is told to retry later instead.
MAX_RETRY_AFTER = 2.0
TRACE_ID = "X-Kontur-Trace-Id"


class PublishersError(Exception):
    """Kontur did not do what was asked."""

    def __init__(self, message: str, *, error: str | None = None, trace_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Kontur's error id (``urn:error:...``), when Kontur refused.
        self.error = error
        self.trace_id = trace_id


class Rejected(PublishersError):
    """Kontur found the request itself wrong: the caller should change it."""


class AdministratorRefused(PublishersError):
    """Kontur refused the account administrator's credential."""


class NotFound(PublishersError):
    """Kontur knows no such account or publisher."""


class Conflict(PublishersError):
    """Kontur refused the change as it stands."""


class Throttled(PublishersError):
    """Kontur is throttling the integrator: the same request may succeed later."""


class KonturFailed(PublishersError):
    """Nothing the caller can mend: Kontur failed or could not be reached, refused the relay's own
    credentials, or answered something unreadable."""


class KonturSilent(PublishersError):
    """Kontur did not answer in time, retry included."""


#: Kontur's refusals that mean the same whoever asked.
_REFUSALS: dict[int, tuple[type[PublishersError], str]] = {
    400: (Rejected, "Kontur rejected the request."),
    422: (Rejected, "Kontur rejected the request."),
    404: (NotFound, "Kontur knows no such resource."),
    409: (Conflict, "Kontur refused the change."),
    429: (Throttled, "Kontur is throttling the integrator's requests; retry later."),
}


@dataclass(frozen=True)
class KonturAnswer:
    """Kontur's successful answer: its JSON (None when it sent no body) and its trace id."""

    text: str
    body: Any
    trace_id: str | None


class ExternPublishers:
    """The publisher endpoints as one caller uses them: one connection pool, two kinds of credential."""

    def __init__(self, url: str, secret: CredentialsSecret, *, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.http = http.session(retries=RETRIES, backoff=0.2, max_retry_after=MAX_RETRY_AFTER)
        # One pool serves the integrator and every administrator: a cookie Kontur set for one caller
        # would ride along on the next caller's requests, so none is ever kept.
        self.http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._integrator: KonturApi | None = None

    def client_id(self) -> str | None:
        """The integrator's client_id in the Extern secret: who events are shared with by default."""
        value = self.secret.values().get("client_id")
        return str(value) if value else None

    def share_events(
        self, account_id: str, credential: str, subscriber: str, events_filter: dict[str, Any] | None
    ) -> KonturAnswer:
        """Share the account's events with ``subscriber``; ``credential`` is its administrator's
        ``Authorization`` for Kontur. ``events_filter`` is in Kontur's shape; None shares every event."""
        sent: dict[str, Any] = {"subscriber": subscriber}
        if events_filter is not None:
            sent["events-filter"] = events_filter
        path = f"/v1/{account_id}/share-events"
        response = self._call(self._administrator(credential), "POST", path, administrator=True, json=sent)
        return _answer(response)

    def publishers(self) -> KonturAnswer:
        """Kontur's list of the integrator's publishers, as it sent it (its schema is not public)."""
        return _answer(self._call(self._integrator_api(), "GET", "/v1/event-publishers"))

    def remove(self, publisher_id: str) -> str | None:
        """Remove a publisher; Kontur's trace id."""
        segment = urllib.parse.quote(publisher_id, safe="")
        if segment in (".", ".."):
            # A dot segment would be resolved away by the HTTP client, deleting something else.
            segment = segment.replace(".", "%2E")
        response = self._call(self._integrator_api(), "DELETE", f"/v1/event-publishers/{segment}")
        return response.headers.get(TRACE_ID)

    def _integrator_api(self) -> KonturApi:
        # Kept: the integrator's tokens outlive an invocation, as the poller's do.
        if self._integrator is None:
            self._integrator = self._api(extern_authenticator(self.secret, self.http, timeout=self.timeout))
        return self._integrator

    def _administrator(self, credential: str) -> KonturApi:
        # A 401 is final: the administrator's credential cannot be renewed here.
        headers = {"Authorization": credential}
        api_key = field(self.secret.values(), "api_key", header=True)
        if api_key:
            headers["X-Kontur-Apikey"] = api_key
        return self._api(StaticCredential(headers))

    def _api(self, auth: Authenticator) -> KonturApi:
        return KonturApi(self.url, self.http, auth, read_extern_error, timeout=self.timeout, name="Extern")

    def _call(
        self, api: KonturApi, method: str, path: str, *, administrator: bool = False, **kwargs: Any
    ) -> requests.Response:
        try:
            # A redirect is not followed: it would carry the caller's credential to wherever it points.
            response = api.request(method, path, ok=ANY_STATUS, allow_redirects=False, **kwargs)
        except FeedTimeout as error:
            raise KonturSilent(
                f"Kontur did not answer {method} {path} within {self.timeout:g} s, {RETRIES + 1} tries"
            ) from error
        except FeedUnavailable as error:
            raise KonturFailed(f"Kontur could not be reached: {error}") from error
        except FeedAuthError as error:
            raise KonturFailed(
                f"Kontur's identity provider refused the relay's own credentials (the Extern secret): {error}"
            ) from error
        if response.status_code in SUCCESS:
            return response
        raise _refusal(response, administrator=administrator)


def _refusal(response: requests.Response, *, administrator: bool) -> PublishersError:
    details = read_extern_error(response)
    status = response.status_code
    said = f"Kontur answered {status}: {details.message}"
    cls: type[PublishersError]
    if status in (401, 403) and administrator:
        cls, meaning = AdministratorRefused, "Kontur refused the administrator's credential (X-Kontur-Authorization)."
    elif status in (401, 403):
        cls, meaning = KonturFailed, "Kontur refused the relay's own credentials (the Extern secret)."
        said += ". Check the secret, and that Kontur switched the events API on for the integrator"
    else:
        cls, meaning = _REFUSALS.get(status, (KonturFailed, "Kontur failed."))
    return cls(f"{meaning} {said}", error=details.code, trace_id=details.trace_id)


def _answer(response: requests.Response) -> KonturAnswer:
    trace_id = response.headers.get(TRACE_ID)
    body = None
    if response.content:
        try:
            body = response.json()
        except ValueError:
            raise KonturFailed(
                f"Kontur answered {response.status_code} with a body that is not JSON", trace_id=trace_id
            ) from None
    return KonturAnswer(text=response.text, body=body, trace_id=trace_id)
