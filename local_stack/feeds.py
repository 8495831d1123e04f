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
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from local_stack import api_gateway
from local_stack.scenarios import SimulatedDiadoc, SimulatedExtern, SimulatedFeed, SimulationOptions
from local_stack.template import Stack

if TYPE_CHECKING:
    from local_stack.scheduler import Invocation


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

EXTERN = FeedKit(
    feed=SimulatedExtern.feed,
    function="ExternPollerFunction",
    api_url_parameter="ExternApiUrl",
    secret_variable="EXTERN_CREDENTIALS_SECRET",
    example_filter={"source": ["extern"], "docflow_type": ["urn:docflow:fns534-report"]},
    simulate=SimulatedExtern,
)

# -- Diadoc: one feed per box (diadoc:<boxId>), the boxes and their filters as template parameters --

DIADOC = FeedKit(
    feed=SimulatedDiadoc.feed,
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


ADMIN_API = Front("admin API (sign requests with SigV4, e.g. awscurl)", _api_functions, admin_api)
#: Fronts started by ``make run`` before the scheduler (a user registers Diadoc boxes through the
#: admin API first), stopped after it.
FRONTS: list[Front] = [ADMIN_API]
