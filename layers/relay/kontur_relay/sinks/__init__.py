"""Where the relay delivers events: one module per sink, each an adapter behind the engine's
``Publisher`` port (``domain.ports``), one chosen per deployment by ``SINK`` (the template's Sink).

A sink module has ``from_env(env) -> Publisher``: it reads its own settings (nothing else knows
them), builds its clients, and offloads an event over its own size limit to the payload bucket
(``offload``). What the sinks share lives beside them: the message an event becomes (``message``),
and batching, ordering and retrying what a sink refused (``delivery``). A sink's module is imported
only when it is the configured one.
"""

from __future__ import annotations

import importlib

from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.domain.ports import Publisher
from kontur_relay.settings import Env

#: Every sink, as its module here is named; the first is the default.
SINKS = ("sns", "eventbridge", "sqs", "webhook")


def from_env(env: Env) -> Publisher:
    """The publisher of the sink SINK names (``sns`` when unset), built from its own settings."""
    name = env.text("SINK", SINKS[0])
    if name not in SINKS:
        raise ConfigurationError(f"SINK={name!r} is not a sink; known: {', '.join(SINKS)}")
    publisher: Publisher = importlib.import_module(f"{__name__}.{name}").from_env(env)
    return publisher
