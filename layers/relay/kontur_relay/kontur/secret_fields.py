"""The fields of a credentials secret, checked where they are read: a value that cannot travel as
it is (a trailing line break from ``jq --rawfile``, a control character) is a ConfigurationError that
names the field and never quotes the value. Unchecked, it reaches the HTTP client, whose error quotes
the whole header, credential included, into the logs, the feed's row and the failed-runs queue.

The errors of a request are described the same way: by their types, never by their messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kontur_relay.domain.errors import ConfigurationError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What a header may carry: visible ASCII, inner spaces (RFC 9110's field value, without obs-text,
#: which clients encode differently).
_HEADER_VALUE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")


def field(config: Mapping[str, Any], name: str, *, header: bool = False) -> str | None:
    """The secret's field ``name``, or None when it is absent or empty. ``header``: the value is sent
    in an HTTP header (a token, an api-key, a session id), so only visible ASCII will do."""
    value = config.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} in the credentials secret must be a string, not {type(value).__name__}")
    if _CONTROL.search(value):
        raise ConfigurationError(
            f"{name} in the credentials secret holds a control character (a line break at its end, as "
            "`jq --rawfile` leaves one?): put the value without it"
        )
    if header and not _HEADER_VALUE.match(value):
        raise ConfigurationError(
            f"{name} in the credentials secret is sent in an HTTP header: printable ASCII only, without "
            "spaces at its ends"
        )
    return value


def required(config: Mapping[str, Any], name: str, *, header: bool = False) -> str:
    value = field(config, name, header=header)
    if value is None:
        raise ConfigurationError(f"the credentials secret lacks {name}")
    return value


def sendable(value: str) -> bool:
    """Whether a credential Kontur issued (a token) can be sent in a header as it is."""
    return bool(_HEADER_VALUE.match(value))


def described(error: BaseException) -> str:
    """``error`` by its type and the types of what caused it, e.g. ``ConnectionError (MaxRetryError,
    NewConnectionError)``: never its message, which for a request can quote the request's headers."""
    names: list[str] = []
    seen: set[int] = set()
    waiting: list[BaseException] = [error]
    while waiting:
        current = waiting.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        names.append(type(current).__name__)
        # requests wraps urllib3's error as its first argument; urllib3 keeps the cause as ``reason``.
        inner = [current.args[0] if current.args else None, getattr(current, "reason", None), current.__cause__]
        waiting += [item for item in inner if isinstance(item, BaseException)]
    first, *causes = list(dict.fromkeys(names))
    return f"{first} ({', '.join(causes)})" if causes else first
