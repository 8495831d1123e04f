"""DiadocSource, its configuration and its authenticators against the Diadoc and identity simulators
over HTTP: what the end-to-end tests cannot see from the queue (the bytes on the wire, the clock of a
token, what reaches the logs)."""

from __future__ import annotations

import io
import json
import logging
import secrets
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError, FeedError, FeedRejected, NotConfigured
from kontur_relay.feeds.diadoc.auth import TOKEN_LIFETIME_SECONDS, DiadocAuthTokens, diadoc_authenticator
from kontur_relay.feeds.diadoc.config import BoxFeed, Start, box_feed
from kontur_relay.feeds.diadoc.source import (
    DIADOC_RETRYABLE_STATUSES,
    DiadocApi,
    DiadocSource,
    cursor_at,
    read_diadoc_error,
)
from kontur_relay.feeds.diadoc.ticks import from_rfc3339, to_rfc3339, to_ticks
from kontur_relay.kontur import session as http
from kontur_relay.kontur.auth import SecretCredential
from kontur_relay.kontur.oidc import OpenIdConnectTokens
from kontur_relay.observability import logger
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.faults import Fault
from local_stack.simulators.identity import IdentitySimulator

EVENTS = "/V8/GetNewEvents"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> Iterator[DiadocSimulator]:
    with IdentitySimulator() as identity, DiadocSimulator(identity, seed=9, clock=clock) as simulator:
        simulator.setup(boxes=1, backlog=0)
        yield simulator


def credentials(sim: DiadocSimulator) -> dict[str, str]:
    user = next(iter(sim.users.values()))
    return {"api_client_id": next(iter(sim.api_clients)), "login": user.login, "password": user.password}


def secret(aws: dict[str, Any], values: dict[str, str]) -> CredentialsSecret:
    name = f"diadoc-credentials-{uuid.uuid4().hex}"
    aws["secretsmanager"].create_secret(Name=name, SecretString=json.dumps(values))
    return CredentialsSecret(name, aws["secretsmanager"])


