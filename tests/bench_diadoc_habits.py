"""``make bench-diadoc``: the Diadoc poller against a Diadoc that shows every habit integrators report.

Every box is active; the simulator (over HTTP, a little latency) serves siblings under one IndexKey,
some of them seconds late, events again under new keys, and events minutes late behind newer ones
(``local_stack.simulators.diadoc_habits``, ``Habits.every``). The poller (``box_poller``) runs one
run a simulated minute, with the cursors, the box registry and the boxes' memories in DynamoDB
Local, as in ``make bench-scale`` (``tests/bench_scale.py``, whose world and loop this reuses). After
the traffic it runs on until every event the simulator served has arrived, or ``--drain-minutes``.

Counted where the relay cannot flatter itself: every EventId the simulator served (each once,
whatever the habits did to it) against what reached the publisher; requests at the simulator, by
kind (a poll, or reconciliation: a read bounded by ``timestampToTicks``, a ``GetLastEvent``).

    python -m tests.bench_diadoc_habits              # 200 boxes, 100,000 events (a few minutes)
    python -m tests.bench_diadoc_habits --full       # 1,000 boxes, 1,000,000 events (the target)

Exits 1 when a target fails: nothing lost, duplicates at most 0.1% of the events, reconciliation at
most 10% of the request budget, the budget held at the simulator.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "relay"))
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayBench")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay-bench")

import argparse
import logging
import time
from collections import Counter

from kontur_relay.kontur.budget import Budget
from local_stack.services import aws_environment, dynamodb_local, moto_server
from local_stack.simulators.diadoc_habits import Habits
from local_stack.simulators.identity import IdentitySimulator
from tests.bench_scale import World, build_poller, make_world, simulate
from tests.bench_scale_report import Figures
from tests.bench_scale_world import ACTIVE, EVENTS_PATH, Mix, percentile

LAST_EVENT = "/V2/GetLastEvent"
#: Kontur's own limit per integrator: this benchmark measures the habits, not a small budget.
SETTINGS = {"DIADOC_MAX_REQUESTS_PER_SECOND": "100"}


def requests_by_kind(world: World) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for call in world.sim.journal:
        if call.path == LAST_EVENT:
            kinds["check"] += 1
        elif call.path == EVENTS_PATH:
            kinds["reconciliation" if "timestampToTicks" in call.query else "poll"] += 1
    return kinds


def served(world: World) -> tuple[set[str], Counter[str]]:
    """Every EventId the simulator serves now, and how many entries of each habit it holds."""
    events: set[str] = set()
    habits: Counter[str] = Counter()
    for box in world.population.classes:
        entries = world.sim.entries(box)
        events.update(world.sim.event_ids(box))
        keys = Counter(entry.index_key for entry in entries)
        seen: set[str] = set()
        for entry in entries:
            habits["entries"] += 1
            habits["sharing a key"] += keys[entry.index_key] > 1
            habits["served again"] += entry.event_id in seen
            habits["served late"] += entry.visible_at > 0
            seen.add(entry.event_id)
    return events, habits


def report(figures: Figures, world: World, budget: Budget, seconds: float, runs: list[dict[str, object]]) -> list[str]:
    events, habits = served(world)
    arrived = set(world.publisher.arrived)
    lost = events - arrived
    kinds = requests_by_kind(world)
    background = kinds["reconciliation"] + kinds["check"]
    total = sum(kinds.values())
    capacity = (budget.per_second or 0) * seconds
    recovered = sum(_count(run, "recovered") for run in runs)
    suppressed = sum(_count(run, "duplicates") for run in runs)
    delays = figures.delays[ACTIVE]
    share = background / capacity if capacity else float("nan")
    lines = [
        f"events served: {len(events):,} ({habits['entries']:,} entries: {habits['sharing a key']:,} sharing a key, "
        f"{habits['served late']:,} served late, {habits['served again']:,} served again)",
        f"events delivered: {len(events & arrived):,}; lost: {len(lost):,}; "
        f"duplicates: {world.publisher.duplicates:,} ({world.publisher.duplicates / max(len(events), 1):.4%})",
        f"recovered by reconciliation: {recovered:,}; dropped as served again: {suppressed:,}",
        f"requests at the simulator: {total:,} = {kinds['poll']:,} polls + {kinds['reconciliation']:,} "
        f"reconciliation reads + {kinds['check']:,} checks",
        f"reconciliation: {background / max(total, 1):.1%} of the requests, {share:.1%} of the budget "
        f"({budget.per_second}/s over {seconds:.0f} s of runs)",
        f"delay from served to published: p50 {percentile(delays, 0.5):.0f} s, p99 {percentile(delays, 0.99):.0f} s",
        f"requests/s, most: {figures.most_per_second}; in flight, most: {figures.most_in_flight}",
        f"runs: {figures.runs} over {figures.minutes:.0f} simulated minutes, "
        f"mean {sum(figures.run_seconds) / max(figures.runs, 1):.1f} s",
        "",
    ]
    checks = [
        (not lost, f"lost: {len(lost):,} of {len(events):,} events" + (f", e.g. {sorted(lost)[:3]}" if lost else "")),
        (
            world.publisher.duplicates <= 0.001 * len(events),
            f"duplicates: {world.publisher.duplicates:,}, at most 0.1% of {len(events):,}",
        ),
        (share <= 0.10, f"reconciliation: {share:.1%} of the budget, at most 10%"),
        (figures.most_in_flight <= (budget.max_in_flight or 0), f"in flight: most {figures.most_in_flight}"),
        (figures.most_per_second <= (budget.per_second or 0), f"requests/s: most {figures.most_per_second}"),
    ]
    return lines + [f"{'PASS' if ok else 'FAIL'} {text}" for ok, text in checks]


def _load() -> str:
    return ", ".join(f"{figure:.1f}" for figure in os.getloadavg())


def _count(run: dict[str, object], name: str) -> int:
    value = run.get(name, 0)
    return value if isinstance(value, int) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="1,000 boxes and 1,000,000 events (the target)")
    parser.add_argument("--boxes", type=int, default=200, help="boxes, every one active (default 200)")
    parser.add_argument("--events", type=int, default=100_000, help="events over the traffic (default 100,000)")
    parser.add_argument("--minutes", type=float, default=10, help="simulated minutes of traffic (default 10)")
    parser.add_argument("--drain-minutes", type=float, default=30, help="minutes, at most, to deliver the rest")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the simulator holds each answer")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a DIADOC_* setting")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.full:
        args.boxes, args.events, args.minutes = 1_000, 1_000_000, 20

    rate = args.events / args.boxes / args.minutes
    mix = Mix(args.boxes, args.boxes, 0, 0, rate)
    habits = Habits.every(seed=args.seed)
    began = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    print(f"Machine: {os.cpu_count()} CPUs, load average {_load()}")
    print(f"{args.boxes:,} active boxes, {rate:g} events a minute each for {args.minutes:g} minutes")
    print(f"Diadoc's habits: {habits.describe()}")
    print("Starting DynamoDB Local, moto and the simulators ...", flush=True)
    with dynamodb_local() as dynamodb, moto_server() as moto, IdentitySimulator(token_lifetime=3600) as identity:
        os.environ.update(aws_environment(moto, dynamodb))
        world = make_world(identity, mix, args.minutes, args.latency, args.seed, habits=habits)
        design, poller = build_poller(world, {**SETTINGS, **dict(item.split("=", 1) for item in args.set)})
        figures = simulate("poller", design, world, args.minutes, args.drain_minutes)
        lines = report(figures, world, poller.budget, sum(figures.run_seconds), design.reports)
        world.sim.stop()
    print()
    print("\n".join(lines))
    print(f"\n{time.monotonic() - began:.0f} s in all; load average {_load()} at the end.")
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
