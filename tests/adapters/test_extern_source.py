"""ExternSource, KonturApi and the authenticators against the Extern and identity simulators over HTTP."""

from __future__ import annotations

import io
import json
import logging
import secrets
import time
import traceback
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import urllib3.util.retry

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import (
    ConfigurationError,
    FeedAuthError,
    FeedError,
    FeedRejected,
    FeedUnavailable,
    MalformedPage,
)
from kontur_relay.domain.model import Page
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.source import AFTER, ExternSource, read_extern_error
from kontur_relay.kontur import session as http
from kontur_relay.kontur.auth import StaticCredential
from kontur_relay.kontur.client import KonturApi
from kontur_relay.kontur.oidc import OpenIdConnectTokens
from kontur_relay.observability import logger
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator

EVENTS = "/v1/events"


@dataclass
class Kontur:
    """The two simulators and an integrator registered in them, with credentials fresh per test."""

    identity: IdentitySimulator
    extern: ExternSimulator
    client_id: str
    api_key: str
    username: str
    password: str

    def token(self) -> str:
        return self.identity.issue(self.username, self.client_id)

    def visible(self) -> list[str]:
        return self.extern.events_visible_to(self.client_id)


@pytest.fixture
def kontur() -> Iterator[Kontur]:
    with IdentitySimulator(token_lifetime=600) as identity, ExternSimulator(identity, seed=11) as extern:
        kontur = Kontur(
            identity,
            extern,
            client_id=f"relay-{uuid.uuid4().hex[:6]}",
            api_key=secrets.token_hex(16),
            username=f"svc-{uuid.uuid4().hex[:6]}@integrator.example",
            password=secrets.token_urlsafe(16),
        )
        extern.add_integrator(kontur.client_id, kontur.api_key, username=kontur.username, password=kontur.password)
        extern.setup(kontur.client_id, accounts=3, backlog=140)
        yield kontur


def source(kontur: Kontur, auth: Any = None, *, take: int = 50, retries: int = 2, timeout: float = 5.0) -> ExternSource:
    session = http.session(retries=retries, backoff=0.01)
    auth = auth or StaticCredential({"Authorization": f"Bearer {kontur.token()}"})
    api = KonturApi(kontur.extern.url, session, auth, read_extern_error, timeout=timeout, name="Extern")
    return ExternSource(api, take=take)


def drain(feed: ExternSource, cursor: str | None = None) -> tuple[list[str], str | None, list[Page]]:
    """Read pages as the engine does, until an empty or short page."""
    ids: list[str] = []
    pages: list[Page] = []
    while True:
        page = feed.read_page(cursor)
        pages.append(page)
        ids += [event.id for event in page.events]
        if page.next_cursor is not None:
            cursor = page.next_cursor
        if not page.events or not page.more:
            return ids, cursor, pages


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """urllib3's retry pauses, recorded instead of slept: what the client chose to wait, without waiting."""
    recorded: list[float] = []
    fake_time = types.SimpleNamespace(sleep=recorded.append, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(urllib3.util.retry, "time", fake_time)
    return recorded


def secret(aws: dict[str, Any], values: dict[str, str]) -> CredentialsSecret:
    name = f"extern-credentials-{uuid.uuid4().hex}"
    aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(values))
    return CredentialsSecret(name, aws["secretsmanager"])


def stored(aws: dict[str, Any], credentials: CredentialsSecret) -> dict[str, Any]:
    return json.loads(
        aws["secretsmanager"].get_secret_value(SecretId=credentials.secret_id, VersionStage="AWSCURRENT")[
            "SecretString"
        ]
    )


def oidc(kontur: Kontur, **values: str) -> dict[str, str]:
    return {
        "token_url": kontur.identity.token_url,
        "client_id": kontur.client_id,
        "client_secret": kontur.api_key,
        "scope": "extern.api",
        **values,
    }


# -- paging -----------------------------------------------------------------------------------------


