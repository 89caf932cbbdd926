"""``pumpwatch baseline fit``: fit per-pump anomaly baselines from stored reports.

Sources are pluggable: ``--store URL`` (the consumer's report archive, with
``--pump``, ``--since``, ``--until``) today; a further source (e.g. ``--from
FILE...`` recordings, the models issue) adds its option and a loader to
:data:`SOURCES`, and exactly one source must be given.
Wiring only: reading is the store's job, fitting is :mod:`cloud.model.baseline`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import dsp
from cloud.model.baseline import fit_baselines
from cloud.store import StoreError, make_store

from ._storeargs import iso_ns, ns_iso


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("baseline", help="per-pump anomaly baselines")
    bs = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    f = bs.add_parser("fit", help="fit baselines from archived reports")
    f.add_argument("--store", help="results store URL holding the report archive")
    f.add_argument("--pump", action="append", default=[],
                   help="pump id (repeat for several pumps)")
    f.add_argument("--since", type=iso_ns, help="window start >= this ISO 8601 time")
    f.add_argument("--until", type=iso_ns, help="window start < this ISO 8601 time")
    f.add_argument("--out", type=Path, required=True, help="output directory")
    f.add_argument("--min-reports", type=int, default=10)
    f.add_argument("--false-alarm-rate", type=float, default=0.005)
    f.set_defaults(func=run_fit)


async def _from_store(args: argparse.Namespace) -> list[dsp.Report]:
    url = str(args.store)
    store = make_store(url, readonly=True) if url.startswith("sqlite") or "://" not in url \
        else make_store(url)
    await store.open()
    try:
        reports: list[dsp.Report] = []
        for pump in args.pump:
            rows = await store.archived(pump=pump, since_ns=args.since, until_ns=args.until)
            reports += [dsp.decode_report(a.report) for a in rows]
        return reports
    finally:
        await store.close()


# argparse dest -> loader of reports; exactly one must be given.
SOURCES: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, list[dsp.Report]]]] = {
    "store": _from_store,
}


def run_fit(args: argparse.Namespace) -> int:
    given = [name for name in SOURCES if getattr(args, name, None)]
    if len(given) != 1:
        options = ", ".join(f"--{n.replace('_', '-')}" for n in SOURCES)
        print(f"pumpwatch baseline fit: give exactly one source of {options}", file=sys.stderr)
        return 2
    if given == ["store"] and not args.pump:
        print("pumpwatch baseline fit: --store needs --pump ID", file=sys.stderr)
        return 2
    try:
        reports = asyncio.run(SOURCES[given[0]](args))
    except StoreError as exc:
        print(f"pumpwatch baseline fit: {exc}", file=sys.stderr)
        return 1
    if not reports:
        print("pumpwatch baseline fit: no archived reports match", file=sys.stderr)
        return 1
    try:
        baselines = fit_baselines(
            reports, min_reports=args.min_reports, false_alarm_rate=args.false_alarm_rate
        )
    except ValueError as exc:
        print(f"pumpwatch baseline fit: {exc}", file=sys.stderr)
        return 2
    missing = sorted(set(args.pump) - set(baselines.pumps))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "baselines.npz"
    baselines.save(path)
    span = f"{ns_iso(min(r.t0_ns for r in reports))} .. {ns_iso(max(r.t0_ns for r in reports))}"
    print(f"baselines for {', '.join(baselines.pumps) or 'no pump'} from {len(reports)} "
          f"reports ({span}) -> {path}")
    if missing:
        print(f"too few reports (< {args.min_reports}) for: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    return 0
