"""The webhook sink: events POSTed to one HTTPS endpoint, signed as Standard Webhooks sign them, in
order, one request after another.

A request carries up to WEBHOOK_BATCH_SIZE events (100 by default: an Extern page in one request)
and at most 1 MiB, as a JSON array of CloudEvents (``application/cloudevents-batch+json``; an event
over the limit as the payload-offloading pointer). Its headers: ``webhook-id`` (a hash of the events
it carries: the same on a retry and on the same page republished), ``webhook-timestamp`` (seconds),
``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, one per secret while a new
one is rolled out), and ``traceparent``, the run's trace context, which HTTP tracing picks up.
Any 2xx acknowledges every event of the request. A timeout, a connection error, 408, 425, 429
(waiting its Retry-After, up to 20 s) or a 5xx is retried with backoff; another answer, or failures
outlasting the attempts, fail the page: the cursor stays until the receiver takes it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

import boto3
import urllib3
from aws_lambda_powertools.utilities import parameters

from kontur_relay.aws.config import AWS_CONFIG
from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.kontur.auth import secure_url
from kontur_relay.observability import run_trace
from kontur_relay.settings import Env
from kontur_relay.sinks.delivery import Delivery, Limits, Refused
from kontur_relay.sinks.message import Message, messages, utf8_length
from kontur_relay.sinks.offload import PayloadOffloader, offloader

MAX_BATCH_EVENTS = 100
#: A request's body; an event above it less the array's brackets is offloaded.
MAX_BODY_BYTES = 1_048_576
RETRYABLE_STATUSES = frozenset({408, 425, 429})
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"


def measure(message: Message) -> int:
    """A message's share of the body: itself and the comma (or bracket) beside it."""
    return utf8_length(message.body) + 1


def signing_key(secret: str) -> bytes:
    """The key of a Standard Webhooks secret: ``whsec_<base64>``, or the base64 alone."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def signature(keys: Sequence[bytes], message_id: str, timestamp: str, body: bytes) -> str:
    """The ``webhook-signature`` header: a ``v1`` signature per key, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    signed_by = (hmac.new(key, signed, hashlib.sha256).digest() for key in keys)
    return " ".join("v1," + base64.b64encode(digest).decode() for digest in signed_by)


def message_id(batch: Sequence[Message]) -> str:
    """The same for the same events, so that a retry and a republished page say what they repeat."""
    events = hashlib.sha256("\n".join(message.deduplication_id for message in batch).encode())
    return f"msg_{events.hexdigest()[:32]}"


class WebhookPublisher:
    def __init__(
        self,
        url: str,
        keys: Callable[[], list[bytes]],
        *,
        http: urllib3.PoolManager | None = None,
        batch_size: int = MAX_BATCH_EVENTS,
        timeout: urllib3.Timeout | None = None,
        offloader: PayloadOffloader | None = None,
        attempts: int = 5,
        base_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = secure_url(url, "WEBHOOK_URL")
        self.keys = keys
        # No retries of urllib3's own (Delivery retries), no redirects: a signed body goes where it was sent.
        self.http = http or urllib3.PoolManager(maxsize=10, retries=False)
        self.timeout = timeout or urllib3.Timeout(connect=5, read=10)
        self.offloader = offloader
        self.clock = clock
        self.delivery = Delivery(
            "the webhook",
            self._send,
            Limits(batch_size, MAX_BODY_BYTES - 1),
            ordered=True,
            partial=False,
            measure=measure,
            attempts=attempts,
            base_delay=base_delay,
            sleep=sleep,
        )

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None:
        trace = run_trace()
        batch = messages(feed, events, trace.traceparent if trace else None)
        if self.offloader is not None:
            batch = self.offloader.fit(batch, MAX_BODY_BYTES - 2, "the webhook", measure)
        self.delivery.deliver(batch)

    def _send(self, batch: list[Message]) -> list[Refused]:
        body = ("[" + ",".join(message.body for message in batch) + "]").encode()
        identifier, timestamp = message_id(batch), str(int(self.clock()))
        headers = {
            "content-type": CONTENT_TYPE,
            "user-agent": "kontur-feed-relay",
            "webhook-id": identifier,
            "webhook-timestamp": timestamp,
            "webhook-signature": signature(self.keys(), identifier, timestamp, body),
        }
        trace = run_trace()
        if trace is not None:
            headers["traceparent"] = trace.traceparent
        try:
            answer = self.http.request(
                "POST", self.url, body=body, headers=headers, timeout=self.timeout, retries=False, redirect=False
            )
        except urllib3.exceptions.HTTPError as error:
            return [Refused(message, type(error).__name__, str(error)) for message in batch]
        status = answer.status
        if 200 <= status < 300:
            return []
        retryable = status in RETRYABLE_STATUSES or status >= 500
        reason = answer.data[:200].decode(errors="replace").strip() or answer.reason or ""
        wait = _seconds(answer.headers.get("Retry-After"))
        return [Refused(message, f"HTTP {status}", reason, retryable, wait) for message in batch]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff decides


class SigningKeys:
    """The keys of the secret WEBHOOK_SECRET, read through a five-minute cache: a rotated secret signs
    within five minutes. Several space-separated secrets each sign every request, while receivers
    move from one to the next. The secret's value never appears in an error or a log."""

    def __init__(self, secret_id: str) -> None:
        self.secret_id = secret_id
        self._cached = parameters.SecretsProvider(boto3_client=boto3.client("secretsmanager", config=AWS_CONFIG))

    def __call__(self) -> list[bytes]:
        secrets = str(self._cached.get(self.secret_id, max_age=300) or "").split()
        if not secrets:
            raise ConfigurationError(f"the webhook's signing secret {self.secret_id} is empty")
        try:
            return [signing_key(secret) for secret in secrets]
        except ValueError:
            raise ConfigurationError(
                f"the webhook's signing secret {self.secret_id} is not whsec_<base64> (or base64 alone)"
            ) from None


def from_env(env: Env) -> WebhookPublisher:
    """The endpoint WEBHOOK_URL, signed with the secret WEBHOOK_SECRET, WEBHOOK_BATCH_SIZE events a
    request, offloading to PAYLOAD_BUCKET."""
    url = secure_url(env.text("WEBHOOK_URL"), "WEBHOOK_URL")  # before anything is read for it
    return WebhookPublisher(
        url,
        SigningKeys(env.text("WEBHOOK_SECRET")),
        batch_size=env.whole("WEBHOOK_BATCH_SIZE", MAX_BATCH_EVENTS, high=MAX_BATCH_EVENTS),
        offloader=offloader(env),
    )
