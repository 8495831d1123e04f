"""moto's server as a process of its own: ``python -m local_stack.moto_process PORT``, started and
stopped by ``services.moto_server``.

moto is the busiest stand-in: every page the relay publishes is fanned out to the demo queues, each
message through a filter policy, all in Python. In the stack's own interpreter it competed for the
GIL with the simulators, the admin front and the queue readers; after a replay (every cursor back
to its start) moto's calls took seconds and every poller run timed out. Apart, it has a core to
itself when it needs one. Two of moto's costs per message are cut here, with the same answers: SQS
counting every queued message per message sent, and SNS building a certificate per notification.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509
from moto.core.utils import unix_time
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from moto.sqs.models import Message, Queue, SQSBackend
from werkzeug.serving import make_server

from local_stack.constants import LOOPBACK

#: How long a queue's message counts are reused. SQS's own are approximate too: AWS says they may
#: lag by a minute.
COUNTS_SECONDS = 1.0
_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)


def speed_up_moto_sqs() -> None:
    """moto 5.2 reads a queue's full attribute set where it needs one attribute, and that set counts
    every message: once per message sent (SendMessage's ContentBasedDeduplication check, on every SNS
    delivery too) and per message received (ReceiveMessage's retention check). O(n) per message: a
    queue a few thousand messages deep, as a replay leaves the demo queues, took a second per
    PublishBatch. Retention is read directly; the counts are reused for ``COUNTS_SECONDS``."""

    def is_message_valid_based_on_retention_period(self: SQSBackend, queue_name: str, message: Message) -> bool:
        retention = int(getattr(self.get_queue(queue_name), "message_retention_period"))  # noqa: B009 - set by setattr
        return bool(retention + message.sent_timestamp / 1000 > unix_time())  # type: ignore[operator]

    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]
    for name in _COUNTS:
        setattr(Queue, name, property(_reused(name, getattr(Queue, name).fget)))


def _reused(name: str, count: Callable[[Queue], int]) -> Callable[[Queue], int]:
    def reused(queue: Queue) -> int:
        counted: dict[str, tuple[float, int]] = queue.__dict__.setdefault("_local_stack_counts", {})
        at, value = counted.get(name, (-COUNTS_SECONDS, 0))
        if time.monotonic() - at >= COUNTS_SECONDS:
            value = count(queue)
            counted[name] = (time.monotonic(), value)
        return value

    return reused


def reuse_signing_certificates() -> None:
    """moto builds and signs a new X.509 certificate for every SNS notification it delivers, half the
    cost of a delivery (0.75 ms of 1.5). SNS signs every notification with a certificate it keeps for
    a long time; so does this, one per signing key. Only in this process, which runs moto alone."""
    build = x509.CertificateBuilder.sign
    built: dict[int, tuple[object, x509.Certificate]] = {}  # the key is kept: its id is not reused

    def sign(self: x509.CertificateBuilder, private_key: Any, *args: Any, **kwargs: Any) -> x509.Certificate:
        if id(private_key) not in built:
            built[id(private_key)] = (private_key, build(self, private_key, *args, **kwargs))
        return built[id(private_key)][1]

    x509.CertificateBuilder.sign = sign  # type: ignore[method-assign]


def serve(port: int) -> None:
    """Serve every moto service on LOOPBACK:``port`` until the process is ended (SIGTERM)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    speed_up_moto_sqs()
    reuse_signing_certificates()
    app = DomainDispatcherApplication(create_backend_app)
    make_server(LOOPBACK, port, app, threaded=True, request_handler=MotoRequestHandler).serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
