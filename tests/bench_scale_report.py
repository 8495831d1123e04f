"""The figures of ``make bench-scale`` (``tests/bench_scale.py``), and the table and targets it prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from kontur_relay.kontur.budget import Budget
from tests.bench_scale_world import ACTIVE, CLASSES, Mix, percentile


@dataclass
class Figures:
    name: str
    boxes: int
    minutes: float = 0.0
    runs: int = 0
    overran: int = 0
    polls: list[int] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    most_per_second: int = 0
    most_in_flight: int = 0
    delays: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in CLASSES})
    generated: int = 0
    delivered: int = 0
    duplicates: int = 0
    idle_polls: int = 0
    idle_writes: int = 0
    other_writes: int = 0
    scans: int = 0
    scanned_items: int = 0
    read_units: float = 0.0
    scan_seconds: float = 0.0
    failed_runs: int = 0
    #: Simulated seconds between two polls of one active box.
    active_gaps: list[float] = field(default_factory=list)
    _last_poll: dict[str, float] = field(default_factory=dict)

    @property
    def polls_per_minute(self) -> float:
        return sum(self.polls) / self.minutes if self.minutes else 0.0

    @property
    def writes_per_idle_poll(self) -> float:
        return self.idle_writes / self.idle_polls if self.idle_polls else float("nan")


def _delay(figures: Figures, kind: str) -> str:
    found = figures.delays[kind]
    if not found:
        return "-"
    return f"{percentile(found, 0.5):.0f} / {percentile(found, 0.99):.0f} s"


def report(
    poller: Figures, previous: Figures, mix: Mix, *, budget: Budget, min_interval: float, previous_threads: int
) -> list[str]:
    """The table of both designs, then the poller's targets as PASS/FAIL lines."""
    scale = mix.boxes / previous.boxes
    rows: list[tuple[str, str, str, str]] = [
        ("boxes", f"{poller.boxes:,}", f"{previous.boxes:,} (measured)", ""),
        ("simulated minutes (runs)", f"{poller.minutes:.0f} ({poller.runs})", f"{previous.minutes:.0f}", ""),
        ("run seconds, mean / most", _mean_most(poller.run_seconds), _mean_most(previous.run_seconds), "< 60"),
        ("polls per simulated minute", f"{poller.polls_per_minute:,.0f}", f"{previous.polls_per_minute:,.0f}", ""),
        (
            f"  ... at {mix.boxes:,} boxes",
            f"{poller.polls_per_minute:,.0f}",
            f"{previous.polls_per_minute * scale:,.0f} (scaled)",
            "",
        ),
        (
            "requests/s, most (simulator)",
            f"{poller.most_per_second}",
            f"{previous.most_per_second}",
            f"<= {budget.per_second}",
        ),
        (
            f"  ... at {mix.boxes:,} boxes, on average",
            f"{poller.polls_per_minute / 60:,.1f}",
            f"{previous.polls_per_minute * scale / 60:,.0f} (scaled)",
            f"<= {budget.per_second}",
        ),
        (
            "in flight, most (simulator)",
            f"{poller.most_in_flight}",
            f"{previous.most_in_flight} ({previous_threads} threads)",
            f"<= {budget.max_in_flight}",
        ),
    ]
    for kind in CLASSES:
        if poller.delays[kind] or previous.delays[kind]:
            rows.append((f"delay {kind}, p50 / p99", _delay(poller, kind), _delay(previous, kind), ""))
    rows.append(
        (
            "active box's polls apart, p50 / p99",
            f"{percentile(poller.active_gaps, 0.5):.0f} / {percentile(poller.active_gaps, 0.99):.0f} s",
            f"{percentile(previous.active_gaps, 0.5):.0f} / {percentile(previous.active_gaps, 0.99):.0f} s",
            "",
        )
    )
    rows += [
        ("events delivered / generated", _delivered(poller), _delivered(previous), "all"),
        ("writes per idle poll", f"{poller.writes_per_idle_poll:.2f}", f"{previous.writes_per_idle_poll:.2f}", "<= 1"),
        ("other writes (cursor, lease)", f"{poller.other_writes:,}", f"{previous.other_writes:,}", ""),
        (
            "scan per run: items / RCU / s",
            f"{poller.scanned_items / max(poller.runs, 1):,.0f} / {poller.read_units / max(poller.runs, 1):,.0f}"
            f" / {poller.scan_seconds / max(poller.runs, 1):.1f}",
            "none",
            "",
        ),
    ]
    width = max(len(row[0]) for row in rows)
    lines = [f"{'':<{width}}  {'poller':<22}  {'previous (schedule per box)':<40}  target"]
    lines += [f"{a:<{width}}  {b:<22}  {c:<40}  {d}" for a, b, c, d in rows]
    active = poller.delays[ACTIVE]
    p99 = percentile(active, 0.99) if active else float("nan")
    checks = [
        (
            poller.most_in_flight <= (budget.max_in_flight or 0),
            f"in flight: most {poller.most_in_flight} at the simulator, budget {budget.max_in_flight}",
        ),
        (
            poller.most_per_second <= (budget.per_second or 0),
            f"requests/s: most {poller.most_per_second} in any second at the simulator, budget {budget.per_second}",
        ),
        (
            poller.delivered == poller.generated,
            f"delivered: {poller.delivered:,} of {poller.generated:,} events ({poller.duplicates} duplicates)",
        ),
        (
            bool(active) and p99 <= 2 * min_interval,
            f"active delay: p99 {p99:.0f} s, at most {2 * min_interval:.0f} s (twice the minimum interval)",
        ),
        (
            poller.overran == 0,
            f"runs: {poller.runs} over {poller.minutes:.0f} ticks, {poller.overran} ticks skipped (a run still"
            f" holding the lease), none allowed",
        ),
        (
            poller.writes_per_idle_poll <= 1,
            f"writes: {poller.writes_per_idle_poll:.2f} per idle poll ({poller.idle_polls:,} idle polls), at most 1",
        ),
    ]
    lines.append("")
    lines += [f"{'PASS' if ok else 'FAIL'} {text}" for ok, text in checks]
    return lines


def _mean_most(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1f} / {max(values):.1f}" if values else "-"


def _delivered(figures: Figures) -> str:
    return f"{figures.delivered:,} / {figures.generated:,}"