def test_reads_every_visible_event_in_feed_order_and_keeps_next_event_id_as_received(kontur):
    feed = source(kontur, take=50)
    ids, cursor, pages = drain(feed)

    assert ids == kontur.visible()
    assert len(ids) == 140
    # Only the empty page ends the reading: a short page may be a server's cap on take.
    assert [len(p.events) for p in pages] == [50, 50, 40, 0]
    assert [p.more for p in pages] == [True, True, True, False]
    # The cursor the next request sends is the previous answer's next-event-id, byte for byte.
    sent = [call.query["fromId"] for call in kontur.extern.calls(EVENTS)]
    assert sent == ["0_0", pages[0].next_cursor, pages[1].next_cursor, pages[2].next_cursor]
    answered = kontur.extern.calls(EVENTS)[1]
    assert answered.query["take"] == "50"

    # Caught up: the next read from the stored cursor is empty until new events arrive, then has exactly them.
    assert feed.read_page(cursor).events == []
    new = kontur.extern.generate(30)
    more, _, _ = drain(feed, cursor)
    assert more == [i for i in kontur.visible() if i in new]
    assert more


def test_a_server_that_caps_take_still_drains_in_one_run(kontur):
    # Kontur documents no maximum for take: a server answering fewer events than asked must not
    # look drained, or the backlog would wait a whole tick per page.
    kontur.extern.max_take = 20
    feed = source(kontur, take=100)
    ids, _, pages = drain(feed)
    assert ids == kontur.visible()
    assert [len(p.events) for p in pages] == [20] * 7 + [0]


def test_the_cursor_is_the_servers_string_not_something_computed(kontur):
    feed = source(kontur, take=7)
    page = feed.read_page(None)
    raw = requests.get(
        f"{kontur.extern.url}{EVENTS}",
        params={"fromId": "0_0", "take": "7"},
        headers={"Authorization": f"Bearer {kontur.token()}"},
        timeout=5,
    ).json()
    assert page.next_cursor == raw["next-event-id"]
    assert [e.data for e in page.events] == raw["api-events"]


@pytest.mark.parametrize("empty_next", ["missing", "null"])
def test_an_empty_page_without_next_event_id_keeps_the_cursor(kontur, empty_next):
    kontur.extern.empty_page_next_id = empty_next
    feed = source(kontur, take=100)
    _, cursor, _ = drain(feed)
    assert cursor is not None
    page = feed.read_page(cursor)
    assert (page.events, page.next_cursor, page.more) == ([], None, False)


def test_an_old_server_sending_last_event_id_never_yields_an_event_twice(kontur):
    kontur.extern.legacy_last_event_id = True
    feed = source(kontur, take=30)
    ids, cursor, pages = drain(feed)

    assert ids == kontur.visible()
    assert len(set(ids)) == len(ids)
    assert cursor is not None
    assert cursor.startswith(AFTER)
    # The server sent the repeated event again; the source dropped it.
    assert pages[1].events[0].id != pages[0].events[-1].id
    assert kontur.extern.calls(EVENTS)[1].query["fromId"] == pages[0].events[-1].id

    assert feed.read_page(cursor).events == []
    new = kontur.extern.generate(12)
    more, _, _ = drain(feed, cursor)
    assert more == [i for i in kontur.visible() if i in new]


