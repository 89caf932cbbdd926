"""Dashboard API latency on a large results store, SQLite and PostgreSQL, at two sizes.

    python -m bench.dashboard --json                       # 1 M and 8 M rows, both stores
    python -m bench.dashboard --json --small 2000 --large 8000 --requests 5   # a smoke run

A synthetic fleet of ``--channels`` channels (two per pump) reports every
``--interval`` seconds. Each store (schema made by the store itself) is filled
in the database (``INSERT .. SELECT`` from a row generator: through Python,
millions of rows would measure the client) with the newest ``small`` rows
first, measured, then back-filled with older history up to ``large`` rows and
measured again: the last 24 h (the window
the API shows) hold the same rows at both sizes, so a latency that grows
with the table is a scan, not more data. One alarm episode per
``--results-per-alarm`` results.

Measured through HTTP against the real app (aiohttp on a local socket): the
fleet view (``/api/pumps``), one pump's 24 h series (``/api/pumps/{pump}/
history``: downsampled in the database) and the alarm list (``/api/alarms``),
``--requests`` each, p95 in ms. PostgreSQL is a throwaway server
(``tests/infra/postgres.py``: fsync off, 64 MB shared buffers). The last line
is one JSON object: ``p95_ms_{fleet,series,alarms}_{small,large}`` for
PostgreSQL, the same prefixed ``sqlite_``, ``rows_small``, ``rows_large``,
``bytes_small``, ``bytes_large`` (PostgreSQL's database size; SQLite's in
``sqlite_bytes_*``), fill rates and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from cloud.dashboard import DashboardSettings, create_app
from cloud.store import AlarmRow, Commit, EvidenceRow, Store, make_store
from tests.infra.postgres import PostgresServer

S = 1_000_000_000
END_NS = 1_790_000_000 * S  # the newest window (fixed: runs are comparable)


def fill_sql(sqlite: bool, channels: int, interval_ns: int, total: int) -> str:
    """One ``INSERT .. SELECT`` generating rows ``start..stop`` (two parameters) of a
    history of ``total`` rows counted from the newest, in the database (PostgreSQL's
    ``generate_series``, a recursive CTE in SQLite): filling millions of rows through
    Python would measure the client, not the store. Row ``i`` is channel ``i % channels``'s
    ``i // channels``-th newest window."""
    if sqlite:
        gen = ("WITH RECURSIVE g(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM g "
               "WHERE i + 1 < ?) ")
        src = "g"
    else:
        gen = ""
        src = "generate_series($1::bigint, $2::bigint - 1) AS g(i)"
    c, k = f"(i % {channels})", f"(i / {channels})"
    score = "(((i * 7919) % 1000) / 250.0)"
    t0 = f"({END_NS} - {k} * {interval_ns})"
    return (  # numbers formatted in, no outside input
        f"{gen}INSERT INTO results (device, epoch, seq, site, pump, channel, t0_ns, "  # noqa: S608
        "condition, probabilities, anomaly_score, anomaly_threshold, anomalous, baseline, "
        "iso_zone, velocity_rms, rpm, evidence, model_version, target, published_ns, "
        "received_ns, stored_ns, extra, manifest_digest) "
        f"SELECT 'gw-' || ({c} / 20), 1, {total} - i, 'plant', 'P-' || ({c} / 2), "
        f"CASE {c} % 2 WHEN 0 THEN 'x' ELSE 'y' END, {t0}, 'healthy', "
        "'{\"healthy\": 0.9, \"bearing_outer\": 0.1}', "
        f"{score}, 3.0, {score} > 3.0, 'fleet', "
        "CASE i % 5 WHEN 0 THEN 'A' WHEN 1 THEN 'A' WHEN 2 THEN 'B' WHEN 3 THEN 'B' "
        f"ELSE 'C' END, 1.0 + {score} / 4, 2950.0, "
        "'[{\"name\": \"env_bpfo\", \"value\": 1.0, \"note\": \"\"}]', 'bench-1', "
        f"'bench', NULL, {t0} + {S}, {t0} + {2 * S}, '{{}}', NULL FROM {src}"
    )


LATEST_SQL = (
    "INSERT INTO latest (pump, channel, t0_ns, device, epoch, seq) "
    "SELECT pump, channel, t0_ns, device, epoch, seq FROM results "
    "WHERE t0_ns = {end} AND true ON CONFLICT (pump, channel) DO NOTHING"
)


def alarms_for(start: int, stop: int, every: int, channels: int, interval_ns: int
               ) -> list[AlarmRow]:
    """One episode per ``every`` rows (a third of them still raised)."""
    out = []
    for i in range(start - start % every + every, stop, every):
        c, k = i % channels, i // channels
        pump, ch = f"P-{c // 2}", "xy"[c % 2]
        t0 = END_NS - k * interval_ns
        raised = (i // every) % 3 == 0
        out.append(AlarmRow(
            id=f"{pump}:{ch}:anomaly:{t0}", site="plant", pump=pump, channel=ch,
            kind="anomaly", state="raised" if raised else "cleared", raised_ns=t0,
            cleared_ns=None if raised else t0 + 60 * S, reason="bench",
            evidence=[EvidenceRow("anomaly_score", 3.5, "threshold 3")]))
    return out


async def fill(store: Store, url: str, start: int, stop: int, channels: int,
               interval_ns: int, total: int, every: int) -> float:
    """Rows ``start..stop`` generated in the database in chunks, each channel's newest row
    in ``latest``, alarms through the store's commit; rows per second."""
    t = time.perf_counter()
    sqlite = url.startswith("sqlite")
    sql = fill_sql(sqlite, channels, interval_ns, total)
    chunk = 500_000
    if sqlite:
        await asyncio.to_thread(_sqlite_fill, url, sql, start, stop, chunk)
    else:
        conn = await asyncpg.connect(url)
        try:
            for a in range(start, stop, chunk):
                await conn.execute(sql, a, min(stop, a + chunk))
            await conn.execute(LATEST_SQL.format(end=END_NS))
        finally:
            await conn.close()
    await store.commit(Commit(alarms=alarms_for(start, stop, every, channels, interval_ns)))
    return (stop - start) / max(time.perf_counter() - t, 1e-9)


def _sqlite_fill(url: str, sql: str, start: int, stop: int, chunk: int) -> None:
    import sqlite3

    con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        for a in range(start, stop, chunk):
            con.execute("BEGIN IMMEDIATE")
            con.execute(sql, (a, min(stop, a + chunk)))
            con.execute("COMMIT")
        con.execute(LATEST_SQL.format(end=END_NS))
    finally:
        con.close()


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(0.95 * len(s)))], 2)


