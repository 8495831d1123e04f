"""What ``make run`` simulates of each feed: which accounts or boxes, shared with whom, what backlog,
traffic and faults, and so which events the relay must deliver and which it must never publish.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from local_stack.admin_client import AdminClient
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.diadoc_habits import NAMES, Habits
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.faults import TRANSIENT_FAULTS, Fault
from local_stack.simulators.identity import IdentitySimulator


@dataclass(frozen=True)
class SimulationOptions:
    seed: int = 7
    #: Events waiting in the feed before the relay's first run.
    backlog: int = 300
    #: Seconds between two ticks of steady traffic (a few events, now and then a burst).
    traffic_interval: float = 0.25
    #: Share of the feed API's requests answered with a transient fault (429, 5xx, expired token).
    fault_rate: float = 0.0
    #: Lifetime of the identity simulator's access tokens: short, so that runs renew them.
    token_lifetime: int = 300
    #: Diadoc's habits the simulator shows (``diadoc_habits.NAMES``), their delays at the clock's pace.
    diadoc_habits: tuple[str, ...] = NAMES
    speed: float = 30.0


class SimulatedFeed(Protocol):
    """A feed's simulators, running: what the stack needs from them."""

    #: Template parameters pointing the function at the simulators (API URL; Diadoc: its boxes).
    parameters: dict[str, str]
    #: The JSON the function's credentials secret holds.
    credentials: dict[str, Any]

    def register(self, admin: AdminClient) -> list[str]:
        """What a user does through the admin API once the stack is up (Diadoc: register its boxes);
        lines for the view's header: what to try next."""
        ...

    def start_traffic(self) -> None:
        """Begin the steady trickle of new events (the backlog exists from the start)."""

    def stop_traffic(self) -> None: ...

    def expected(self) -> set[tuple[str, str]]:
        """(feed id, event id) of the events generated so far that the relay must publish."""
        ...

    def withheld(self) -> set[tuple[str, str]]:
        """(feed id, event id) of generated events the relay must never publish (not shared with it)."""
        ...

    def faults_served(self) -> list[str]: ...

    def explain(self, key: tuple[str, str]) -> str:
        """What the simulators did with one event the relay must publish, for the check's report of a
        missing one (Diadoc: when it is served, beside what); empty when nothing is worth saying."""
        ...

    def describe(self) -> list[str]:
        """Lines for the view's header: endpoints, accounts, traffic."""
        ...

    def endpoints(self) -> dict[str, str]:
        """The simulators' URLs, by what they stand in for (``api``, ``identity``), for scripts."""
        ...

    def close(self) -> None: ...