def test_unknown_keys_are_kept_and_missing_optional_keys_tolerated(kontur):
    ids, _, pages = drain(source(kontur, take=100))
    events = [event for page in pages for event in page.events]
    assert len(events) == len(ids)

    extra = [e for e in events if "organization-id" in e.data]
    assert extra, "the seeded backlog has events with a key the relay does not know"
    assert all(e.data == kontur.extern.event(e.id) for e in extra)

    no_kpp = [e for e in events if "kpp" not in e.data]
    assert no_kpp, "the seeded backlog has events without kpp"
    assert all(e.attributes["kpp"] is None for e in no_kpp)
    no_link = [e for e in events if "docflow-link" not in e.data]
    assert no_link
    assert all(e.data == kontur.extern.event(e.id) for e in no_link)

    for event in events:
        assert event.subject == event.data["docflow-id"]
        assert event.attributes["docflow_type"] == event.data["docflow-type"]
        assert event.time == event.data["event-date-time"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"api-events": [{"id": "0_1"',  # cut short
        b"<html><body>Service temporarily unavailable</body></html>",
        b'["0_1"]',
        b'{"api-events": {"id": "0_1"}, "next-event-id": "1_1"}',
        b'{"api-events": [{"docflow-id": "x"}], "next-event-id": "1_1"}',
        b'{"api-events": [{"id": 12}], "next-event-id": "1_1"}',
    ],
    ids=["truncated", "html", "array", "events-not-array", "event-without-id", "id-not-string"],
)
def test_malformed_pages_raise_malformed_page(kontur, body):
    kontur.extern.faults.add(Fault.malformed(body), prefix=EVENTS)
    with pytest.raises(MalformedPage) as raised:
        source(kontur).read_page(None)
    assert raised.value.trace_id
    assert raised.value.trace_id in str(raised.value)


def _drop(key: str) -> Any:
    def edit(body: dict[str, Any]) -> None:
        body.pop(key, None)

    return edit


def _null(key: str) -> Any:
    def edit(body: dict[str, Any]) -> None:
        body[key] = None

    return edit


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (_drop("api-events"), "Extern answered 200 without api-events"),
        (_null("api-events"), "Extern answered 200 with api-events null"),
        (lambda body: body.update({"api-events": "0_1"}), "Extern's api-events is not an array but str"),
        (_drop("next-event-id"), "Extern answered 50 events without next-event-id (or last-event-id)"),
        (_null("next-event-id"), "Extern answered 50 events without next-event-id (or last-event-id)"),
    ],
    ids=["events-missing", "events-null", "events-a-string", "next-id-missing", "next-id-null"],
)
def test_a_json_page_not_of_externs_shape_is_malformed_and_names_what_is_wrong(kontur, edit, said):
    kontur.extern.faults.add(Fault.altered("not-a-page", edit), prefix=EVENTS)
    with pytest.raises(MalformedPage) as raised:
        source(kontur).read_page(None)
    assert said in str(raised.value)
    assert raised.value.trace_id
    assert raised.value.trace_id in str(raised.value)
    # The same read, answered properly, is the first page: nothing was taken from the feed.
    assert [e.id for e in source(kontur).read_page(None).events] == kontur.visible()[:50]


def test_an_old_server_without_last_event_id_on_a_full_page_is_malformed(kontur):
    kontur.extern.legacy_last_event_id = True
    kontur.extern.faults.add(Fault.altered("no-last-id", _drop("last-event-id")), prefix=EVENTS)
    with pytest.raises(MalformedPage, match="without next-event-id"):
        source(kontur).read_page(None)


def test_an_empty_page_is_still_an_empty_page(kontur):
    end = kontur.extern.end_id
    page = source(kontur).read_page(end)
    assert (page.events, page.more) == ([], False)


def test_a_connection_reset_mid_body_is_retried(kontur):
    kontur.extern.faults.add(Fault.reset_mid_body(), prefix=EVENTS, times=2)
    page = source(kontur).read_page(None)
    assert [e.id for e in page.events] == kontur.visible()[:50]
    assert [c.fault for c in kontur.extern.calls(EVENTS)] == ["reset_mid_body", "reset_mid_body", None]


def test_a_connection_reset_mid_body_on_every_try_is_feed_unavailable(kontur):
    kontur.extern.faults.add(Fault.reset_mid_body(), prefix=EVENTS, times=3)
    with pytest.raises(FeedUnavailable) as raised:
        source(kontur).read_page(None)
    assert type(raised.value) is FeedUnavailable
    assert raised.value.kind == "feed_unavailable"
    assert "Extern broke off its answer to GET /v1/events on every try: ChunkedEncodingError" in str(raised.value)
    assert len(kontur.extern.calls(EVENTS)) == 3


