"""What the local stack knows about each feed, and the hook for extra HTTP fronts.

A *feed kit* ties a feed to its poller function in template.yaml and says how to run it locally:
which template parameter holds the API's URL, which of the function's variables names its
credentials secret, an example filter policy for the demo queue, and how to start its simulators
(which also tell which events the relay must deliver). Adding a feed is one ``FeedKit`` in ``KITS``
and a ``simulate`` function; the rest of the stack (secret, parameters, schedule, view, summary)
follows from it.

A *front* is an HTTP server started beside the scheduler, e.g. the admin API turning requests into
API Gateway events for its function. Register one in ``FRONTS``; see :class:`Front`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from local_stack import api_gateway
from local_stack.simulators.base import TRANSIENT_FAULTS, Fault
from local_stack.simulators.diadoc import SimulatedDiadoc
from local_stack.simulators.extern import ExternSimulator
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack

if TYPE_CHECKING:
    from local_stack.scheduler import Invocation


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


class SimulatedFeed(Protocol):
    """A feed's simulators, running: what the stack needs from them."""

    #: Template parameters pointing the function at the simulators (API URL; Diadoc: its boxes).
    parameters: dict[str, str]
    #: The JSON the function's credentials secret holds.
    credentials: dict[str, Any]

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

    def describe(self) -> list[str]:
        """Lines for the view's header: endpoints, accounts, traffic."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FeedKit:
    #: The feed's id: its cursor's key and the ``feed`` attribute of its messages; a kit whose
    #: function relays several feeds (Diadoc: one per box) owns ``<feed>:<anything>`` too.
    feed: str
    #: The logical id of its poller in template.yaml.
    function: str
    #: The template parameter holding the feed API's base URL.
    api_url_parameter: str
    #: The function's environment variable naming its credentials secret.
    secret_variable: str
    #: The filter policy of this feed's demo queue (a realistic subscription).
    example_filter: dict[str, Any]
    simulate: Callable[[SimulationOptions], SimulatedFeed]

    def owns(self, feed_id: str) -> bool:
        return feed_id == self.feed or feed_id.startswith(f"{self.feed}:")


# -- Kontur.Extern ---------------------------------------------------------------------------------


class SimulatedExtern:
    """The identity and Extern simulators: three accounts share everything with the integrator, one
    shares only its fns534 reports, and one shares with another integrator only (its events must
    never arrive)."""

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

    def start_traffic(self) -> None:
        self.extern.start_traffic(self.options.traffic_interval)

    def stop_traffic(self) -> None:
        self.extern.stop_traffic()

    def expected(self) -> set[tuple[str, str]]:
        return {(EXTERN.feed, event_id) for event_id in self.extern.events_visible_to(self.client_id)}

    def withheld(self) -> set[tuple[str, str]]:
        return {(EXTERN.feed, event_id) for event_id in self.extern.events_visible_to(self.other_client_id)}

    def faults_served(self) -> list[str]:
        return [*self.identity.faults.served, *self.extern.faults.served]

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

    def close(self) -> None:
        self.extern.stop()
        self.identity.stop()


EXTERN = FeedKit(
    feed="extern",
    function="ExternPollerFunction",
    api_url_parameter="ExternApiUrl",
    secret_variable="EXTERN_CREDENTIALS_SECRET",
    example_filter={"source": ["extern"], "docflow_type": ["urn:docflow:fns534-report"]},
    simulate=SimulatedExtern,
)

# -- Diadoc: one feed per box (diadoc:<boxId>), the boxes and their filters as template parameters --

DIADOC = FeedKit(
    feed="diadoc",
    function="DiadocPollerFunction",
    api_url_parameter="DiadocApiUrl",
    secret_variable="DIADOC_CREDENTIALS_SECRET",
    example_filter={"source": ["diadoc"], "message_type": ["Letter"]},
    simulate=SimulatedDiadoc,
)

#: Every feed the local stack runs, by feed id.
KITS: dict[str, FeedKit] = {kit.feed: kit for kit in (EXTERN, DIADOC)}


# -- HTTP fronts -----------------------------------------------------------------------------------


@dataclass
class FrontContext:
    """What a front gets: the evaluated stack and a way to invoke a function in its local container."""

    stack: Stack
    #: ``invoke(logical_id, event)``: runs the function's handler on ``event`` (waiting for its worker
    #: if a scheduled run holds it) and returns the Invocation (``.result`` or ``.error``).
    invoke: Callable[[str, Any], Invocation]
    #: Extra values a front may want (the AWS clients, by service name).
    clients: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Front:
    """An HTTP server on 127.0.0.1 started beside the scheduler and stopped before it.

    ``start(context)`` returns a context manager whose value is the front's URL; the stack shows
    the URL in the view's header. A front for an API converts each request to the event its API
    Gateway would send and calls ``context.invoke(function, event)``; each function named by
    ``functions(stack)`` gets a worker (unscaled Timeout: requests come in real time).
    """

    name: str
    #: The logical ids of the functions behind it; none (not in this template): the front does not start.
    functions: Callable[[Stack], list[str]]
    start: Callable[[FrontContext], AbstractContextManager[str]]


@contextlib.contextmanager
def admin_api(context: FrontContext) -> Iterator[str]:
    """The admin API's REST API (``local_stack.api_gateway``), its functions in their workers."""

    def invoke(function: str, event: dict[str, Any]) -> Mapping[str, Any]:
        invocation = context.invoke(function, event)
        if not invocation.ok:
            raise RuntimeError(f"{function} failed: {invocation.error_type}: {invocation.error}")
        result: Mapping[str, Any] = invocation.result
        return result

    front = api_gateway.start(context.stack, invoke, log=logging.getLogger("local_stack.admin_api").info)
    try:
        yield front.url
    finally:
        front.stop()


def _api_functions(stack: Stack) -> list[str]:
    return sorted({route.function for route in api_gateway.api_routes(stack)})


#: Fronts started by ``make run``, each after the scheduler and stopped before it.
FRONTS: list[Front] = [Front("admin API (sign requests with SigV4, e.g. awscurl)", _api_functions, admin_api)]