class SimulatedExtern:
    """The identity and Extern simulators: three accounts share everything with the integrator, one
    shares only its fns534 reports, and one shares with another integrator only (its events must
    never arrive)."""

    feed = "extern"
    client_id = "kontur-feed-relay-local"
    username = "relay@integrator.example"
    other_client_id = "another-integrator"

    def __init__(self, options: SimulationOptions) -> None:
        self.options = options
        self.identity = IdentitySimulator(token_lifetime=options.token_lifetime)
        self.extern = ExternSimulator(self.identity, seed=options.seed, realtime_dates=True)
        api_key, password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.extern.add_integrator(self.client_id, api_key, username=self.username, password=password)
        shared = [self.extern.add_account(organisations=1 + i % 3) for i in range(3)]
        partial, foreign = self.extern.add_account(), self.extern.add_account()
        #: Shares nothing yet: for a user to try share-events with its administrator's token.
        self.unshared = self.extern.add_account()
        for account in shared:
            self.extern.share(account, self.client_id)
        self.extern.share(partial, self.client_id, docflow_types=["urn:docflow:fns534-report"])
        other_key, other_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.extern.add_integrator(self.other_client_id, other_key, username="other@example", password=other_password)
        self.extern.share(foreign, self.other_client_id)
        self.accounts = (len(shared), 1, 1)
        self.extern.generate(options.backlog)
        if options.fault_rate:
            # One of each kind first, so that even a short run meets them all; then at random.
            for fault in (Fault.throttle(retry_after=1), Fault.server_error(503), Fault.expired_token()):
                self.extern.faults.add(fault, prefix="/v1/events")
            self.identity.faults.add(Fault.server_error(500), prefix="/connect/token")
            self.extern.faults.randomly(
                options.fault_rate,
                seed=options.seed,
                faults=(*TRANSIENT_FAULTS, Fault.expired_token()),
                prefix="/v1/events",
            )
            self.identity.faults.randomly(options.fault_rate / 2, seed=options.seed + 1, prefix="/connect/token")
        self.identity.start()
        self.extern.start()
        self.parameters = {"ExternApiUrl": self.extern.url}
        self.credentials: dict[str, Any] = {
            "token_url": self.identity.token_url,
            "client_id": self.client_id,
            "client_secret": api_key,
            "grant_type": "password",
            "username": self.username,
            "password": password,
            "scope": "extern.api",
            "api_key": api_key,
        }

    def register(self, admin: AdminClient) -> list[str]:
        token = self.extern.admin_token(self.unshared)
        return [
            f"  try share-events: account {self.unshared.id} shares nothing yet; its administrator's token is "
            f"{token} (lives {self.options.token_lifetime}s):",
            f"    awscurl --service execute-api -X POST -H 'X-Kontur-Authorization: Bearer {token}' "
            f"{admin.url}/accounts/{self.unshared.id}/share-events",
        ]

    def start_traffic(self) -> None:
        self.extern.start_traffic(self.options.traffic_interval)

    def stop_traffic(self) -> None:
        self.extern.stop_traffic()

    def expected(self) -> set[tuple[str, str]]:
        return {(self.feed, event_id) for event_id in self.extern.events_visible_to(self.client_id)}

    def withheld(self) -> set[tuple[str, str]]:
        return {(self.feed, event_id) for event_id in self.extern.events_visible_to(self.other_client_id)}

    def faults_served(self) -> list[str]:
        return [*self.identity.faults.served, *self.extern.faults.served]

    def explain(self, key: tuple[str, str]) -> str:
        return ""

    def describe(self) -> list[str]:
        full, partial, foreign = self.accounts
        return [
            f"Kontur: Extern API {self.extern.url}, identity {self.identity.url} "
            f"(tokens live {self.options.token_lifetime}s)",
            f"  {full} accounts share everything with the relay, {partial} only fns534 reports, "
            f"{foreign} only with another integrator; backlog {self.options.backlog}, "
            f"then traffic every {self.options.traffic_interval}s"
            + (f", faults on {self.options.fault_rate:.0%} of requests" if self.options.fault_rate else ""),
        ]

    def endpoints(self) -> dict[str, str]:
        return {"api": self.extern.url, "identity": self.identity.url}

    def close(self) -> None:
        self.extern.stop()
        self.identity.stop()