# -- retries and failures ---------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured(kontur, sleeps):
    kontur.extern.faults.add(Fault.throttle(retry_after=3), prefix=EVENTS)
    page = source(kontur, retries=3).read_page(None)

    assert [e.id for e in page.events] == kontur.visible()[:50]
    assert sleeps == [3]
    assert [c.status for c in kontur.extern.calls(EVENTS)] == [429, 200]


@pytest.mark.parametrize("status", [429, 503])
def test_a_retry_after_beyond_what_a_run_can_wait_ends_the_attempt_with_a_not_before(kontur, sleeps, status):
    kontur.extern.faults.add(Fault.throttle(retry_after=3), prefix=EVENTS)
    asked = Fault("asked-to-wait", status=status, headers=(("Retry-After", "3600"),))
    kontur.extern.faults.add(asked, prefix=EVENTS)

    with pytest.raises(FeedUnavailable, match="Kontur asks to wait 3600 s") as raised:
        source(kontur, retries=3).read_page(None)

    assert sleeps == [3], "waited for the short one, not shortened the long one and retried"
    assert [c.status for c in kontur.extern.calls(EVENTS)] == [429, status]
    assert raised.value.kind == "feed_unavailable"
    assert raised.value.retry_after == 3600


@pytest.mark.parametrize(
    "fault",
    [Fault.throttle(), Fault.server_error(500), Fault.server_error(503), Fault.html_error(502)],
    ids=["429-no-retry-after", "500", "503", "502-html"],
)
def test_throttling_and_server_errors_are_retried_with_backoff(kontur, sleeps, fault):
    kontur.extern.faults.add(fault, prefix=EVENTS, times=2)
    page = source(kontur, retries=2).read_page(None)

    assert [e.id for e in page.events] == kontur.visible()[:50]
    assert [c.status for c in kontur.extern.calls(EVENTS)] == [fault.status, fault.status, 200]
    assert len(sleeps) == 2
    assert all(pause > 0 for pause in sleeps), "jittered backoff, never a tight loop"


@pytest.mark.parametrize(
    "fault",
    [Fault.throttle(retry_after=1), Fault.throttle(), Fault.server_error(503), Fault.html_error(502)],
    ids=["429-retry-after", "429", "503", "502-html"],
)
def test_retries_exhausted_raise_feed_unavailable(kontur, sleeps, fault):
    kontur.extern.faults.add(fault, prefix=EVENTS, times=5)
    with pytest.raises(FeedUnavailable) as raised:
        source(kontur, retries=2).read_page(None)

    error = raised.value
    assert error.status == fault.status
    assert f"answered {fault.status}" in str(error)
    assert error.trace_id
    assert error.trace_id in str(error)
    assert len(kontur.extern.calls(EVENTS)) == 3
    assert kontur.extern.faults.pending() == 2


def test_a_slow_answer_times_out_and_is_retried(kontur, sleeps):
    kontur.extern.faults.add(Fault.slow(30), prefix=EVENTS)
    page = source(kontur, timeout=0.5).read_page(None)
    assert [e.id for e in page.events] == kontur.visible()[:50]
    # The slow request is still asleep on the server (and out of its journal); the retry answered.
    assert kontur.extern.faults.served == ["slow"]
    assert [c.status for c in kontur.extern.calls(EVENTS)] == [200]


def test_a_feed_that_stays_slow_raises_feed_unavailable(kontur, sleeps):
    kontur.extern.faults.add(Fault.slow(30), prefix=EVENTS, times=3)
    with pytest.raises(FeedUnavailable) as raised:
        source(kontur, timeout=0.3, retries=2).read_page(None)
    assert "did not answer GET /v1/events" in str(raised.value)
    assert kontur.extern.faults.pending() == 0


