"""``pumpwatch results --pump ID``: query stored results (table, JSON or CSV)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from typing import Any

import msgspec

from cloud.store import ResultRow, StoreError, make_store

from ._storeargs import add_store_args, iso_ns, ns_iso, store_url

COLUMNS = (
    "time", "device", "epoch", "seq", "site", "pump", "channel", "condition", "p",
    "anomaly_score", "anomaly_threshold", "anomalous", "baseline", "iso_zone", "velocity_rms",
    "rpm", "model_version", "latency_ms",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("results", help="query stored condition and anomaly results")
    p.add_argument("--pump", help="pump id (default: all pumps)")
    p.add_argument("--device", help="only this device")
    p.add_argument("--since", type=iso_ns, help="window start >= this ISO 8601 time")
    p.add_argument("--until", type=iso_ns, help="window start < this ISO 8601 time")
    p.add_argument("--limit", type=int, default=None, help="at most this many rows")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    add_store_args(p)
    p.set_defaults(func=run)


def _flat(r: ResultRow) -> dict[str, Any]:
    latency = None
    if r.published_ns is not None and r.stored_ns:
        latency = round((r.stored_ns - r.published_ns) / 1e6, 1)
    return {
        "time": ns_iso(r.t0_ns), "device": r.device, "epoch": r.epoch, "seq": r.seq,
        "site": r.site, "pump": r.pump, "channel": r.channel, "condition": r.condition,
        "p": round(r.probabilities.get(r.condition, float("nan")), 3),
        "anomaly_score": round(r.anomaly_score, 3),
        "anomaly_threshold": round(r.anomaly_threshold, 3), "anomalous": r.anomalous,
        "baseline": r.baseline, "iso_zone": r.iso_zone,
        "velocity_rms": round(r.velocity_rms, 3), "rpm": r.rpm,
        "model_version": r.model_version, "latency_ms": latency,
    }


async def _query(args: argparse.Namespace) -> list[ResultRow]:
    url = store_url(args)
    options: dict[str, Any] = {"readonly": True} if "://" not in url or url.startswith(
        "sqlite") else {}
    store = make_store(url, **options)
    await store.open()
    try:
        return await store.results(
            pump=args.pump, device=args.device, since_ns=args.since, until_ns=args.until,
            limit=args.limit,
        )
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    try:
        rows = asyncio.run(_query(args))
    except StoreError as exc:
        print(f"pumpwatch results: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    if args.format == "json":
        # Full rows (probabilities, evidence, timings) as one JSON array.
        out.write(msgspec.json.encode(rows).decode() + "\n")
    elif args.format == "csv":
        w = csv.writer(out)
        w.writerow(COLUMNS)
        for r in rows:
            f = _flat(r)
            w.writerow(["" if f[c] is None else f[c] for c in COLUMNS])
    else:
        shown = ("time", "device", "seq", "pump", "channel", "condition", "p",
                 "anomaly_score", "anomalous", "iso_zone", "velocity_rms", "model_version")
        table = [[str(c) for c in shown]] + [
            ["" if (v := _flat(r)[c]) is None else str(v) for c in shown] for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(shown))]
        for row in table:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            out.write("\n")
        print(f"{len(rows)} result(s)", file=sys.stderr)
    return 0