async def measure(url: str, pumps: list[str], requests: int, seed: int) -> dict[str, float]:
    app = create_app(DashboardSettings(store_url=url, poll_s=3600.0))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    rng = random.Random(seed)
    out: dict[str, list[float]] = {"fleet": [], "series": [], "alarms": []}
    try:
        async with ClientSession() as session:

            async def get(path: str, check: Callable[[Any], bool]) -> float:
                t = time.perf_counter()
                async with session.get(base + path) as resp:
                    body = await resp.json()
                took = (time.perf_counter() - t) * 1e3
                if resp.status != 200 or not check(body):
                    raise RuntimeError(f"GET {path}: {resp.status} {str(body)[:200]}")
                return took

            for i in range(requests + 2):  # two warm-up rounds
                f = await get("/api/pumps", lambda b: len(b["pumps"]) == len(pumps))
                pump = rng.choice(pumps)
                s = await get(f"/api/pumps/{pump}/history", lambda b: b["rows"] > 0)
                a = await get("/api/alarms", lambda b: len(b["alarms"]) > 0)
                if i >= 2:
                    out["fleet"].append(f)
                    out["series"].append(s)
                    out["alarms"].append(a)
    finally:
        await server.close()
    return {k: p95(v) for k, v in out.items()}


async def store_bytes(url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


async def run_store(url: str, args: argparse.Namespace, say: Callable[[str], None]
                    ) -> dict[str, Any]:
    pumps = sorted({f"P-{c // 2}" for c in range(args.channels)})
    interval_ns = int(args.interval * S)
    every = args.results_per_alarm
    opts = {"synchronous": "off"} if url.startswith("sqlite") else {"pool_size": 2}
    store = make_store(url, **opts)
    await store.open()
    out: dict[str, Any] = {}
    try:
        done = 0
        for size in ("small", "large"):
            target = args.small if size == "small" else args.large
            say(f"  filling to {target} rows")
            rate = await fill(store, url, done, target, args.channels, interval_ns, args.large,
                              every)
            done = target
            out[f"fill_rows_per_s_{size}"] = round(rate)
            if url.startswith("sqlite"):
                # What a long-running consumer's store has: planner statistics.
                await asyncio.to_thread(_sqlite_analyze, url)
            else:
                await _pg_analyze(url)
            out[f"bytes_{size}"] = await store_bytes(url)
            got = await measure(url, pumps, args.requests, seed=7)
            say(f"  {size}: {got} ({out[f'bytes_{size}'] / 1e6:.0f} MB)")
            for k, v in got.items():
                out[f"p95_ms_{k}_{size}"] = v
    finally:
        await store.close()
    return out


def _sqlite_analyze(url: str) -> None:
    import sqlite3

    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # bytes on disk: the database, not a log
    con.close()


async def _pg_analyze(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--small", type=int, default=1_000_000, help="rows at the smaller size")
    ap.add_argument("--large", type=int, default=8_000_000, help="rows at the larger size")
    ap.add_argument("--channels", type=int, default=200, help="fleet channels (2 per pump)")
    ap.add_argument("--interval", type=float, default=20.0,
                    help="seconds between a channel's reports")
    ap.add_argument("--requests", type=int, default=60, help="requests per query and size")
    ap.add_argument("--results-per-alarm", type=int, default=2000)
    ap.add_argument("--stores", default="postgresql,sqlite")
    args = ap.parse_args()
    if not 0 < args.small < args.large:
        ap.error("need 0 < --small < --large")

    def say(msg: str) -> None:
        if not args.json:
            print(msg, flush=True)

    result: dict[str, Any] = {"benchmark": "dashboard", "rows_small": args.small,
                              "rows_large": args.large, "channels": args.channels,
                              "interval_s": args.interval, "requests": args.requests}
    with tempfile.TemporaryDirectory(prefix="pw-bench-dash-") as tmp:
        for kind in args.stores.split(","):
            say(f"{kind}:")
            if kind == "sqlite":
                got = asyncio.run(run_store(f"sqlite:///{Path(tmp) / 'results.db'}", args, say))
                result.update({f"sqlite_{k}": v for k, v in got.items()})
            elif kind == "postgresql":
                with PostgresServer() as pg:
                    url = pg.create_database("bench")
                    result.update(asyncio.run(run_store(url, args, say)))
            else:
                ap.error(f"unknown store {kind!r}")
    result["cpus"] = os.cpu_count()
    result["targets"] = {"p95_ms_large": "<=200 (postgresql)", "large_over_small": "<=1.5"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