class SimulatedDiadoc:
    """Three
    boxes with a backlog each, then a trickle. The relay reads two, registered through the admin API
    as a user would: one whole, one through a filter set (inbound letters only); the third box is not
    registered, so none of its events may arrive. ``scheme`` picks the credentials: legacy
    ``diadocauth`` (login and password for /V3/Authenticate) or ``oidc`` (Bearer tokens of the
    identity simulator)."""

    feed = "diadoc"
    #: The filter set of the second box, named as GetNewEvents' query parameters.
    FILTERED = {"messageType": "Letter", "documentDirection": "Inbound"}
    LIST_FILTERS = frozenset({"messageType", "documentDirection"})
    EVENTS_PATH = "/V8/GetNewEvents"

    def __init__(self, options: SimulationOptions, *, scheme: str = "diadocauth") -> None:
        self.options = options
        self.identity = IdentitySimulator(token_lifetime=options.token_lifetime)
        self.diadoc = DiadocSimulator(self.identity, seed=options.seed)
        whole, filtered, unlisted = (self.diadoc.add_box(departments=2) for _ in range(3))
        self.relayed = {whole.id: {}, filtered.id: dict(self.FILTERED)}
        self.unlisted = unlisted.id
        login, password = "relay@integrator.example", secrets.token_urlsafe(16)
        client_id = "kontur-feed-relay-local"
        self.diadoc.add_api_client(client_id)
        self.diadoc.add_user(login, password, {box.id: None for box in (whole, filtered, unlisted)})
        for box in (whole, filtered, unlisted):
            self.diadoc.generate(box.id, options.backlog // 2)
            self.diadoc.add_future_event(box.id)
            self.diadoc.generate(box.id, max(options.backlog - options.backlog // 2 - 1, 0))
        self.diadoc.events.realtime_dates = True  # the trickle happens now; the backlog is history
        # Diadoc's habits in the trickle only: a late event is late by the accelerated clock.
        self.diadoc.habits = Habits.every(seed=options.seed, scale=1 / options.speed, only=options.diadoc_habits)
        if options.fault_rate:
            # One of each kind first, so that even a short run meets them all; then at random.
            for fault in (
                Fault.throttle(retry_after=1),
                Fault.server_error(409),
                Fault.html_error(502),
                Fault.expired_token(),
            ):
                self.diadoc.faults.add(fault, prefix=self.EVENTS_PATH)
            self.diadoc.faults.randomly(
                options.fault_rate,
                seed=options.seed,
                faults=(*TRANSIENT_FAULTS, Fault.server_error(409), Fault.expired_token()),
                prefix=self.EVENTS_PATH,
            )
        self.identity.start()
        self.diadoc.start()
        self.parameters = {"DiadocApiUrl": self.diadoc.url}
        if scheme == "oidc":
            self.identity.register_client(client_id, "local-client-secret")
            self.credentials: dict[str, Any] = {
                "token_url": self.identity.token_url,
                "client_id": client_id,
                "client_secret": "local-client-secret",
                "grant_type": "password",
                "username": login,
                "password": password,
            }
        else:
            self.credentials = {"api_client_id": client_id, "login": login, "password": password}

    def register(self, admin: AdminClient) -> list[str]:
        for box, filters in self.relayed.items():
            body = {name: [value] if name in self.LIST_FILTERS else value for name, value in filters.items()}
            status, answer = admin.call("PUT", f"/diadoc/boxes/{quote(box, safe='')}", body)
            if status not in (200, 201):
                raise RuntimeError(f"registering Diadoc box {box} answered {status}: {answer}")
        return [f"  boxes registered with PUT {admin.url}/diadoc/boxes/{{boxId}}; list them with GET …/diadoc/boxes"]

    def start_traffic(self) -> None:
        self.diadoc.start_traffic(self.options.traffic_interval)

    def stop_traffic(self) -> None:
        self.diadoc.stop_traffic()

    def expected(self) -> set[tuple[str, str]]:
        # Late ones included: the catch-up waits for them (reconciliation's, at the clock's pace).
        return self._relayed(self.diadoc.generated_ids)

    def served(self) -> set[tuple[str, str]]:
        """As ``expected``, without the events the feed serves only later (late ones)."""
        return self._relayed(self.diadoc.event_ids)

    def _relayed(self, ids: Callable[..., list[str]]) -> set[tuple[str, str]]:
        return {
            (f"{self.feed}:{box}", event_id)
            for box, filters in self.relayed.items()
            for event_id in ids(box, **filters)
        }

    def withheld(self) -> set[tuple[str, str]]:
        everything = {
            (f"{self.feed}:{box}", event_id)
            for box in (*self.relayed, self.unlisted)
            for event_id in self.diadoc.event_ids(box)
        }
        return everything - self.expected()

    def faults_served(self) -> list[str]:
        return [*self.identity.faults.served, *self.diadoc.faults.served]

    def explain(self, key: tuple[str, str]) -> str:
        box, event_id = key[0].partition(":")[2], key[1]
        entries = self.diadoc.entries(box)
        mine = [entry for entry in entries if entry.event_id == event_id]
        keys = {entry.index_key for entry in mine}
        siblings = sum(1 for entry in entries if entry.index_key in keys and entry.event_id != event_id)
        served = min(entry.visible_at for entry in mine)
        when = f"served {served - self.diadoc.clock():+.1f} s from now" if served else "served from the start"
        return f"{when}, {len(mine)} entries, {siblings} sibling(s) sharing its IndexKey"

    def describe(self) -> list[str]:
        whole, filtered = self.relayed
        return [
            f"Diadoc: API {self.diadoc.url} ({'Bearer' if 'token_url' in self.credentials else 'DiadocAuth'})",
            f"  box {whole} whole, box {filtered} inbound letters only, one more box not relayed; "
            f"backlog {self.options.backlog} each, then traffic every {self.options.traffic_interval}s"
            + (f", faults on {self.options.fault_rate:.0%} of requests" if self.options.fault_rate else ""),
            f"  Diadoc's habits in the traffic: {self.diadoc.habits.describe()}",
        ]

    def endpoints(self) -> dict[str, str]:
        return {"api": self.diadoc.url, "identity": self.identity.url}

    def close(self) -> None:
        self.diadoc.stop()
        self.identity.stop()
