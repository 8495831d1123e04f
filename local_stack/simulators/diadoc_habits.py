"""What Diadoc's feed does that its documentation does not say, as integrators reported it on Diadoc's
public trackers (/work/shared/docs/diadoc-events-api.md): each habit switchable, seeded, so that a
test or a benchmark meets exactly the same feed again.

- **shared keys** (diadocsdk-csharp#1083): signing a draft makes a Patch and a Message with one
  timestamp and one IndexKey. ``afterIndexKey`` and ``afterEventId`` read strictly after the key,
  so a page that ends on the first hides the second; ``timestampFromTicks`` returns both.
- **late siblings**: the second of such a pair is served a few seconds after its twin.
- **re-served events** (diadocsdk-java#229): an event seen before comes back later in the feed,
  with its EventId, under a new IndexKey.
- **late events** (diadocsdk-csharp#1107, #235): an event is served minutes after its own time,
  behind newer events that were served meanwhile; a read after a key past it never returns it.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field

#: The habits by name, as the local stack's ``--diadoc-habits`` names them.
NAMES = ("shared_keys", "late_siblings", "reserved", "late")


@dataclass
class Habits:
    """Shares of events that show each habit (0: never), and how late the late ones are (seconds
    of the simulator's clock)."""

    #: Share of new events that get a sibling sharing their IndexKey and timestamp.
    shared_keys: float = 0.0
    #: Share of those siblings served only ``sibling_delay`` seconds after their twin.
    late_siblings: float = 0.0
    sibling_delay: tuple[float, float] = (2.0, 10.0)
    #: Share of new events after which one of the box's last ``reserve_depth`` entries is served again.
    reserved: float = 0.0
    reserve_depth: int = 50
    #: Share of new events served ``late_delay`` seconds after their own time.
    late: float = 0.0
    late_delay: tuple[float, float] = (60.0, 600.0)
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Their own generator: switching a habit on changes which events have habits, never the events.
        self._rng = random.Random(self.seed)

    @classmethod
    def every(cls, *, seed: int = 0, scale: float = 1.0, only: Collection[str] = NAMES) -> Habits:
        """Every habit (or those named in ``only``) at a share a busy box shows in an hour or two;
        ``scale`` shortens the delays (the local stack's accelerated clock)."""
        unknown = set(only) - set(NAMES)
        if unknown:
            raise ValueError(f"no Diadoc habit {', '.join(sorted(unknown))}; known: {', '.join(NAMES)}")
        return cls(
            shared_keys=0.05 if {"shared_keys", "late_siblings"} & set(only) else 0.0,
            late_siblings=0.2 if "late_siblings" in only else 0.0,
            sibling_delay=(2.0 * scale, 10.0 * scale),
            reserved=0.005 if "reserved" in only else 0.0,
            late=0.002 if "late" in only else 0.0,
            late_delay=(60.0 * scale, 600.0 * scale),
            seed=seed,
        )

    def describe(self) -> str:
        shares = (
            ("siblings", self.shared_keys),
            ("of them late", self.late_siblings if self.shared_keys else 0.0),
            ("served again", self.reserved),
            ("late", self.late),
        )
        return ", ".join(f"{share:.1%} {name}" for name, share in shares if share) or "none"

    @property
    def any(self) -> bool:
        return bool(self.shared_keys or self.reserved or self.late)

    def sibling(self) -> float | None:
        """None: no sibling for this event; else the seconds after its twin that it is served."""
        if not self.shared_keys or self._rng.random() >= self.shared_keys:
            return None
        return self._delay(self.sibling_delay) if self._rng.random() < self.late_siblings else 0.0

    def serve_again(self, entries: int) -> int | None:
        """None, or which of the last ``entries`` entries (counted back from the newest, 1..) comes back."""
        if not self.reserved or not entries or self._rng.random() >= self.reserved:
            return None
        return self._rng.randint(1, min(entries, self.reserve_depth))

    def lateness(self) -> float:
        """Seconds after its own time that a new event is served (0: at once)."""
        if not self.late or self._rng.random() >= self.late:
            return 0.0
        return self._delay(self.late_delay)

    def _delay(self, bounds: tuple[float, float]) -> float:
        return self._rng.uniform(*bounds)
