"""``python -m local_stack``'s command line: its options, checked together."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from local_stack import feeds
from local_stack.scenarios import SimulationOptions
from local_stack.simulators.diadoc_habits import NAMES


@dataclass
class Options:
    duration: float | None = None
    speed: float = 30.0
    period: float | None = None
    kontur: str = "sim"
    credentials: Path | None = None
    aws: str = "local"
    stack_name: str | None = None
    feeds: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    #: What the simulators generate and how often they fail (with the simulators only).
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    catch_up: float = 60.0
    demo_queues: bool | None = None
    #: Share of the webhook receiver's requests that fail or come slowly (Sink webhook).
    webhook_faults: float = 0.0
    view: str = "auto"
    log_level: str = "INFO"


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack",
        description="Run the Kontur Feed Relay on this machine: local AWS services, Kontur simulators, "
        "the functions on an accelerated schedule, and a live view.",
    )
    parser.add_argument("--duration", type=float, help="seconds of traffic; then catch up, summarise, exit")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--speed", type=float, default=30.0, help="clock acceleration (default 30: 1 minute = 2 s)")
    clock.add_argument("--period", type=float, help="seconds between ticks of the most frequent schedule")
    parser.add_argument("--kontur", choices=("sim", "real"), default="sim", help="simulators (default) or Kontur")
    parser.add_argument("--credentials", type=Path, help="JSON file of real Kontur credentials, by feed")
    parser.add_argument("--aws", choices=("local", "real"), default="local", help="local services or a real account")
    parser.add_argument("--stack-name", help="the deployed stack (--aws real); the local stack's name otherwise")
    parser.add_argument("--feed", action="append", default=[], choices=sorted(feeds.KITS), help="only these feeds")
    parser.add_argument(
        "--parameter", action="append", default=[], metavar="NAME=VALUE", help="a template parameter (repeatable)"
    )
    parser.add_argument("--backlog", type=int, default=300, help="events waiting in each feed at the start (sim)")
    parser.add_argument("--traffic-interval", type=float, default=0.25, help="seconds between traffic ticks (sim)")
    parser.add_argument("--faults", type=float, default=0.0, help="share of API requests that fail (sim), e.g. 0.1")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated traffic and faults")
    parser.add_argument(
        "--diadoc-habits",
        default="all",
        metavar="LIST",
        help=f"Diadoc's habits in the simulated traffic: all (default), none, or some of {','.join(NAMES)}",
    )
    parser.add_argument(
        "--sink",
        choices=("sns", "eventbridge", "sqs", "webhook"),
        help="where events go (the Sink parameter; default sns): the webhook to a local receiver",
    )
    parser.add_argument(
        "--webhook-faults", type=float, default=0.0, help="share of webhook requests the receiver fails or slows"
    )
    parser.add_argument("--catch-up", type=float, default=60.0, help="seconds allowed to catch up after --duration")
    queues = parser.add_mutually_exclusive_group()
    queues.add_argument(
        "--demo-queues",
        dest="demo_queues",
        action="store_true",
        default=None,
        help="subscribe demo queues (the default with local AWS; with --aws real, made for the run and deleted)",
    )
    queues.add_argument("--no-demo-queues", dest="demo_queues", action="store_false", help="no demo queues")
    parser.add_argument("--view", choices=("auto", "live", "plain"), default="auto", help="live redraw or lines")
    parser.add_argument("--log-level", default="INFO", help="the handlers' POWERTOOLS_LOG_LEVEL")
    args = parser.parse_args(argv)

    parameters = {}
    for item in args.parameter:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--parameter {item}: expected NAME=VALUE")
        parameters[name] = value
    sink_parameters(parser, args, parameters)
    if args.aws == "real" and not args.stack_name:
        parser.error("--aws real needs --stack-name (the deployed stack)")
    if args.aws == "real" and args.kontur == "sim":
        parser.error(
            "--aws real runs against the deployed stack's own Kontur endpoints and secret: add --kontur real "
            "(simulator credentials would overwrite the deployed secret)"
        )
    if args.aws == "real" and args.credentials:
        parser.error("--aws real reads the deployed stack's secret; fill that instead of passing --credentials")
    if args.credentials and args.kontur != "real":
        parser.error("--credentials goes with --kontur real")
    for name in ("speed", "period", "duration", "traffic_interval", "catch_up"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 <= args.faults <= 1:
        parser.error("--faults is a share between 0 and 1")
    habits = {"all": NAMES, "none": ()}.get(args.diadoc_habits) or tuple(args.diadoc_habits.split(","))
    if set(habits) - set(NAMES):
        parser.error(f"--diadoc-habits: all, none, or some of {','.join(NAMES)}")
    return Options(
        duration=args.duration,
        speed=args.speed,
        period=args.period,
        kontur=args.kontur,
        credentials=args.credentials,
        aws=args.aws,
        stack_name=args.stack_name,
        feeds=args.feed,
        parameters=parameters,
        simulation=SimulationOptions(
            seed=args.seed,
            backlog=args.backlog,
            traffic_interval=args.traffic_interval,
            fault_rate=args.faults,
            diadoc_habits=habits,
            speed=args.speed,
        ),
        catch_up=args.catch_up,
        demo_queues=args.demo_queues,
        webhook_faults=args.webhook_faults,
        view=args.view,
        log_level=args.log_level,
    )


def sink_parameters(parser: argparse.ArgumentParser, args: argparse.Namespace, parameters: dict[str, str]) -> None:
    """--sink as the Sink parameter (a --parameter Sink=... given too wins), checked with its faults."""
    if args.sink:
        parameters.setdefault("Sink", args.sink)
    if args.aws == "real" and args.sink:
        parser.error("--aws real runs the deployed stack's sink; --sink is for the local stack")
    if not 0 <= args.webhook_faults <= 1:
        parser.error("--webhook-faults is a share between 0 and 1")
