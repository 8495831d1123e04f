"""Credentials every container shares: moto's Secrets Manager, the token item in DynamoDB Local, the
identity and Extern simulators over HTTP (with the gateway habits of ``Fault.after_acting``). Faults
that none of them produce on demand (a crash, a failing write) are injected around the real adapters."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from kontur_relay.aws.secrets import CredentialsSecret
from kontur_relay.aws.token_items import DynamoTokenStore, key
from kontur_relay.domain.errors import ConfigurationError, FeedAuthError, FeedUnavailable
from kontur_relay.feeds.extern.auth import extern_authenticator
from kontur_relay.feeds.extern.kind import ExternSettings
from kontur_relay.feeds.extern.publishers import ExternPublishers
from kontur_relay.kontur import session as http
from kontur_relay.kontur.oidc import OpenIdConnectTokens
from kontur_relay.kontur.refresh import LEGACY_KEYS, RedemptionUnknown
from kontur_relay.settings import Env
from local_stack.simulators.faults import Fault
from local_stack.template import Stack
from tests.adapters.test_extern_source import EVENTS, Kontur, _refresh_token, kontur, oidc, secret, source

__all__ = ["kontur"]  # the fixture

TOKEN = "/connect/token"


class Crash(BaseException):
    """The container dies (not an Exception: nothing may catch it on the way out)."""


class World:
    """One deployment: its Extern secret and the token item every container of it shares."""

    def __init__(self, kontur: Kontur, aws: dict[str, Any], stack: Stack, values: dict[str, str]) -> None:
        self.kontur = kontur
        self.client = aws["secretsmanager"]
        self.name = secret(aws, values).secret_id
        self.table = boto3.resource("dynamodb").Table(stack.physical["CursorsTable"])

    def container(
        self,
        *,
        clock: Callable[[], float] = time.time,
        secret_class: type[CredentialsSecret] = CredentialsSecret,
        store_class: type[DynamoTokenStore] = DynamoTokenStore,
    ) -> OpenIdConnectTokens:
        """A fresh container's authenticator: nothing in memory, everything from the secret and the item."""
        tokens = store_class(self.table, "extern", self.name, clock=clock)
        credentials = secret_class(self.name, self.client, tokens=tokens)
        return OpenIdConnectTokens(credentials, http.session(retries=2, backoff=0.01), timeout=2, clock=clock)

    def stored(self) -> dict[str, Any]:
        answer = self.client.get_secret_value(SecretId=self.name, VersionStage="AWSCURRENT")
        return dict(json.loads(answer["SecretString"]))

    def versions(self) -> int:
        return len(self.client.list_secret_version_ids(SecretId=self.name, IncludeDeprecated=True)["Versions"])

    def put(self, values: dict[str, str]) -> None:
        """An operator's new version, current at once. (moto leaves AWSCURRENT on a version that
        UpdateSecretVersionStage moved it to when a put comes later; Secrets Manager moves it.)"""
        current = self.client.get_secret_value(SecretId=self.name, VersionStage="AWSCURRENT")["VersionId"]
        new = self.client.put_secret_value(SecretId=self.name, SecretString=json.dumps(values))["VersionId"]
        if self.client.get_secret_value(SecretId=self.name, VersionStage="AWSCURRENT")["VersionId"] != new:
            self.client.update_secret_version_stage(
                SecretId=self.name, VersionStage="AWSCURRENT", MoveToVersionId=new, RemoveFromVersionId=current
            )

    def item(self) -> dict[str, Any]:
        return dict(self.table.get_item(Key={"feed": key("extern")}, ConsistentRead=True).get("Item") or {})


def refreshing(kontur: Kontur, **extra: str) -> dict[str, str]:
    return oidc(kontur, grant_type="refresh_token", refresh_token=_refresh_token(kontur), **extra)


def password(kontur: Kontur) -> dict[str, str]:
    return oidc(kontur, grant_type="password", username=kontur.username, password=kontur.password)


# -- one presentation per redemption attempt --------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.after_acting(502), Fault.after_acting(500), Fault.after_acting(504)])
def test_a_refresh_token_is_presented_once_when_a_gateway_answers_after_the_redemption(kontur, aws, stack, fault):
    world = World(kontur, aws, stack, refreshing(kontur))
    first = world.stored()["refresh_token"]
    kontur.identity.faults.add(fault, prefix=TOKEN)

    with pytest.raises(RedemptionUnknown, match=f"answered {fault.status}; it may have acted on the grant"):
        world.container().headers()

    assert kontur.identity.presented[first] == 1, "not presented again by a retry"
    assert "lock_owner" not in world.item(), "the lock is given up at once"
    # The next attempt presents it once more, and what it is told is said plainly.
    with pytest.raises(FeedAuthError, match=r"answer was lost .* put a fresh refresh_token"):
        world.container().headers()
    assert kontur.identity.presented[first] == 2
    # Refused: never presented again, until the secret holds another.
    with pytest.raises(FeedAuthError):
        world.container().headers()
    assert kontur.identity.presented[first] == 2