def test_400_raises_feed_rejected_with_konturs_error_id_and_trace_id(kontur):
    feed = source(kontur)
    with pytest.raises(FeedRejected) as raised:
        feed.read_page("ffffff_10")
    error = raised.value
    assert error.status == 400
    assert error.error_code == "urn:error:events:invalid-event-id"
    assert error.trace_id
    assert "urn:error:events:invalid-event-id" in str(error)
    assert error.trace_id in str(error)
    assert "ffffff_10 is not an event id" in str(error)
    assert kontur.extern.calls(EVENTS)[-1].status == 400


def test_a_feed_not_switched_on_for_the_integrator_is_rejected(kontur):
    kontur.extern.add_account()
    kontur.identity.register_client("other-integrator", "other-key")
    token = kontur.identity.issue(kontur.username, "other-integrator")
    feed = source(kontur, StaticCredential({"Authorization": f"Bearer {token}"}))
    with pytest.raises(FeedRejected) as raised:
        feed.read_page(None)
    assert raised.value.status == 403
    assert raised.value.error_code == "urn:error:events:feed-not-enabled"


# -- authentication ---------------------------------------------------------------------------------


def test_password_grant_token_is_reused_across_reads(kontur, aws):
    credentials = secret(aws, oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password))
    session = http.session(retries=1, backoff=0.01)
    feed = source(kontur, extern_authenticator(credentials, session))
    ids, _, pages = drain(feed)

    assert ids == kontur.visible()
    assert len(pages) == 4  # 50, 50, 40 and the empty page that ends the reading
    assert kontur.identity.issued == {"password": 1, "refresh_token": 0}
    tokens = {call.headers["authorization"] for call in kontur.extern.calls(EVENTS)}
    assert len(tokens) == 1


def test_token_is_renewed_ahead_of_expiry(kontur, aws):
    now = [1_000_000.0]
    credentials = secret(aws, oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password))
    tokens = OpenIdConnectTokens(credentials, http.session(), clock=lambda: now[0])
    feed = source(kontur, tokens)

    feed.read_page(None)
    now[0] += 600 - 121  # the identity simulator's tokens live 600 s; renewal starts 120 s ahead
    feed.read_page(None)
    assert kontur.identity.issued["password"] == 1
    now[0] += 2
    feed.read_page(None)
    assert kontur.identity.issued["password"] == 2
    assert len({c.headers["authorization"] for c in kontur.extern.calls(EVENTS)}) == 2


def test_a_short_lived_token_is_not_fetched_for_every_request(kontur, aws):
    kontur.identity.token_lifetime = 60  # shorter than the 120 s renewal margin
    now = [1_000_000.0]
    credentials = secret(aws, oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password))
    feed = source(kontur, OpenIdConnectTokens(credentials, http.session(), clock=lambda: now[0]), take=20)

    drain(feed)
    assert kontur.identity.issued["password"] == 1
    now[0] += 31
    feed.read_page(None)
    assert kontur.identity.issued["password"] == 2


def test_a_401_gets_one_fresh_token_and_a_second_refuses_the_run(kontur, aws):
    credentials = secret(aws, oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password))
    feed = source(kontur, extern_authenticator(credentials, http.session()))
    feed.read_page(None)

    kontur.extern.faults.add(Fault.expired_token(), prefix=EVENTS)
    page = feed.read_page(None)
    assert [e.id for e in page.events] == kontur.visible()[:50]
    assert kontur.identity.issued["password"] == 2
    assert [c.status for c in kontur.extern.calls(EVENTS)] == [200, 401, 200]

    kontur.extern.faults.add(Fault.expired_token(), prefix=EVENTS, times=2)
    with pytest.raises(FeedAuthError) as raised:
        feed.read_page(None)
    assert raised.value.status == 401
    assert raised.value.error_code == "urn:error:unauthorized"
    assert kontur.identity.issued["password"] == 3


