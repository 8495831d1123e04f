"""Credentials every container shares: moto's Secrets Manager through its API, the identity and Extern
simulators over HTTP. Faults (a crash, a race's timing) are injected around the real secret adapter."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests

from kontur_relay.aws.secrets import CredentialsSecret, SecretVersion
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.kind import ExternSettings
from kontur_relay.feeds.extern.publishers import ExternPublishers
from kontur_relay.kontur import session as http
from kontur_relay.kontur.auth import OpenIdConnectTokens
from kontur_relay.kontur.refresh import LOCK, LOCK_SECONDS, SHARED_TOKEN
from kontur_relay.settings import Env
from local_stack.simulators.faults import Fault
from tests.adapters.test_extern_source import EVENTS, Kontur, _refresh_token, kontur, oidc, secret, source, stored

__all__ = ["kontur"]  # the fixture


class Racing(CredentialsSecret):
    """The real adapter, but every container reads the secret before any may claim it: the race."""

    def __init__(self, secret_id: str, client: Any, barrier: threading.Barrier) -> None:
        super().__init__(secret_id, client)
        self.barrier = barrier
        self.first = True

    def current(self) -> SecretVersion:
        read = super().current()
        if self.first:
            self.first = False
            self.barrier.wait(timeout=10)
        return read


class Crash(BaseException):
    """The container dies (not an Exception: nothing may catch it on the way out)."""


class CrashingBeforeWriteBack(CredentialsSecret):
    def update(self, changes: Any, **kwargs: Any) -> None:
        if "refresh_token" in changes:
            raise Crash
        super().update(changes, **kwargs)


def test_two_containers_racing_redeem_the_refresh_token_once_and_both_get_a_working_token(kontur: Kontur, aws):
    first = _refresh_token(kontur)
    name = secret(aws, oidc(kontur, grant_type="refresh_token", refresh_token=first)).secret_id
    barrier = threading.Barrier(2)
    containers = [Racing(name, aws["secretsmanager"], barrier) for _ in range(2)]
    authenticators = [extern_authenticator(c, http.session()) for c in containers]
    headers: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            headers.append(authenticators[index].headers())
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert kontur.identity.issued == {"password": 0, "refresh_token": 1}, "exactly one redemption"
    assert headers[0] == headers[1], "the loser uses the winner's token"
    for authenticator in authenticators:
        assert [e.id for e in source(kontur, authenticator).read_page(None).events] == kontur.visible()[:50]
    kept = stored(aws, containers[0])
    assert kontur.identity.refresh_token_is_valid(kept["refresh_token"])
    assert LOCK not in kept
    assert kept[SHARED_TOKEN]["token"] == headers[0]["Authorization"].removeprefix("Bearer ")


def test_a_container_that_starts_later_uses_the_shared_token_without_redeeming(kontur: Kontur, aws):
    credentials = secret(aws, oidc(kontur, grant_type="refresh_token", refresh_token=_refresh_token(kontur)))
    one = extern_authenticator(credentials, http.session()).headers()
    other = extern_authenticator(CredentialsSecret(credentials.secret_id, aws["secretsmanager"]), http.session())
    assert other.headers() == one
    assert kontur.identity.issued["refresh_token"] == 1


@pytest.mark.parametrize("with_password", [True, False], ids=["password-kept", "refresh-token-only"])
def test_a_crash_between_redemption_and_write_back(kontur: Kontur, aws, with_password: bool):
    first = _refresh_token(kontur)
    extra = {"username": kontur.username, "password": kontur.password} if with_password else {}
    name = secret(aws, oidc(kontur, grant_type="refresh_token", refresh_token=first, **extra)).secret_id
    crashing = CrashingBeforeWriteBack(name, aws["secretsmanager"])
    with pytest.raises(Crash):
        extern_authenticator(crashing, http.session()).headers()
    assert kontur.identity.issued["refresh_token"] == 1
    left = stored(aws, crashing)
    assert left["refresh_token"] == first, "the successor died with the container"
    assert not kontur.identity.refresh_token_is_valid(first)
    assert LOCK in left, "the interrupted renewal is visible to the next container"

    # The next container, once the crashed one's lock has lapsed.
    later = [float(left[LOCK]["until"]) + 1]
    restarted = CredentialsSecret(name, aws["secretsmanager"])
    tokens = OpenIdConnectTokens(restarted, http.session(), clock=lambda: later[0])
    if with_password:
        assert [e.id for e in source(kontur, tokens).read_page(None).events] == kontur.visible()[:50]
        assert kontur.identity.issued == {"password": 1, "refresh_token": 1}
    else:
        with pytest.raises(FeedAuthError, match=r"interrupted renewal .* put a fresh refresh_token"):
            tokens.headers()
        # It says what a person must do instead of failing as if the credentials were simply wrong.
        assert kontur.identity.issued["refresh_token"] == 1
    assert LOCK not in stored(aws, restarted), "nobody waits for a renewal that will never end"
    assert LOCK_SECONDS > 60


def test_a_401_with_a_static_token_rereads_the_secret_before_failing(kontur: Kontur, aws):
    old = kontur.token()
    credentials = secret(aws, {"access_token": old, "api_key": kontur.api_key})
    feed = source(kontur, extern_authenticator(credentials, http.session()))
    assert feed.read_page(None).events

    kontur.identity.expire_all()
    new = kontur.token()
    # An operator puts a new token; the container's cached copy (5 minutes) still has the old one.
    aws["secretsmanager"].put_secret_value(
        SecretId=credentials.secret_id, SecretString=json.dumps({"access_token": new, "api_key": kontur.api_key})
    )
    assert [e.id for e in feed.read_page(None).events] == kontur.visible()[:50]
    assert [c.status for c in kontur.extern.calls(EVENTS)][-2:] == [401, 200]

    kontur.identity.expire_all()  # and nobody replaced it this time
    with pytest.raises(FeedAuthError):
        feed.read_page(None)


def test_the_write_back_merges_into_what_another_writer_just_put(kontur: Kontur, aws):
    credentials = secret(aws, oidc(kontur, grant_type="refresh_token", refresh_token=_refresh_token(kontur)))
    credentials.values()  # cached now
    changed = {**stored(aws, credentials), "api_key": kontur.api_key}
    aws["secretsmanager"].put_secret_value(SecretId=credentials.secret_id, SecretString=json.dumps(changed))
    extern_authenticator(credentials, http.session()).headers()
    assert stored(aws, credentials)["api_key"] == kontur.api_key, "not overwritten from a stale cached copy"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"EXTERN_API_URL": "http://extern-api.kontur.ru"}, "EXTERN_API_URL"),
        ({"EXTERN_API_URL": "ftp://127.0.0.1"}, "EXTERN_API_URL"),
    ],
)
def test_credentials_go_only_to_https_or_this_machine(variables: dict[str, str], named: str):
    with pytest.raises(ConfigurationError, match=f"{named} must be an https:// URL"):
        ExternSettings.from_env(Env({**variables, "EXTERN_CREDENTIALS_SECRET": "s"}))
    loopback = {"EXTERN_API_URL": "http://127.0.0.1:8080", "EXTERN_CREDENTIALS_SECRET": "s"}
    assert ExternSettings.from_env(Env(loopback)).api_url


def test_a_token_url_in_clear_is_refused_naming_it(kontur: Kontur, aws):
    values = oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password)
    credentials = secret(aws, {**values, "token_url": "http://identity.kontur.ru/connect/token"})
    with pytest.raises(ConfigurationError, match="token_url in the credentials secret must be an https:// URL"):
        extern_authenticator(credentials, http.session()).headers()
    assert kontur.identity.issued == {"password": 0, "refresh_token": 0}


def test_a_redirect_is_not_followed_with_the_credential(kontur: Kontur):
    redirect = Fault("redirect", status=307, body=b"", headers=(("Location", "http://127.0.0.1:9/v1/events"),))
    kontur.extern.faults.add(redirect, prefix=EVENTS)
    with pytest.raises(Exception, match="307"):
        source(kontur).read_page(None)
    assert len(kontur.extern.calls(EVENTS)) == 1


def test_the_administrators_cookies_never_reach_the_integrators_calls(kontur: Kontur, aws):
    credentials = secret(aws, oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password))
    publishers = ExternPublishers(kontur.extern.url, credentials, timeout=5)
    account = next(iter(kontur.extern.accounts.values()))
    cookie = Fault("set-cookie", status=200, body=b"{}", headers=(("Set-Cookie", "session=administrator; Path=/"),))
    kontur.extern.faults.add(cookie, prefix=f"/v1/{account.id}/share-events")
    publishers.share_events(account.id, f"Bearer {kontur.extern.admin_token(account)}", kontur.client_id, None)
    publishers.publishers()
    assert all("cookie" not in call.headers for call in kontur.extern.calls("/v1/event-publishers"))
    assert isinstance(publishers.http, requests.Session)
