"""What the webhook sink adds to the contract: Standard Webhooks signatures a receiver verifies with
that standard's own library, a webhook-id that says what a request repeats, rotation of the secret,
timeouts retried, and a secret that never shows in an error."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from kontur_relay.domain.engine import Outcome, Relay
from kontur_relay.domain.errors import ConfigurationError, PublishError
from kontur_relay.domain.lease import LEASE_SECONDS
from kontur_relay.observability import metrics
from kontur_relay.settings import Env
from kontur_relay.sinks import webhook
from local_stack.receiver import WebhookReceiver
from tests.fakes import FakeClock, FakeCursorStore, FakeSource
from tests.sinks.harness import WebhookHarness
from tests.sinks.test_contract import EXTERN, events, run


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def test_the_signature_is_the_one_standard_webhooks_computes() -> None:
    secret, body = new_secret(), '[{"id":"ev1","data":"отчёт"}]'
    timestamp = 1_796_000_000

    ours = webhook.signature([webhook.signing_key(secret)], "msg_1", str(timestamp), body.encode())

    assert ours == Webhook(secret).sign("msg_1", datetime.fromtimestamp(timestamp, UTC), body)


def test_a_secret_without_its_prefix_signs_the_same() -> None:
    secret = new_secret()
    assert webhook.signing_key(secret) == webhook.signing_key(secret.removeprefix("whsec_"))


@pytest.fixture
def sink(aws) -> Iterator[WebhookHarness]:
    built = WebhookHarness("webhook", aws)
    yield built
    built.close()
    metrics.clear_metrics()


def test_a_retry_and_a_republished_page_carry_the_same_webhook_id(sink: WebhookHarness) -> None:
    sink.slow_requests(1, seconds=1.5)  # past the relay's 1 s timeout: taken, its answer lost
    publisher = sink.publisher()
    page = events(5)

    publisher.publish(EXTERN, page)
    publisher.publish(EXTERN, page)  # a crash before the cursor write: the page again

    deadline = time.monotonic() + 5
    while len(sink.receiver.deliveries) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the slow request is taken once its delay is over
    deliveries = sink.receiver.deliveries
    assert len(deliveries) == 3, "the slow request was taken, then its retry, then the page again"
    assert len({delivery.webhook_id for delivery in deliveries}) == 1
    assert sorted(set(sink.ids())) == [e.id for e in page]


def test_while_a_secret_is_rolled_out_each_request_is_signed_with_both(sink: WebhookHarness, aws) -> None:
    new = new_secret()
    aws["secretsmanager"].put_secret_value(SecretId=sink.secret_arn, SecretString=f"{sink.secret} {new}")
    sink.receiver.set_secret(new)  # a receiver that moved over already

    sink.publisher().publish(EXTERN, events(3))

    assert len(sink.ids()) == 3
    assert sink.receiver.refused == []


def test_a_receiver_that_refuses_the_signature_holds_the_page_without_retries(sink: WebhookHarness) -> None:
    sink.receiver.set_secret(new_secret())  # not the relay's

    with pytest.raises(PublishError, match="the webhook rejected event ev000000: HTTP 401"):
        sink.publisher().publish(EXTERN, events(3))

    assert sink.receiver.refused, "the receiver verified and refused"
    assert sink.sleeps == []


def test_a_secret_that_is_not_base64_is_refused_without_showing_it(aws) -> None:
    value = "whsec_not base64 at all!"
    arn = aws["secretsmanager"].create_secret(Name="bad-webhook-secret", SecretString=value)["ARN"]
    keys = webhook.SigningKeys(arn)

    with pytest.raises(ConfigurationError) as raised:
        keys()

    assert "not whsec_<base64>" in str(raised.value)
    assert "base64 at all" not in str(raised.value)


def test_a_webhook_url_in_clear_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="WEBHOOK_URL must be an https:// URL"):
        webhook.from_env(Env({"WEBHOOK_URL": "http://erp.example/kontur", "WEBHOOK_SECRET": "arn"}))


def test_a_page_goes_in_one_request_whatever_its_groups(sink: WebhookHarness) -> None:
    # A request is taken or refused as a whole, so its events keep their order without splitting
    # the page by docflow as a FIFO call is split.
    page = events(20, groups=3)

    sink.publisher().publish(EXTERN, page)

    assert [[event["id"] for event in d.events] for d in sink.receiver.deliveries] == [[e.id for e in page]]


def test_a_receiver_that_is_down_holds_the_cursor_and_gets_every_event_once_it_is_back(sink: WebhookHarness) -> None:
    clock, source = FakeClock(), FakeSource(20, page_size=10)
    store = FakeCursorStore(clock=clock)
    down = WebhookReceiver(sink.secret).start()
    endpoint = down.endpoint
    down.stop()  # nothing listens there any more: every connection is refused
    publisher = sink.publisher()
    publisher.url = endpoint  # type: ignore[attr-defined]

    with pytest.raises(PublishError, match="did not accept 10 of 10 messages after 5 attempts"):
        run(Relay(EXTERN, source, publisher, store, safety_margin=30, clock=clock), clock)
    assert store.load(EXTERN.id).position is None, "the cursor waits for the receiver"
    assert len(sink.sleeps) == 4, "retried with pauses between the attempts"

    publisher.url = sink.receiver.endpoint  # type: ignore[attr-defined]
    clock.advance(LEASE_SECONDS + 1)
    assert run(Relay(EXTERN, source, publisher, store, safety_margin=30, clock=clock), clock) is Outcome.CAUGHT_UP
    assert sink.ids() == source.ids
