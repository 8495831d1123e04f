"""``make bench-scale``: the Diadoc poller at 10,000 boxes, beside the design it replaced, in one run.

Both designs run against the Diadoc simulator (over HTTP, with a little latency) and DynamoDB Local
(the template's cursor table), with an in-memory SNS that notes when each event arrived:

- **poller**: the one scheduled ``BoxPoller`` (``KIND.poller``) over the registered boxes, one run a
  simulated minute, inside Kontur's budget;
- **previous**: a schedule per box firing every minute: each tick runs the engine's ``Relay.run`` for
  every box at once (lease, load, drain, record, release), as many at a time as ``--previous-threads``
  (EventBridge would start them all), with no budget. Thousands of those a minute do not fit one
  2-core machine, so it is measured on ``--previous-boxes`` boxes of the same mix, and its figures per
  box are scaled up to the full population (marked so).

Simulated time runs at real speed inside a run (Kontur's budget is real requests in real seconds) and
jumps to the next tick between runs. The figures are counted at the simulator (requests, in flight),
on the boto3 table (writes) and at the publisher (arrivals).

    python -m tests.bench_scale [--boxes 10000] [--minutes 10] [--previous-boxes 500] [--previous-minutes 3]

Shorter: ``--boxes 2000 --minutes 5``; longer: ``--minutes 60`` (idle boxes then come round once).
Exits 1 when a target fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The layer is /opt/python in Lambda; here it is imported from the repository, as pytest does.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "relay"))
# Before Powertools builds its singletons: no X-Ray daemon here, and a run's info lines are noise.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "KonturFeedRelayBench")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "kontur-feed-relay-bench")

import argparse
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import boto3

from kontur_relay.aws.cursors import DynamoCursorStore
from kontur_relay.domain.engine import Relay
from kontur_relay.domain.model import Feed
from kontur_relay.feeds.diadoc.boxes import feed_id
from kontur_relay.feeds.diadoc.config import box_feed
from kontur_relay.feeds.diadoc.kind import BoxPoller, DiadocSettings, box_poller, source_uri
from kontur_relay.feeds.diadoc.source import DiadocSource
from kontur_relay.kontur.budget import Budget
from kontur_relay.observability import metrics
from kontur_relay.settings import Env
from local_stack.services import aws_environment, dynamodb_local, moto_server
from local_stack.simulators.diadoc import DiadocSimulator
from local_stack.simulators.diadoc_habits import Habits
from local_stack.simulators.identity import IdentitySimulator
from local_stack.template import Stack, provision_tables
from tests.bench_scale_report import Figures, report
from tests.bench_scale_world import (
    ACTIVE,
    DEFAULTS,
    EVENTS_PATH,
    TICK_SECONDS,
    ArrivalPublisher,
    CountingTable,
    Mix,
    Population,
    TickClock,
)

START = 1_800_000_000.0
#: The template's function timeout (Globals): each run's deadline, the poller's and each box's.
FUNCTION_SECONDS = 300.0


class Design(Protocol):
    def tick(self, time_left: Callable[[], float]) -> None: ...


@dataclass
class World:
    """One design's surroundings: its simulator and population, table, publisher and clock."""

    sim: DiadocSimulator
    population: Population
    table: CountingTable
    publisher: ArrivalPublisher
    clock: TickClock
    environment: dict[str, str]


class PollerDesign:
    def __init__(self, poller: BoxPoller) -> None:
        self.poller = poller
        #: Each run's report, as its log line has it.
        self.reports: list[dict[str, object]] = []

    def tick(self, time_left: Callable[[], float]) -> None:
        self.reports.append(self.poller.run({}, time_left))
        metrics.clear_metrics()  # a handler would flush them; here they would only pile up


class ScheduleDesign:
    """The previous design: every box's own schedule fires, each a ``Relay.run`` of that one box."""

    def __init__(self, relays: list[Relay], threads: int) -> None:
        self.relays = relays
        self.threads = threads
        self.failed = 0

    def tick(self, time_left: Callable[[], float]) -> None:
        def one(relay: Relay) -> None:
            try:
                relay.run(time_left)
            except Exception:  # noqa: BLE001 - one box's failed invocation; the other schedules go on
                self.failed += 1

        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="schedule") as pool:
            list(pool.map(one, self.relays))
        metrics.clear_metrics()