def test_a_rotated_refresh_token_is_written_back_to_the_secret(kontur, aws):
    first = _refresh_token(kontur)
    credentials = secret(aws, oidc(kontur, grant_type="refresh_token", refresh_token=first))
    feed = source(kontur, extern_authenticator(credentials, http.session()))

    feed.read_page(None)
    second = stored(aws, credentials)["refresh_token"]
    assert second != first
    assert not kontur.identity.refresh_token_is_valid(first)
    assert kontur.identity.refresh_token_is_valid(second)
    assert stored(aws, credentials)["client_secret"] == kontur.api_key  # the rest of the secret is kept

    # Tokens expire; the 401 is mended with the refresh token written back, which rotates again.
    kontur.identity.expire_all()
    ids, _, _ = drain(feed)
    assert ids == kontur.visible()
    third = stored(aws, credentials)["refresh_token"]
    assert third not in (first, second)
    assert kontur.identity.refresh_token_is_valid(third)
    assert kontur.identity.issued == {"password": 0, "refresh_token": 2}


def test_a_refused_refresh_token_falls_back_to_the_password_grant(kontur, aws):
    values = oidc(
        kontur,
        grant_type="refresh_token",
        refresh_token="long-gone",
        username=kontur.username,
        password=kontur.password,
    )
    feed = source(kontur, extern_authenticator(secret(aws, values), http.session()))
    assert [e.id for e in feed.read_page(None).events] == kontur.visible()[:50]
    assert kontur.identity.issued["password"] == 1


def test_refused_credentials_raise_feed_auth_error(kontur, aws):
    values = oidc(kontur, grant_type="password", username=kontur.username, password="not-the-password")
    feed = source(kontur, extern_authenticator(secret(aws, values), http.session()))
    with pytest.raises(FeedAuthError, match="refused the password grant"):
        feed.read_page(None)
    assert kontur.extern.calls(EVENTS) == []


def test_the_token_endpoints_failures_are_retried_then_unavailable(kontur, aws, sleeps):
    values = oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password)
    kontur.identity.faults.add(Fault.server_error(503), prefix="/connect/token")
    kontur.identity.faults.add(Fault.throttle(), prefix="/connect/token")
    feed = source(kontur, extern_authenticator(secret(aws, values), http.session(retries=2, backoff=0.01)))
    assert [e.id for e in feed.read_page(None).events] == kontur.visible()[:50]
    assert [c.status for c in kontur.identity.calls("/connect/token")] == [503, 429, 200]

    kontur.identity.expire_all()
    kontur.identity.faults.add(Fault.html_error(502), prefix="/connect/token", times=3)
    with pytest.raises(FeedUnavailable, match="token endpoint answered 502"):
        feed.read_page(None)


def test_a_static_access_token_is_used_as_is(kontur, aws):
    token = kontur.token()
    credentials = secret(aws, {"access_token": token, "api_key": kontur.api_key})
    feed = source(kontur, extern_authenticator(credentials, http.session()))
    assert [e.id for e in feed.read_page(None).events] == kontur.visible()[:50]
    call = kontur.extern.calls(EVENTS)[-1]
    assert call.headers["authorization"] == f"Bearer {token}"
    assert call.headers["x-kontur-apikey"] == kontur.api_key

    kontur.identity.expire_all()  # nothing can renew a static token: the run fails once, loudly
    with pytest.raises(FeedAuthError):
        feed.read_page(None)
    assert [c.status for c in kontur.extern.calls(EVENTS)] == [200, 401]


def test_legacy_auth_sid_with_api_key(kontur, aws):
    sid = kontur.extern.session(kontur.username)
    feed = source(kontur, extern_authenticator(secret(aws, {"sid": sid, "api_key": kontur.api_key}), http.session()))
    ids, _, _ = drain(feed)
    assert ids == kontur.visible()
    call = kontur.extern.calls(EVENTS)[-1]
    assert call.headers["authorization"] == f"auth.sid {sid}"

    with pytest.raises(ConfigurationError, match="needs api_key"):
        source(kontur, extern_authenticator(secret(aws, {"sid": sid}), http.session())).read_page(None)
    stale = source(
        kontur, extern_authenticator(secret(aws, {"sid": "x" + sid, "api_key": kontur.api_key}), http.session())
    )
    with pytest.raises(FeedAuthError):
        stale.read_page(None)


