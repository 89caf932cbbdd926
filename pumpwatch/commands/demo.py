"""``pumpwatch demo``: the local stack headless for a fixed time, scored into a JSON summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._stackargs import STACK_ROLE, add_stack_args, options_from_args

ROLE = STACK_ROLE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the local stack headless for --duration seconds and score it",
        description="Run the same stack as `pumpwatch up` without the live display; faults "
        "are scheduled to be detectable within --duration. At the end the sources stop, "
        "the stack waits (bounded) until every published report is stored or dead-lettered, "
        "and writes a JSON summary (published, stored, lost, faults injected / detected / "
        "classified, false alarms, latency percentiles, detection delay per pump). Exit 0 "
        "when nothing was lost, every fault detected and no false alarm; 3 otherwise.",
    )
    add_stack_args(p)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of stream (default 60)")
    p.add_argument("--summary", type=Path, default=None, help="write the JSON summary here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pumpwatch.stack import Stack, demo_options

    if args.duration < 15:
        print("pumpwatch demo: --duration must be >= 15 s (healthy period, then faults)",
              file=sys.stderr)
        return 2
    try:
        opts = demo_options(options_from_args(args), args.duration)
    except ValueError as exc:
        print(f"pumpwatch demo: {exc}", file=sys.stderr)
        return 2
    return Stack(opts, live=False).run_demo(args.summary)