def test_a_lost_answer_is_not_retried(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    first = world.stored()["refresh_token"]
    kontur.identity.faults.add(Fault.answer_lost(delay=6), prefix=TOKEN)

    with pytest.raises(RedemptionUnknown, match="answer was lost: ReadTimeout"):
        world.container().headers()
    assert kontur.identity.presented[first] == 1


def test_answers_that_turn_the_request_away_are_retried(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    first = world.stored()["refresh_token"]
    kontur.identity.faults.add(Fault.throttle(retry_after=0), prefix=TOKEN)
    kontur.identity.faults.add(Fault.server_error(503), prefix=TOKEN)

    assert world.container().headers()["Authorization"].startswith("Bearer ")
    assert [c.status for c in kontur.identity.calls(TOKEN)] == [429, 503, 200]
    assert kontur.identity.presented[first] == 1, "429 and 503 turned it away before the identity provider"
    assert kontur.identity.issued["refresh_token"] == 1


# -- the lock ---------------------------------------------------------------------------------------


def test_the_lock_outlives_the_longest_token_request_of_a_poller():
    session = http.session()  # a poller's: four retries, Retry-After up to 20 s
    tokens = OpenIdConnectTokens(CredentialsSecret("s", boto3.client("secretsmanager", "us-east-1")), session)
    longest = 5 * 2 * 20 + 4 * 20  # five tries, each a connection and an answer of 20 s; four waits of 20 s
    assert tokens.lock_seconds > longest


def test_only_the_owner_removes_the_lock(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    now = [1_000_000.0]
    one = DynamoTokenStore(world.table, "extern", world.name, clock=lambda: now[0])
    assert one.lock("a", until=now[0] + 10)
    assert not one.lock("b", until=now[0] + 10), "held"
    now[0] += 11
    assert one.lock("b", until=now[0] + 10), "lapsed: taken over"
    one.unlock("a")  # the first owner, late: the lock is no longer its own
    assert world.item()["lock_owner"] == "b"
    assert not one.save("a", {"token": "t"}, unlock=True), "nor may it write under another's lock"
    one.unlock("b")
    assert "lock_owner" not in world.item()


# -- sharing ----------------------------------------------------------------------------------------


class Racing(DynamoTokenStore):
    """The real item, but every container reads it before any may take the lock: the race."""

    barrier = threading.Barrier(2)
    waited = False

    def read(self) -> Any:
        shared = super().read()
        if not self.waited:
            self.waited = True
            self.barrier.wait(timeout=10)
        return shared


def test_two_containers_racing_redeem_once_and_both_use_the_one_token(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    versions = world.versions()
    Racing.barrier = threading.Barrier(2)
    containers = [world.container(store_class=Racing) for _ in range(2)]
    headers: list[dict[str, str]] = []
    errors: list[BaseException] = []

    def run(container: OpenIdConnectTokens) -> None:
        try:
            headers.append(container.headers())
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(c,)) for c in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert kontur.identity.issued == {"password": 0, "refresh_token": 1}, "exactly one redemption"
    assert headers[0] == headers[1], "the other uses the renewal's token"
    assert kontur.identity.refresh_token_is_valid(world.stored()["refresh_token"])
    assert world.versions() == versions + 1, "one secret version: the rotated refresh token, written once"
    item = world.item()
    assert "lock_owner" not in item
    assert "pending_refresh_token" not in item
    assert item["access_token"] == headers[0]["Authorization"].removeprefix("Bearer ")


def test_a_container_that_starts_later_uses_the_shared_token_and_writes_nothing(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    one = world.container().headers()
    versions = world.versions()
    assert world.container().headers() == one
    assert kontur.identity.issued["refresh_token"] == 1
    assert world.versions() == versions


def test_tokens_that_do_not_rotate_never_write_the_secret(kontur, aws, stack):
    world = World(kontur, aws, stack, password(kontur))
    versions = world.versions()
    now = [1_000_000.0]
    for _ in range(5):
        container = world.container(clock=lambda: now[0])
        container.headers()
        now[0] += 600  # each container finds the last token expired
    assert kontur.identity.issued["password"] == 5
    assert world.versions() == versions


def test_two_401s_at_once_in_one_container_renew_once_and_both_retries_use_the_new_token(kontur, aws, stack):
    world = World(kontur, aws, stack, password(kontur))
    tokens = world.container()
    feed = source(kontur, tokens)
    feed.read_page(None)
    # Both requests are sent with the old token and refused together, before either renews.
    kontur.extern.faults.add(Fault("refused-together", status=401, delay=0.5), prefix=EVENTS, times=2)
    pages: list[Any] = []
    threads = [threading.Thread(target=lambda: pages.append(feed.read_page(None))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(pages) == 2
    assert kontur.identity.issued["password"] == 2, "one renewal for the two refusals"
    calls = kontur.extern.calls(EVENTS)
    refused = [c for c in calls if c.status == 401]
    retried = [c for c in calls if c.status == 200][1:]
    assert len(refused) == 2
    assert len({c.headers["authorization"] for c in refused}) == 1
    assert len({c.headers["authorization"] for c in retried}) == 1, "the second retry uses the new token"
    assert retried[0].headers["authorization"] != refused[0].headers["authorization"]


# -- a persistent refusal ---------------------------------------------------------------------------


def test_a_persistent_401_backs_off_instead_of_renewing_every_run(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    now = [1_000_000.0]
    kontur.extern.faults.add(Fault("unauthorized", status=401), prefix=EVENTS, times=100)

    with pytest.raises(FeedAuthError) as first:
        source(kontur, world.container(clock=lambda: now[0])).read_page(None)
    assert first.value.kind == "feed_auth"
    assert kontur.identity.issued["refresh_token"] == 2, "the first token, and one renewal for its 401"
    # One refusal of a fresh token may be chance: the next run renews once more, on trial, with no
    # retry when that token is refused too.
    now[0] += 10
    with pytest.raises(FeedAuthError):
        source(kontur, world.container(clock=lambda: now[0])).read_page(None)
    assert kontur.identity.issued["refresh_token"] == 3
    versions, calls = world.versions(), len(kontur.extern.calls(EVENTS))

    for _ in range(5):  # later runs, in old and new containers alike
        now[0] += 10
        with pytest.raises(FeedAuthError, match=r"refused this credential 2 time.* tries again after"):
            source(kontur, world.container(clock=lambda: now[0])).read_page(None)
    assert kontur.identity.issued["refresh_token"] == 3, "no renewal while the backoff holds"
    assert len(kontur.extern.calls(EVENTS)) == calls, "nor a request to Kontur"
    assert world.versions() == versions

    now[0] += 60  # the backoff is over: one renewal on trial, refused at once, and a longer backoff
    with pytest.raises(FeedAuthError):
        source(kontur, world.container(clock=lambda: now[0])).read_page(None)
    assert kontur.identity.issued["refresh_token"] == 4
    now[0] += 90
    with pytest.raises(FeedAuthError, match="refused this credential 3 time"):
        source(kontur, world.container(clock=lambda: now[0])).read_page(None)
    assert kontur.identity.issued["refresh_token"] == 4

    # An operator puts a new credential: tried at once.
    kontur.extern.faults.clear()
    world.put(refreshing(kontur))
    assert source(kontur, world.container(clock=lambda: now[0])).read_page(None).events


# -- write-back -------------------------------------------------------------------------------------


class QuotaReached(CredentialsSecret):
    """The real adapter, but the secret takes no new version (its versions quota is reached)."""

    full = True

    def update(self, changes: Any, **kwargs: Any) -> None:
        if QuotaReached.full:
            raise ClientError({"Error": {"Code": "LimitExceededException", "Message": "versions"}}, "PutSecretValue")
        super().update(changes, **kwargs)


def test_a_write_back_that_fails_keeps_the_new_refresh_token_where_the_next_container_finds_it(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur))
    first = world.stored()["refresh_token"]
    now = [1_000_000.0]
    QuotaReached.full = True

    assert world.container(clock=lambda: now[0], secret_class=QuotaReached).headers()
    second = world.item()["pending_refresh_token"]
    assert world.stored()["refresh_token"] == first, "the secret took nothing"
    assert kontur.identity.refresh_token_is_valid(second)

    now[0] += 600  # a new container, with nothing in memory, renews: it presents the live token
    world.container(clock=lambda: now[0], secret_class=QuotaReached).headers()
    assert kontur.identity.presented[first] == 1
    assert kontur.identity.presented[second] == 1
    third = world.item()["pending_refresh_token"]

    QuotaReached.full = False  # the quota frees up: the next container that looks writes it back
    assert world.container(clock=lambda: now[0], secret_class=QuotaReached).headers()
    assert world.stored()["refresh_token"] == third
    assert "pending_refresh_token" not in world.item()
    assert kontur.identity.issued["refresh_token"] == 2


class CrashingBeforeTheItem(DynamoTokenStore):
    """The container dies as the identity provider's answer arrives: nothing it would do after happens."""

    dead = False

    def save(self, owner: str, changes: Any, *, unlock: bool) -> bool:
        if "token" in changes:
            self.dead = True
            raise Crash
        return super().save(owner, changes, unlock=unlock)

    def unlock(self, owner: str) -> None:
        if not self.dead:
            super().unlock(owner)


@pytest.mark.parametrize("with_password", [True, False], ids=["password-kept", "refresh-token-only"])
def test_a_crash_between_the_redemption_and_saving_it(kontur, aws, stack, with_password: bool):
    extra = {"username": kontur.username, "password": kontur.password} if with_password else {}
    world = World(kontur, aws, stack, refreshing(kontur, **extra))
    first = world.stored()["refresh_token"]
    now = [1_000_000.0]
    crashing = CredentialsSecret(
        world.name, world.client, tokens=CrashingBeforeTheItem(world.table, "extern", world.name, clock=lambda: now[0])
    )
    with pytest.raises(Crash):
        OpenIdConnectTokens(crashing, http.session(), clock=lambda: now[0]).headers()
    lock = float(world.item()["lock_until"])

    now[0] = lock + 1  # the next container, once the dead one's lock has lapsed
    container = world.container(clock=lambda: now[0])
    if with_password:
        assert [e.id for e in source(kontur, container).read_page(None).events] == kontur.visible()[:50]
        assert kontur.identity.issued == {"password": 1, "refresh_token": 1}
    else:
        with pytest.raises(FeedAuthError, match="put a fresh refresh_token"):
            container.headers()
    assert kontur.identity.presented[first] == 2
    assert "lock_owner" not in world.item(), "nobody waits for a renewal that will never end"


def test_the_write_back_merges_into_what_another_writer_just_put_and_drops_the_old_keys(kontur, aws, stack):
    world = World(kontur, aws, stack, refreshing(kontur, relay_access_token="old", relay_refresh_lock="old"))
    container = world.container()
    container.secret.values()  # cached now
    world.put({**world.stored(), "api_key": kontur.api_key})
    container.headers()
    kept = world.stored()
    assert kept["api_key"] == kontur.api_key, "not overwritten from a stale cached copy"
    assert not set(LEGACY_KEYS) & set(kept), "an earlier relay's keys in the secret go with the next write"


def test_the_item_of_another_secret_is_not_this_ones(kontur, aws, stack):
    world = World(kontur, aws, stack, password(kontur))
    world.container().headers()
    other = World(kontur, aws, stack, password(kontur))  # the stack pointed at another secret, same item
    before = world.item()["access_token"]
    assert other.container().headers()["Authorization"] != f"Bearer {before}"
    assert other.item()["secret"] == other.name


# -- what the secret may hold and where credentials may go -------------------------------------------


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
    credentials = secret(aws, {**password(kontur), "token_url": "http://identity.kontur.ru/connect/token"})
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
    credentials = secret(aws, password(kontur))
    publishers = ExternPublishers(kontur.extern.url, credentials, timeout=5)
    account = next(iter(kontur.extern.accounts.values()))
    cookie = Fault("set-cookie", status=200, body=b"{}", headers=(("Set-Cookie", "session=administrator; Path=/"),))
    kontur.extern.faults.add(cookie, prefix=f"/v1/{account.id}/share-events")
    publishers.share_events(account.id, f"Bearer {kontur.extern.admin_token(account)}", kontur.client_id, None)
    publishers.publishers()
    assert all("cookie" not in call.headers for call in kontur.extern.calls("/v1/event-publishers"))
    assert isinstance(publishers.http, requests.Session)


def test_an_unreachable_token_endpoint_is_unavailable_and_redeemed_nothing(kontur, aws, stack):
    values = {**refreshing(kontur), "token_url": "http://127.0.0.1:9/connect/token"}
    world = World(kontur, aws, stack, values)
    with pytest.raises(FeedUnavailable, match="could not be reached") as raised:
        world.container().headers()
    assert not isinstance(raised.value, RedemptionUnknown)
    assert "uncertain_after" not in world.item()
