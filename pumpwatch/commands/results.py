"""``pumpwatch results --pump ID``: query stored results or dead letters (table, JSON, CSV)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from ._roles import Role
from ._storeargs import add_store_args, iso_ns, ns_iso, store_url

if TYPE_CHECKING:
    from cloud.store import DeadLetter, ResultRow

# The SQLite store needs nothing more; PostgreSQL's asyncpg is reported when it is imported.
ROLE = Role("cloud")

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
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many rows (the newest, unless --oldest-first)")
    p.add_argument("--oldest-first", action="store_true",
                   help="oldest row first (default: newest first)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument(
        "--dead-letters", action="store_true",
        help="list dead letters instead (received >= --since; kind, reason, topic, identity)",
    )
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


async def _query(args: argparse.Namespace) -> list[ResultRow] | list[DeadLetter]:
    from cloud.store import make_store

    url = store_url(args)
    options: dict[str, Any] = {"readonly": True} if "://" not in url or url.startswith(
        "sqlite") else {}
    store = make_store(url, **options)
    await store.open()
    try:
        if args.dead_letters:
            return await store.dead_letters(since_ns=args.since, limit=args.limit)
        return await store.results(
            pump=args.pump, device=args.device, since_ns=args.since, until_ns=args.until,
            limit=args.limit, newest_first=not args.oldest_first,
        )
    finally:
        await store.close()


DL_COLUMNS = ("received", "kind", "topic", "part", "device", "epoch", "seq", "reason", "bytes")


def _dead_flat(d: DeadLetter) -> dict[str, Any]:
    return {
        "received": ns_iso(d.received_ns), "kind": d.kind, "topic": d.topic, "part": d.part,
        "device": d.device, "epoch": d.epoch, "seq": d.seq, "reason": d.reason,
        "bytes": len(d.payload),
    }


def _print_dead(rows: list[DeadLetter], fmt: str) -> None:
    flat = [_dead_flat(d) for d in rows]
    if fmt == "json":
        # payload bytes are left out; the store keeps them
        sys.stdout.write(msgspec.json.encode(flat).decode() + "\n")
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(DL_COLUMNS)
        for f in flat:
            w.writerow(["" if f[c] is None else f[c] for c in DL_COLUMNS])
    else:
        _table([[("" if f[c] is None else str(f[c])) for c in DL_COLUMNS] for f in flat],
               DL_COLUMNS)
    print(f"{len(rows)} dead letter(s)", file=sys.stderr)


def _table(rows: list[list[str]], header: tuple[str, ...]) -> None:
    table = [list(header), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        sys.stdout.write(line + "\n")


def run(args: argparse.Namespace) -> int:
    from cloud.store import DeadLetter, ResultRow, StoreError, merge_extra

    try:
        found = asyncio.run(_query(args))
    except StoreError as exc:
        hint = ""
        if not args.store and not args.config:
            hint = (f" (the default is the local stack's store, {store_url(args)}: start the "
                    "stack with ./run.sh, or give --store URL or --config cloud.toml)")
        print(f"pumpwatch results: {exc}{hint}", file=sys.stderr)
        return 1
    if args.dead_letters:
        _print_dead([d for d in found if isinstance(d, DeadLetter)], args.format)
        return 0
    rows = [r for r in found if isinstance(r, ResultRow)]
    out = sys.stdout
    if args.format == "json":
        # Full rows (probabilities, evidence, timings) as one JSON array, each with the
        # model's own result fields merged in (named in extra_fields).
        full = [merge_extra({k: v for k, v in msgspec.structs.asdict(r).items()
                             if k != "extra"}, r.extra) for r in rows]
        out.write(msgspec.json.encode(full).decode() + "\n")
    elif args.format == "csv":
        w = csv.writer(out)
        w.writerow(COLUMNS)
        for r in rows:
            f = _flat(r)
            w.writerow(["" if f[c] is None else f[c] for c in COLUMNS])
    else:
        shown = ("time", "device", "seq", "pump", "channel", "condition", "p",
                 "anomaly_score", "anomalous", "iso_zone", "velocity_rms", "model_version")
        _table([["" if (v := _flat(r)[c]) is None else str(v) for c in shown] for r in rows],
               shown)
        print(f"{len(rows)} result(s)", file=sys.stderr)
    return 0
