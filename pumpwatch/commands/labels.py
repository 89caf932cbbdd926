"""``pumpwatch labels export``: closed asset alarms (operators' verdicts) as training labels.

Wiring only: the alarms and archived reports come from :mod:`cloud.store`, the
directory format is :mod:`models.training.labels` (which ``models.training``
reads back), so cloud and models never import each other. See
docs/monitoring.md ("Labels").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from ._roles import Role
from ._storeargs import add_store_args, iso_ns, store_url

ROLE = Role("cloud")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("labels", help="operators' alarm verdicts as training labels")
    ls = p.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    e = ls.add_parser("export", help="closed alarms in a window, with their archived reports")
    add_store_args(e)
    e.add_argument("--since", type=iso_ns, required=True, help="closed at or after (ISO 8601)")
    e.add_argument("--until", type=iso_ns, help="closed before (ISO 8601; default: now)")
    e.add_argument("--out", type=Path, required=True, help="output directory")
    e.add_argument("--max-reports", type=int, default=2000,
                   help="archived reports per alarm at most (the newest; default 2000)")
    e.set_defaults(func=_export)


async def _collect(args: argparse.Namespace) -> list[tuple[object, list[bytes]]]:
    from cloud.store import make_store
    from models.training.labels import Label

    until = args.until if args.until is not None else time.time_ns()
    store = make_store(store_url(args))
    await store.open()
    out: list[tuple[object, list[bytes]]] = []
    try:
        closed = await store.alarms(kind="asset", state="cleared",
                                    closed_since_ns=args.since, closed_until_ns=until)
        for n, a in enumerate(sorted(closed, key=lambda a: (a.cleared_ns or 0, a.id))):
            lc = a.lifecycle
            if lc is None or lc.status != "closed" or lc.verdict is None or lc.closed_ns is None:
                continue
            archived = await store.archived(pump=a.pump, since_ns=a.raised_ns,
                                            until_ns=lc.closed_ns + 1)
            blobs = [r.report for r in archived[-args.max_reports:]]
            out.append((Label(
                alarm_id=a.id, site=a.site, pump=a.pump, verdict=lc.verdict,
                action_taken=lc.action_taken or "", note=lc.note,
                closed_by=lc.closed_by or "", since_ns=a.raised_ns, closed_ns=lc.closed_ns,
                onset_ns=lc.onset_ns, model_version=lc.model_version, condition=lc.condition,
                reports=f"reports/{n:05d}.pwr", n_reports=len(blobs)), blobs))
    finally:
        await store.close()
    return out


def _export(args: argparse.Namespace) -> int:
    from cloud.store import StoreError
    from models.training.labels import Label, write_label_set

    problems = []
    if args.max_reports < 1:
        problems.append(f"--max-reports must be >= 1, got {args.max_reports}")
    if args.until is not None and args.until <= args.since:
        problems.append("--since must be before --until")
    if problems:
        print(f"pumpwatch labels: {'; '.join(problems)}")
        return 2
    try:
        labels = asyncio.run(_collect(args))
        pairs = [(lb, blobs) for lb, blobs in labels if isinstance(lb, Label)]
        write_label_set(args.out, pairs)
    except (StoreError, OSError) as exc:
        print(f"pumpwatch labels: {exc}")
        return 2
    print(json.dumps({"labels": len(pairs), "reports": sum(len(b) for _, b in pairs),
                      "out": str(args.out)}))
    return 0
