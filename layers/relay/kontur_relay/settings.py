"""A function's configuration, read from its environment once per container into typed models.

Every variable a function reads is named in one place (the model that reads it) and checked when
the container starts: a missing or malformed one is a ConfigurationError naming it, never a
default silently taken instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from kontur_relay.domain.errors import ConfigurationError


class Env:
    """Typed reads of environment variables; empty counts as unset."""

    def __init__(self, variables: Mapping[str, str] | None = None) -> None:
        self.variables = os.environ if variables is None else variables

    def text(self, name: str, default: str | None = None) -> str:
        value = self.variables.get(name) or default
        if not value:
            raise ConfigurationError(f"the environment variable {name} is not set")
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.variables.get(name)
        try:
            return float(raw) if raw else default
        except ValueError as error:
            raise ConfigurationError(f"{name}={raw!r} is not a number") from error

    def whole(self, name: str, default: int, *, low: int = 1, high: int | None = None) -> int:
        value = self.number(name, default)
        if value != int(value) or value < low or (high is not None and value > high):
            bounds = f"from {low}" + (f" to {high}" if high is not None else "")
            raise ConfigurationError(f"{name}={value:g} is not a whole number {bounds}")
        return int(value)


@dataclass(frozen=True)
class RelaySettings:
    """What every poller shares: where cursors live, how close to its deadline a run stops reading.
    Where events go is the sink's own business (``kontur_relay.sinks``)."""

    cursors_table: str
    safety_margin: float
    #: How long a run's lease lasts unless renewed: how long a run that died holds its feed up.
    lease_seconds: float

    @classmethod
    def from_env(cls, env: Env) -> RelaySettings:
        return cls(
            cursors_table=env.text("CURSORS_TABLE"),
            safety_margin=env.number("RELAY_SAFETY_MARGIN_SECONDS", 30),
            lease_seconds=env.number("LEASE_SECONDS", 60),
        )