def make_world(
    identity: IdentitySimulator, mix: Mix, minutes: float, latency: float, seed: int, habits: Habits | None = None
) -> World:
    """The simulator (on the benchmark's clock, which dates its events), the tables, the population."""
    clock = TickClock(START)
    sim = DiadocSimulator(identity, seed=seed, clock=clock, realtime_dates=True, habits=habits).start()
    credentials = sim.setup(boxes=0, backlog=0)
    secret = f"diadoc-bench-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager").create_secret(Name=secret, SecretString=json.dumps(credentials))
    # The template's tables, as make run and the tests make them: its cursors and the boxes' memories.
    tables = provision_tables(Stack(name=f"bench-{uuid.uuid4().hex[:8]}"), boto3.client("dynamodb"))
    name = tables["CursorsTable"]
    population = Population.build(sim, mix, START, minutes, seed)
    sim.load.latency = latency
    environment = {
        "CURSORS_TABLE": name,
        "EVENT_MEMORY_TABLE": tables["EventMemoryTable"],
        "EVENTS_TOPIC_ARN": "arn:aws:sns:eu-central-1:000000000000:bench",  # the publisher is in memory
        "DIADOC_API_URL": sim.url,
        "DIADOC_CREDENTIALS_SECRET": secret,
    }
    table = CountingTable(boto3.resource("dynamodb").Table(name))
    return World(sim, population, table, ArrivalPublisher(clock), clock, environment)


def build_poller(world: World, settings: dict[str, str]) -> tuple[PollerDesign, BoxPoller]:
    environment = Env({**world.environment, **settings})

    def tables(name: str) -> Any:
        return world.table if name == world.environment["CURSORS_TABLE"] else boto3.resource("dynamodb").Table(name)

    poller = box_poller(environment, publisher=world.publisher, clock=world.clock, tables=tables)
    started = time.monotonic()
    world.population.register(
        poller.boxes.registry, poller.engine.polling.min_interval, poller.engine.polling.max_interval
    )
    print(f"  registered {world.population.mix.boxes:,} boxes in {time.monotonic() - started:.0f} s", flush=True)
    world.table.take_writes()  # registration is not polling
    return PollerDesign(poller), poller


def build_schedules(world: World, threads: int) -> ScheduleDesign:
    settings = DiadocSettings.from_env(Env(world.environment))
    # The per-box functions had no budget: a Budget with no limits only counts.
    api = settings.api(Budget(), pool_size=threads)
    cursors = DynamoCursorStore(world.table, clock=world.clock)  # type: ignore[arg-type]
    relays = [
        Relay(
            Feed(id=feed_id(box), kind="diadoc", source_uri=source_uri(settings.api_url, box)),
            DiadocSource(api, box_feed({"boxId": box}, DEFAULTS), version=settings.version),
            world.publisher,
            cursors,
            safety_margin=30,
            clock=world.clock,
        )
        for box in world.population.classes
    ]
    return ScheduleDesign(relays, threads)


def simulate(name: str, design: Design, world: World, minutes: float, drain_minutes: float) -> Figures:
    """One run a tick for ``minutes`` of traffic, then on until every event is delivered (at most
    ``drain_minutes`` more). A run longer than a tick makes the ticks it overlapped find the lease
    busy, so the next run starts at the first tick after it ended."""
    population, clock, sim = world.population, world.clock, world.sim
    figures = Figures(name, population.mix.boxes)
    sim.load.reset()
    tick = START
    end, last = START + minutes * TICK_SECONDS, START + (minutes + drain_minutes) * TICK_SECONDS
    while True:
        clock.set(tick)
        population.release(tick)
        mark = len(sim.journal)
        # What a function prints (its metrics, as CloudWatch's embedded format) is noise here.
        with population.flowing(clock), open(os.devnull, "w") as quiet, redirect_stdout(quiet):
            design.tick(partial(_time_left, clock, tick + FUNCTION_SECONDS))
        ended = clock()
        _account(figures, world, mark)
        figures.runs += 1
        figures.run_seconds.append(ended - tick)
        undelivered = sum(1 for event in population.appeared if event not in world.publisher.arrived)
        print(
            f"  {name:<8} minute {(tick - START) / 60:>3.0f}: {figures.polls[-1]:>6,} polls, "
            f"run {ended - tick:5.1f} s, {undelivered:,} events on their way",
            flush=True,
        )
        steps = max(math.ceil((ended - tick) / TICK_SECONDS), 1)
        figures.overran += steps - 1
        tick += steps * TICK_SECONDS
        if tick >= last or (tick >= end and not undelivered and not population.pending()):
            break
    figures.minutes = (tick - START) / TICK_SECONDS
    figures.most_per_second, figures.most_in_flight = sim.load.most_per_second(), sim.load.most_in_flight
    for event, (moment, kind) in population.appeared.items():
        arrived = world.publisher.arrived.get(event)
        if arrived is not None:
            figures.delays[kind].append(arrived - moment)
            figures.delivered += 1
    figures.generated = len(population.appeared)
    figures.duplicates = world.publisher.duplicates
    figures.scans, figures.scanned_items = world.table.scans, world.table.scanned_items
    figures.read_units, figures.scan_seconds = world.table.read_units, world.table.scan_seconds
    return figures


