"""A webhook receiver, as an integrator runs one: every request's Standard Webhooks signature is
verified with that standard's own library (``standardwebhooks``, not the relay's code), the events
of a verified request are taken and a 204 acknowledges them; a request that fails verification is
refused (401) and taken nowhere.

On request it behaves as a receiver in trouble does: ``faults`` (the simulators' fault plan) answers
5xx or 429, or holds a request past the relay's timeout and only then takes it (the answer lost).
The local stack runs one for the webhook sink (``--webhook-faults``); the tests and the benchmark
use it too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from local_stack.simulators.base import Request, Response, Simulator
from local_stack.simulators.faults import Fault

PATH = "/events"
#: What ``--webhook-faults`` serves at random: a receiver that is down, overloaded, or slow (within
#: the relay's 10 s read timeout: a scaled run of the local stack is only seconds long).
RECEIVER_FAULTS = (Fault.server_error(503), Fault.server_error(500), Fault.throttle(retry_after=1), Fault.slow(3.0))


@dataclass(frozen=True)
class Delivery:
    """One verified request: its Standard Webhooks id and timestamp, its trace context, its events."""

    webhook_id: str
    timestamp: int
    traceparent: str | None
    events: list[Any]


class WebhookReceiver(Simulator):
    """Takes signed events at ``url + PATH``; ``secret``: the signing secret (set once the stack made it)."""

    name = "webhook-receiver"

    def __init__(self, secret: str | None = None, *, on_events: Callable[[list[Any]], None] | None = None) -> None:
        super().__init__()
        self._webhook = Webhook(secret) if secret else None
        self.on_events = on_events
        self.deliveries: list[Delivery] = []
        #: Requests that failed verification (a wrong secret, a stale timestamp, a changed body).
        self.refused: list[str] = []
        self._lock = threading.Lock()
        self.route("POST", PATH, self._take)

    @property
    def endpoint(self) -> str:
        return self.url + PATH

    def set_secret(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def events(self) -> list[Any]:
        """Every event taken, in the order taken (duplicates included)."""
        with self._lock:
            return [event for delivery in self.deliveries for event in delivery.events]

    def _take(self, request: Request) -> Response:
        if self._webhook is None:
            return Response.json({"message": "the receiver has no secret yet"}, 503)
        try:
            events = self._webhook.verify(request.body, request.headers)
        except WebhookVerificationError as error:
            with self._lock:
                self.refused.append(str(error))
            return Response.json({"message": f"signature refused: {error}"}, 401)
        if not isinstance(events, list):
            return Response.json({"message": "expected a JSON array of CloudEvents"}, 400)
        delivery = Delivery(
            request.headers["webhook-id"],
            int(request.headers["webhook-timestamp"]),
            request.headers.get("traceparent"),
            events,
        )
        with self._lock:
            self.deliveries.append(delivery)
        if self.on_events is not None:
            self.on_events(events)
        return Response(204)


def describe(receiver: WebhookReceiver) -> str:
    taken = sum(len(delivery.events) for delivery in receiver.deliveries)
    return (
        f"webhook receiver: {len(receiver.deliveries)} requests verified ({taken} events), "
        f"{len(receiver.refused)} refused, faults served {len(receiver.faults.served)}"
    )
