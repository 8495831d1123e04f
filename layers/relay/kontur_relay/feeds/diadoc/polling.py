"""The Diadoc poller's settings, from the Diadoc* template parameters: how the boxes share the budget
and how often each is polled (the relay's ``Polling``), and how they are reconciled."""

from __future__ import annotations

from dataclasses import dataclass

from kontur_relay.domain.errors import ConfigurationError
from kontur_relay.domain.fleet.model import Polling
from kontur_relay.settings import Env


def polling(env: Env) -> Polling:
    """The budget and the intervals of every box, and the share of the budget reconciliation may take."""
    settings = Polling(
        max_in_flight=env.whole("DIADOC_MAX_IN_FLIGHT", 4),
        per_second=env.whole("DIADOC_MAX_REQUESTS_PER_SECOND", 20),
        min_interval=env.number("DIADOC_MIN_POLL_SECONDS", 60),
        max_interval=env.number("DIADOC_MAX_POLL_SECONDS", 3600),
        pages_per_turn=env.whole("DIADOC_PAGES_PER_TURN", 5),
        period=env.number("SCHEDULE_PERIOD_SECONDS", 60),
        share=env.whole("DIADOC_RECONCILE_SHARE", 10, high=100) / 100,
    )
    if not 0 < settings.min_interval <= settings.max_interval:
        raise ConfigurationError("DIADOC_MIN_POLL_SECONDS must be positive and at most DIADOC_MAX_POLL_SECONDS")
    return settings


@dataclass(frozen=True)
class Reconciling:
    """How the boxes are reconciled (``reconcile``, ``background``) and what they remember (``memory``)."""

    #: How far back a box's reconciliation reads by time (DiadocReconcileWindowSeconds).
    window: float = 3600.0
    #: How often a box with events in the window is reconciled (DiadocReconcileEverySeconds).
    every: float = 300.0
    #: How often each box's newest event is checked (DiadocLastEventCheckSeconds).
    check_every: float = 21600.0
    #: The schedule's period (SCHEDULE_PERIOD_SECONDS): the checks due since the last run's.
    period: float = 60.0

    @classmethod
    def from_env(cls, env: Env) -> Reconciling:
        reconciling = cls(
            window=env.number("DIADOC_RECONCILE_WINDOW_SECONDS", 3600),
            every=env.number("DIADOC_RECONCILE_EVERY_SECONDS", 300),
            check_every=env.number("DIADOC_LAST_EVENT_CHECK_SECONDS", 21600),
            period=env.number("SCHEDULE_PERIOD_SECONDS", 60),
        )
        if min(reconciling.window, reconciling.every, reconciling.check_every) <= 0:
            raise ConfigurationError("DIADOC_RECONCILE_* and DIADOC_LAST_EVENT_CHECK_SECONDS must be positive")
        return reconciling

    @property
    def memory_seconds(self) -> float:
        """How long a box remembers what it published: a pass reads back a window and a period,
        and a pass may come late; twice that."""
        return 2 * (self.window + self.every)