def test_credentials_never_reach_logs_or_error_messages(kontur, aws, caplog):
    caplog.set_level(logging.INFO)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logger.registered_formatter)  # with every extra key the relay logs
    logging.getLogger(logger.name).addHandler(handler)
    level = logger.log_level
    logger.setLevel("DEBUG")
    errors: list[str] = []
    refresh = _refresh_token(kontur)
    sid = kontur.extern.session(kontur.username)
    try:
        scenarios = [
            oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password),
            oidc(kontur, grant_type="refresh_token", refresh_token=refresh),
            oidc(kontur, grant_type="refresh_token", refresh_token=refresh + "-used"),
            oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password + "-wrong"),
            {"sid": sid, "api_key": kontur.api_key},
            {"sid": sid + "-stale", "api_key": kontur.api_key},
            {"access_token": kontur.token() + "-forged", "api_key": kontur.api_key},
        ]
        for values in scenarios:
            feed = source(kontur, extern_authenticator(secret(aws, values), http.session()))
            kontur.extern.faults.add(Fault.expired_token(), prefix=EVENTS, times=2)
            try:
                feed.read_page(None)
            except FeedError as error:
                errors.append(repr(error) + str(error))
    finally:
        logging.getLogger(logger.name).removeHandler(handler)
        logger.setLevel(level)

    assert len(errors) == len(scenarios), "every scenario failed on the queued 401s or its refused credential"
    tokens = {c.headers["authorization"].split(" ", 1)[1] for c in kontur.extern.calls(EVENTS)}
    credentials = {kontur.password, kontur.api_key, refresh, sid, *tokens}
    text = "\n".join([captured.getvalue(), caplog.text, *errors])
    assert "refused" in text  # the logs do talk about the failures, just never with a credential
    for value in credentials:
        assert value[:12] not in text


def _refresh_token(kontur: Kontur) -> str:
    return kontur.identity.refresh_token_for(kontur.username, kontur.client_id)


def test_an_unreadable_retry_after_is_ignored_and_the_backoff_decides(kontur: Kontur) -> None:
    """A fractional Retry-After ("0.05") is not HTTP's: urllib3 refuses it. The relay backs off
    instead of failing the run as an unexpected error."""
    kontur.extern.generate(5)
    kontur.extern.faults.add(Fault.throttle(retry_after=0.05), prefix="/v1/events")

    page = source(kontur).read_page(None)

    assert [event.id for event in page.events] == kontur.visible()[:50]
    assert [call.status for call in kontur.extern.calls("/v1/events")] == [429, 200]


def test_a_transport_error_is_told_by_its_type_and_cause_never_with_the_requests_headers(kontur: Kontur) -> None:
    token = kontur.token()
    nobody = KonturApi(
        "http://127.0.0.1:9",  # nothing listens on the discard port
        http.session(retries=0),
        StaticCredential({"Authorization": f"Bearer {token}"}),
        read_extern_error,
        name="Extern",
    )
    with pytest.raises(FeedUnavailable) as raised:
        ExternSource(nobody, take=5).read_page(None)
    said = "did not answer GET /v1/events after every retry: ConnectionError (MaxRetryError, NewConnectionError"
    assert said in str(raised.value)

    # A request that cannot even be made (a header no HTTP client sends) is a configuration error
    # that quotes nothing of the request, down its whole chain of causes.
    broken = KonturApi(
        kontur.extern.url, http.session(), StaticCredential({"Authorization": f"Bearer {token}\r\n"}), read_extern_error
    )
    with pytest.raises(ConfigurationError, match=r"GET /v1/events could not be sent: InvalidHeader") as refused:
        ExternSource(broken, take=5).read_page(None)
    chain = "".join(traceback.format_exception(refused.value))
    assert token not in chain