def _time_left(clock: TickClock, deadline: float) -> float:
    return deadline - clock()


def _account(figures: Figures, world: World, mark: int) -> None:
    """One run's polls and writes. An idle poll is a GetNewEvents request for a box that published
    nothing in the run; its writes are those on its own item (the poller's lease is counted apart)."""
    calls = [call for call in world.sim.journal[mark:] if call.path == EVENTS_PATH]
    requests = Counter(call.query.get("boxId", "") for call in calls)
    for call in calls:
        box = call.query.get("boxId", "")
        if world.population.classes.get(box) == ACTIVE:
            moment = world.clock.simulated(call.at)
            if box in figures._last_poll:
                figures.active_gaps.append(moment - figures._last_poll[box])
            figures._last_poll[box] = moment
    published = world.publisher.take_counts()
    writes = world.table.take_writes()
    figures.polls.append(sum(requests.values()))
    idle = {feed_id(box): count for box, count in requests.items() if not published[feed_id(box)]}
    figures.idle_polls += sum(idle.values())
    figures.idle_writes += sum(writes[feed] for feed in idle)
    figures.other_writes += sum(count for feed, count in writes.items() if feed not in idle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=10_000, help="registered boxes (default 10000)")
    parser.add_argument("--active", type=float, default=0.01, help="share of boxes with a trickle (default 0.01)")
    parser.add_argument("--active-rate", type=float, default=2.0, help="events/min of an active box (default 2)")
    parser.add_argument("--backlogs", type=int, default=3, help="boxes with a backlog (default 3)")
    parser.add_argument("--backlog-events", type=int, default=5_000, help="events in each backlog (default 5000)")
    parser.add_argument("--minutes", type=float, default=10, help="simulated minutes of traffic (default 10)")
    parser.add_argument("--drain-minutes", type=float, default=10, help="more minutes, at most, to deliver the rest")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the simulator holds each answer")
    parser.add_argument("--previous-boxes", type=int, default=500, help="boxes the previous design is measured on")
    parser.add_argument("--previous-minutes", type=float, default=3, help="its simulated minutes (default 3)")
    parser.add_argument("--previous-threads", type=int, default=50, help="its box runs at once (default 50)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a DIADOC_* setting of the poller"
    )
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    mix = Mix(args.boxes, round(args.boxes * args.active), args.backlogs, args.backlog_events, args.active_rate)
    small = mix.scaled(min(args.previous_boxes, args.boxes))
    began = time.monotonic()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
    load = ", ".join(f"{figure:.1f}" for figure in os.getloadavg())
    print(f"Machine: {os.cpu_count()} CPUs, load average {load} at the start", flush=True)
    print(f"Population: {mix.describe()}", flush=True)
    print("Starting DynamoDB Local, moto (the credentials secret only) and the simulators ...", flush=True)
    with dynamodb_local() as dynamodb, moto_server() as moto, IdentitySimulator(token_lifetime=3600) as identity:
        os.environ.update(aws_environment(moto, dynamodb))
        world = make_world(identity, mix, args.minutes, args.latency, args.seed)
        design, poller = build_poller(world, dict(item.split("=", 1) for item in args.set))
        ours = simulate("poller", design, world, args.minutes, args.drain_minutes)
        world.sim.stop()

        old_world = make_world(identity, small, args.previous_minutes, args.latency, args.seed)
        schedules = build_schedules(old_world, args.previous_threads)
        theirs = simulate("previous", schedules, old_world, args.previous_minutes, args.drain_minutes)
        theirs.failed_runs = schedules.failed
        old_world.sim.stop()

    print()
    print(f"Diadoc at scale: {mix.describe()}")
    print(
        f"Previous design measured on {small.describe()}, {args.previous_threads} box runs at a time; "
        f"{theirs.failed_runs} of its box runs failed."
    )
    lines = report(
        ours,
        theirs,
        mix,
        budget=poller.budget,
        min_interval=poller.engine.polling.min_interval,
        previous_threads=args.previous_threads,
    )
    print("\n".join(lines))
    load = ", ".join(f"{figure:.1f}" for figure in os.getloadavg())
    print(
        f"\n{time.monotonic() - began:.0f} s in all, services included; "
        f"{os.cpu_count()} CPUs, load average {load} at the end; simulator latency {args.latency * 1000:.0f} ms."
    )
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