class Values:
    """A credentials secret without Secrets Manager, for tests about the token's life."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def values(self, *, fresh: bool = False) -> dict[str, str]:
        return dict(self._values)


def source(
    sim: DiadocSimulator, auth: Any, feed: BoxFeed | None = None, *, urls: list[str] | None = None
) -> DiadocSource:
    session = http.session(retries=2, backoff=0.01, statuses=DIADOC_RETRYABLE_STATUSES)
    if urls is not None:
        session.hooks["response"].append(lambda response, *args, **kwargs: urls.append(response.request.url))
    api = DiadocApi(sim.url, session, auth, read_diadoc_error, timeout=5)
    return DiadocSource(api, feed or BoxFeed(box_id=next(iter(sim.boxes)), limit=10))


def legacy(sim: DiadocSimulator, clock: Clock) -> DiadocAuthTokens:
    return DiadocAuthTokens(
        Values(credentials(sim)),  # type: ignore[arg-type]
        http.session(retries=1, backoff=0.01),
        sim.url,
        clock=clock,
    )


def drain(feed: DiadocSource) -> list[str]:
    cursor, ids = None, []
    while True:
        page = feed.read_page(cursor)
        ids += [event.id for event in page.events]
        cursor = page.next_cursor or cursor
        if not page.events or not page.more:
            return ids


# -- the wire -----------------------------------------------------------------------------------


def test_index_keys_are_percent_encoded_on_the_wire(sim, clock):
    box = next(iter(sim.boxes))
    sim.generate(box, 35)
    urls: list[str] = []

    assert drain(source(sim, legacy(sim, clock), urls=urls)) == sim.event_ids(box)

    keys = sim.index_keys(box)
    after = [urllib.parse.urlsplit(url).query for url in urls if EVENTS in url][1:]
    # Each read starts after the key before the last page's final event (read again, then dropped).
    assert [
        f"afterIndexKey={urllib.parse.quote(keys[i], safe='')}" in query
        for i, query in zip((8, 18, 28), after, strict=True)
    ] == [True] * 3
    for query in after:
        raw = query.split("afterIndexKey=", 1)[1].split("&", 1)[0]
        assert "+" not in raw
        assert "/" not in raw
        assert "=" not in raw
        assert {"%2B", "%2F", "%3D"} <= {raw[i : i + 3] for i in range(len(raw) - 2)}


def test_an_operators_point_in_time_reads_from_that_moment_then_by_index_key(sim, clock):
    box = next(iter(sim.boxes))
    sim.generate(box, 40)
    feed = source(sim, legacy(sim, clock))
    first = feed.read_page(None)
    middle = first.events[6]
    assert middle.time is not None
    moment = datetime.fromisoformat(middle.time.replace("Z", "+00:00"))
    # The admin API's PUT cursor with a timestamp stores this, whatever the feed's own filters.
    cursor = cursor_at(moment.astimezone(UTC))
    assert cursor == f"~since:{to_ticks(moment)}"
    wanted = sim.event_ids(box, timestampFromTicks=str(to_ticks(moment)))
    assert 0 < len(wanted) < 40

    page = feed.read_page(cursor)
    assert [event.id for event in page.events] == wanted[:10]
    # From then on by IndexKey, the moment kept as the floor reconciliation never reads before.
    base = sim.index_keys(box)[sim.event_ids(box).index(wanted[8])]
    assert page.next_cursor == f"{base}~seen:{wanted[9]}~floor:{to_ticks(moment)}"
    rest: list[str] = []
    after: str | None = page.next_cursor
    while True:
        page = feed.read_page(after)
        rest += [event.id for event in page.events]
        after = page.next_cursor or after
        if not page.more:
            break
    assert rest == wanted[10:]


def test_a_key_sent_without_encoding_is_refused_as_diadoc_does(sim, clock):
    box = next(iter(sim.boxes))
    sim.generate(box, 3)
    key = sim.index_keys(box)[0]
    token = legacy(sim, clock).headers()

    answer = requests.get(f"{sim.url}{EVENTS}?boxId={box}&afterIndexKey={key}", headers=token, timeout=5)
    assert (answer.status_code, answer.text) == (400, "cursor must have valid value")
    assert answer.headers["X-Diadoc-ErrorCode"] == "Http.BadRequest"
    assert answer.headers["Content-Type"].startswith("text/plain")
    encoded = requests.get(f"{sim.url}{EVENTS}", params={"boxId": box, "afterIndexKey": key}, headers=token, timeout=5)
    assert encoded.status_code == 200


def test_diadocs_refusals_of_bad_parameters(sim, clock):
    box = next(iter(sim.boxes))
    sim.generate(box, 3)
    token = legacy(sim, clock).headers()
    for params, message in (
        (
            {"afterIndexKey": sim.index_keys(box)[0], "afterEventId": sim.event_ids(box)[0]},
            "afterEventId and afterIndexKey cannot be used together",
        ),
        ({"limit": "501"}, "limit must be between 1 and 500"),
        ({"messageType": "Letter,Memo"}, "messageType has unknown values: Memo"),
        ({"orderBy": "Random"}, "orderBy must be Ascending or Descending"),
        ({"timestampFromTicks": "yesterday"}, "timestampFromTicks is not a number of ticks"),
    ):
        answer = requests.get(f"{sim.url}{EVENTS}", params={"boxId": box, **params}, headers=token, timeout=5)
        assert (answer.status_code, answer.text) == (400, message)
    deprecated = requests.get(
        f"{sim.url}{EVENTS}", params={"boxId": box, "afterEventId": sim.event_ids(box)[0]}, headers=token, timeout=5
    )
    assert deprecated.status_code == 200


def test_the_deprecated_method_is_logged_once_with_its_sunset(sim, clock, caplog):
    box = next(iter(sim.boxes))
    sim.generate(box, 25)
    api = DiadocApi(sim.url, http.session(), legacy(sim, clock), read_diadoc_error)
    feed = DiadocSource(api, BoxFeed(box_id=box, limit=10), version="V7")
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logger.registered_formatter)
    logging.getLogger(logger.name).addHandler(handler)
    try:
        assert len(drain(feed)) == 25
    finally:
        logging.getLogger(logger.name).removeHandler(handler)
    warnings = [json.loads(line) for line in captured.getvalue().splitlines() if "deprecates" in line]
    assert len(warnings) == 1
    assert warnings[0]["sunset"] == "Wed, 01 Jul 2026 00:00:00 GMT"
    assert "successor-version" in warnings[0]["link"]


def test_diadoc_error_bodies_read_as_text_or_html_title():
    def response(status: int, body: bytes, content_type: str, code: str | None = None) -> requests.Response:
        answer = requests.Response()
        answer.status_code, answer._content = status, body
        answer.headers["Content-Type"] = content_type
        if code:
            answer.headers["X-Diadoc-ErrorCode"] = code
        return answer

    text = read_diadoc_error(response(400, b"cursor must have  valid\nvalue", "text/plain", "Http.BadRequest"))
    assert (text.code, text.message) == ("Http.BadRequest", "cursor must have valid value")
    page = read_diadoc_error(response(502, b"<html><head><title>502 Bad\n Gateway</title>", "text/html"))
    assert (page.code, page.message) == (None, "an HTML page (502 Bad Gateway)")


# -- configuration ------------------------------------------------------------------------------


def test_a_feed_is_named_by_the_event_over_the_deployments_settings():
    feed = box_feed(
        {"boxId": " box@diadoc.ru ", "documentDirection": ["Inbound", "Outbound"], "timestampToTicks": 5},
        {"start": "now", "limit": "250", "messageType": "Letter", "documentDirection": "Internal"},
    )
    assert feed == BoxFeed(
        box_id="box@diadoc.ru",
        filters=(("messageType", "Letter"), ("documentDirection", "Inbound,Outbound"), ("timestampToTicks", "5")),
        start=Start.NOW,
        limit=250,
    )
    assert feed.feed_id == "diadoc:box@diadoc.ru"
    moment = box_feed({"boxId": "b", "start": "2025-01-01T03:00:00+03:00"})
    assert moment.start is Start.TIME
    assert moment.filters == (("timestampFromTicks", str(from_rfc3339("2025-01-01T00:00:00Z"))),)
    assert box_feed({"boxId": "b", "timestampFromTicks": "1"}).start is Start.TIME


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        ({}, "names no boxId"),
        ({"boxId": "b", "departmentID": "x"}, "unknown Diadoc feed settings departmentID"),
        ({"boxId": "b", "limit": 0}, "limit must be between 1 and 500"),
        ({"boxId": "b", "limit": "many"}, "limit must be an integer"),
        ({"boxId": "b", "start": "yesterday"}, "start must be oldest, now or an RFC 3339 time"),
        ({"boxId": "b", "start": "2025-01-01T00:00:00"}, "start must be oldest, now or an RFC 3339 time"),
        ({"boxId": "b", "start": "2025-01-01T00:00:00Z", "timestampFromTicks": 1}, "name different moments"),
        ({"boxId": "b", "timestampToTicks": "soon"}, "timestampToTicks must be .NET ticks"),
        ({"boxId": "b", "timestampToTicks": -1}, "must not be negative"),
        ({"boxId": "b", "messageType": [""]}, "messageType must be a list of non-empty strings"),
        ({"boxId": "b", "counteragentBoxId": 7}, "counteragentBoxId must be a string"),
    ],
)
def test_a_malformed_feed_is_a_configuration_error(request_, problem):
    with pytest.raises(ConfigurationError, match=problem):
        box_feed(request_)


def test_ticks_and_rfc_3339():
    assert to_rfc3339(from_rfc3339("2017-03-15T00:00:00Z")) == "2017-03-15T00:00:00Z"
    assert to_rfc3339(from_rfc3339("2017-03-15T03:00:00+03:00") + 1) == "2017-03-15T00:00:00.0000001Z"
    assert to_rfc3339(1) == "0001-01-01T00:00:00.0000001Z"
    assert [to_rfc3339(0), to_rfc3339(-5), to_rfc3339(10**20)] == [None, None, None]


# -- credentials --------------------------------------------------------------------------------


def test_a_diadocauth_token_is_kept_renewed_before_its_day_ends_and_after_a_401(sim, clock):
    box = next(iter(sim.boxes))
    sim.generate(box, 45)
    auth = legacy(sim, clock)
    feed = source(sim, auth)

    assert len(drain(feed)) == 45
    assert sim.authentications == 1, "one token for every page"

    clock.now += TOKEN_LIFETIME_SECONDS - 3601
    feed.read_page(None)
    assert sim.authentications == 1
    clock.now += 2  # within the last hour of its day: a fresh token before any request fails
    feed.read_page(None)
    assert sim.authentications == 2
    assert [c.status for c in sim.calls(EVENTS)][-2:] == [200, 200]

    sim.expire_tokens()  # Diadoc forgot the token early
    feed.read_page(None)
    assert sim.authentications == 3
    assert [c.status for c in sim.calls(EVENTS)][-2:] == [401, 200]
    headers = {c.headers["authorization"] for c in sim.calls(EVENTS)}
    assert all(
        h.startswith(f"DiadocAuth ddauth_api_client_id={credentials(sim)['api_client_id']},ddauth_token=")
        for h in headers
    )


def test_a_late_401_to_a_token_already_replaced_never_locks_a_working_credential_out(sim, aws, clock):
    """A request sent with the token before another request renewed it can get its 401 late (after
    the session's own retries); its retry takes the renewed token, which Diadoc may have forgotten
    meanwhile too (the local stack's fault campaign does this). That token had worked: its 401 says
    it expired, not that the credential is refused. Counted as refusals, twice left the credential
    alone for minutes while the box's events waited."""
    box = next(iter(sim.boxes))
    sim.generate(box, 5)
    auth = DiadocAuthTokens(secret(aws, credentials(sim)), http.session(retries=1, backoff=0.01), sim.url, clock=clock)
    feed = source(sim, auth)
    for _ in range(3):
        late = auth.headers()  # a request sent now, answered 401 late
        sim.expire_tokens()
        feed.read_page(None)  # another request: 401, renewed, 200
        sim.expire_tokens()  # Diadoc forgets the renewed token too
        assert auth.renew(late), "the late request is retried with the token in use"
        auth.refused(auth.headers())  # and that retry is refused as well, as the client reports it
    assert len(drain(feed)) == 5, "the next request renews the token and reads on"


def test_the_secret_chooses_the_scheme(sim, aws):
    session = http.session()
    sim.identity.register_client("relay", "s3cret")
    oidc = {"token_url": "http://127.0.0.1:1/connect/token", "client_id": "relay", "client_secret": "s3cret"}
    assert isinstance(diadoc_authenticator(secret(aws, oidc), session, sim.url), OpenIdConnectTokens)
    static = diadoc_authenticator(secret(aws, {"access_token": "abc"}), session, sim.url)
    assert isinstance(static, SecretCredential)
    assert static.headers() == {"Authorization": "Bearer abc"}
    assert isinstance(diadoc_authenticator(secret(aws, credentials(sim)), session, sim.url), DiadocAuthTokens)
    with pytest.raises(NotConfigured, match="is empty: fill it in"):
        diadoc_authenticator(secret(aws, {}), session, sim.url)
    with pytest.raises(ConfigurationError, match="holds none of"):
        diadoc_authenticator(secret(aws, {"scope": "x"}), session, sim.url)
    incomplete = diadoc_authenticator(secret(aws, {"login": "x"}), session, sim.url)
    with pytest.raises(ConfigurationError, match="lacks api_client_id, password"):
        incomplete.headers()


def test_an_unknown_api_client_id_is_an_auth_error(sim, clock):
    auth = DiadocAuthTokens(
        Values({**credentials(sim), "api_client_id": "nobody"}),  # type: ignore[arg-type]
        http.session(),
        sim.url,
        clock=clock,
    )
    with pytest.raises(FeedAuthError, match=r"Authorization\.ApiClientIdIsNotValid"):
        source(sim, auth).read_page(None)
    assert sim.calls(EVENTS) == []


def test_credentials_never_reach_logs_or_error_messages(sim, aws, clock, caplog):
    box = next(iter(sim.boxes))
    sim.generate(box, 5)
    caplog.set_level(logging.INFO)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setFormatter(logger.registered_formatter)
    logging.getLogger(logger.name).addHandler(handler)
    level = logger.log_level
    logger.setLevel("DEBUG")
    identity = sim.identity
    assert identity is not None
    client_secret = secrets.token_urlsafe(16)
    identity.register_client("relay", client_secret)
    good = credentials(sim)
    errors: list[str] = []
    scenarios = [
        good,
        {**good, "password": good["password"] + "-wrong"},
        {
            "token_url": identity.token_url,
            "client_id": "relay",
            "client_secret": client_secret,
            "grant_type": "password",
            "username": good["login"],
            "password": good["password"],
        },
        {"access_token": "forged-" + secrets.token_hex(8)},
    ]
    try:
        for values in scenarios:
            feed = source(sim, diadoc_authenticator(secret(aws, values), http.session(), sim.url))
            sim.faults.add(Fault.expired_token(), prefix=EVENTS, times=2)
            try:
                feed.read_page(None)
            except FeedError as error:
                errors.append(repr(error) + str(error))
            sim.faults.clear()
    finally:
        logging.getLogger(logger.name).removeHandler(handler)
        logger.setLevel(level)

    assert len(errors) == len(scenarios)
    tokens = {c.headers["authorization"].rsplit("=", 1)[-1] for c in sim.calls(EVENTS)}
    tokens |= {c.headers["authorization"].split(" ", 1)[1] for c in sim.calls(EVENTS)}
    text = "\n".join([captured.getvalue(), caplog.text, *errors])
    assert "401" in text
    for value in {good["password"], client_secret, *tokens}:
        assert value[:12] not in text


def test_a_bad_cursor_is_rejected_with_diadocs_words(sim, clock):
    with pytest.raises(FeedRejected) as raised:
        source(sim, legacy(sim, clock)).read_page("AAAA+/==")
    assert raised.value.status == 400
    assert raised.value.error_code == "Http.BadRequest"
    assert "cursor must have valid value" in str(raised.value)
