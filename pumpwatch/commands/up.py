"""``pumpwatch up``: the whole pipeline on this machine, with a live status, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from ._stackargs import STACK_ROLE, add_stack_args, options_from_args

ROLE = STACK_ROLE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="run the local stack: broker (mTLS), model server, consumer, dashboard, "
        "simulated edge fleet",
        description="Start Mosquitto with per-device certificates, the model server (training "
        "the classifier on first start), the consumer with SQLite, the dashboard and simulated "
        "edge agents whose faults develop over minutes after a healthy period the baselines "
        "are fitted on. Shows a live status; Ctrl-C or SIGTERM stops everything. "
        "See docs/stack.md.",
    )
    add_stack_args(p)
    p.add_argument("--healthy-s", type=float, default=60.0,
                   help="healthy period the baselines are fitted on (s, default 60)")
    p.add_argument("--ramp-s", type=float, default=120.0,
                   help="seconds a fault takes to reach full severity (default 120)")
    p.add_argument("--onset-spacing-s", type=float, default=30.0,
                   help="seconds between fault onsets (default 30)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pumpwatch.stack import Stack

    try:
        opts = options_from_args(args, healthy_s=args.healthy_s, ramp_s=args.ramp_s,
                                 onset_spacing_s=args.onset_spacing_s)
    except ValueError as exc:
        print(f"pumpwatch up: {exc}", file=sys.stderr)
        return 2
    return Stack(opts).run_up()
