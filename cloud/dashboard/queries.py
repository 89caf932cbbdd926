"""Read-only queries the dashboard needs beyond the store interface.

The :class:`~cloud.store.Store` interface serves the consumer (writes, plain
range reads). A dashboard also needs a fleet summary, server-side downsampled
history, the latest archived report per pump and channel, alarms, and
"what was stored after this cursor" for the live stream. These live here,
over the same SQLite file, so the consumer's store stays untouched.

Theory of operation
-------------------
* :class:`SQLiteReader` opens its own read-only connections (``mode=ro``),
  one per worker thread of a private executor; every query runs there, so
  the event loop never waits on disk. WAL lets these readers run while the
  consumer writes.
* Distinct pumps come from a skip-scan over the ``(pump, t0_ns)`` index
  (one index probe per pump), and each pump's latest rows from a short
  descending range scan, so the fleet summary costs O(pumps x log rows).
* History over a long range is aggregated in SQL into at most
  ``max_points`` time buckets per channel (mean and max of the anomaly score
  and velocity RMS, worst ISO zone, anomalous count).
* The live stream's cursor is the store's commit time ``stored_ns``. The
  results table has no index on it (yet: see docs/dashboard.md), so a plain
  "stored after" query scans the table. :meth:`SQLiteReader.results_after`
  therefore takes an optional ``received_after`` bound that the
  ``received_ns`` index serves (a row is received before it is stored); the
  stream uses it for its frequent polls and scans in full only now and then
  (see :mod:`.stream`). When an index on ``stored_ns`` exists
  (:meth:`SQLiteReader.has_stored_index`) every poll is an index range.
* The ``alarms`` table (see :mod:`cloud.dashboard.alarms`) may not exist yet;
  then every alarm query returns nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec

from cloud.store import ArchivedReport, Gap, ManifestRow, ResultRow, StoreError
from cloud.store.delivery import gap_rows, gaps_sql
from cloud.store.sqlite import (
    _RESULT_COLUMNS,
    MANIFEST_SELECT,
    _manifest_row,
    _result_row,
    from_i64,
    path_from_url,
)

from .alarms import ALARM_COLUMNS, AlarmRow, alarm_from_row

T = TypeVar("T")

ZONE_RANK = {"?": 0, "A": 1, "B": 2, "C": 3, "D": 4}
ZONES_BY_RANK = "?ABCD"
_ZONE_CASE = (
    "CASE iso_zone WHEN 'A' THEN 1 WHEN 'B' THEN 2 WHEN 'C' THEN 3 WHEN 'D' THEN 4 ELSE 0 END"
)


class HistorySeries(msgspec.Struct, kw_only=True):
    """One channel's trend, columnar. ``bucket_ns`` 0: raw rows, else aggregated buckets."""

    channel: str
    t_ns: list[int]
    count: list[int]
    anomaly_score: list[float]
    anomaly_score_max: list[float]
    anomaly_threshold: list[float]
    anomalous: list[int]
    velocity_rms: list[float]
    velocity_rms_max: list[float]
    iso_zone: list[str]
    condition: list[str | None]


class History(msgspec.Struct, kw_only=True):
    pump: str
    since_ns: int
    until_ns: int
    bucket_ns: int
    rows: int
    series: list[HistorySeries]


def _pumps(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "WITH RECURSIVE p(pump) AS ("
        " SELECT min(pump) FROM results"
        " UNION ALL"
        " SELECT (SELECT min(pump) FROM results WHERE pump > p.pump) FROM p"
        " WHERE p.pump IS NOT NULL"
        ") SELECT pump FROM p WHERE pump IS NOT NULL"
    )
    return [r[0] for r in rows]


def _latest_per_channel(conn: sqlite3.Connection, pump: str, scan: int) -> list[ResultRow]:
    seen: dict[str, ResultRow] = {}
    for row in conn.execute(
        f"SELECT {_RESULT_COLUMNS} FROM results WHERE pump = ? "  # noqa: S608
        "ORDER BY t0_ns DESC LIMIT ?",
        (pump, scan),
    ):
        r = _result_row(row)
        seen.setdefault(r.channel, r)
    return sorted(seen.values(), key=lambda r: r.channel)


def _has_alarms(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alarms'"
    ).fetchone()
    return row is not None


def _alarms(
    conn: sqlite3.Connection,
    *,
    pump: str | None = None,
    state: str | None = None,
    updated_after: int | None = None,
    updated_upto: int | None = None,
    limit: int = 200,
    oldest_first: bool = False,
) -> list[AlarmRow]:
    if not _has_alarms(conn):
        return []
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("pump", "=", pump), ("state", "=", state), ("updated_ns", ">", updated_after),
        ("updated_ns", "<=", updated_upto),
    ):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    order = "updated_ns, id" if oldest_first else "raised_ns DESC, id"
    sql = f"SELECT {ALARM_COLUMNS} FROM alarms{where} ORDER BY {order} LIMIT ?"  # noqa: S608
    return [alarm_from_row(r) for r in conn.execute(sql, [*params, limit])]


class SQLiteReader:
    """The dashboard's read-only queries over a SQLite results store (see module docstring)."""

    def __init__(self, url: str, *, threads: int = 2, busy_timeout_s: float = 5.0) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._threads = threads
        self._busy_timeout_s = busy_timeout_s
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix="dashboard-read"
            )

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                raise StoreError(f"no results store at {self.path} yet (is the consumer running?)")
            try:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=self._busy_timeout_s,
                    isolation_level=None, check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open {self.path} read-only: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn())
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite error reading {self.path}: {exc}") from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise StoreError(f"reader for {self.url} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    # -- fleet and history ----------------------------------------------------------------------

    async def fleet(self, *, scan: int = 256) -> dict[str, list[ResultRow]]:
        """Every pump's latest result per channel (among its ``scan`` newest rows)."""

        def run(conn: sqlite3.Connection) -> dict[str, list[ResultRow]]:
            return {p: _latest_per_channel(conn, p, scan) for p in _pumps(conn)}

        return await self._run(run)

    async def pump_latest(self, pump: str, *, scan: int = 256) -> list[ResultRow]:
        return await self._run(lambda conn: _latest_per_channel(conn, pump, scan))

    async def last_t0(self, pump: str) -> int | None:
        def run(conn: sqlite3.Connection) -> int | None:
            (t,) = conn.execute("SELECT max(t0_ns) FROM results WHERE pump = ?", (pump,)).fetchone()
            return None if t is None else int(t)

        return await self._run(run)

    async def history(
        self,
        pump: str,
        *,
        since_ns: int,
        until_ns: int,
        channel: str | None = None,
        max_points: int = 600,
    ) -> History:
        """Trend rows ``since_ns <= t0_ns < until_ns``: raw when at most ``max_points``
        in all, else aggregated per channel into ``ceil(span / max_points)``-long buckets
        (so at most ``max_points`` points per channel)."""
        where = "pump = ? AND t0_ns >= ? AND t0_ns < ?"
        params: list[Any] = [pump, since_ns, until_ns]
        if channel is not None:
            where += " AND channel = ?"
            params.append(channel)

        def run(conn: sqlite3.Connection) -> History:
            # Counted on the (pump, t0_ns) index alone: cheap even for a month of rows.
            (total,) = conn.execute(
                f"SELECT count(*) FROM results WHERE {where}", params  # noqa: S608
            ).fetchone()
            series: dict[str, HistorySeries] = {}

            def get(ch: str) -> HistorySeries:
                if ch not in series:
                    series[ch] = HistorySeries(
                        channel=ch, t_ns=[], count=[], anomaly_score=[], anomaly_score_max=[],
                        anomaly_threshold=[], anomalous=[], velocity_rms=[],
                        velocity_rms_max=[], iso_zone=[], condition=[],
                    )
                return series[ch]

            if total <= max_points:
                bucket = 0
                for ch, t0, cond, score, thr, anom, zone, vel in conn.execute(
                    "SELECT channel, t0_ns, condition, anomaly_score, anomaly_threshold, "  # noqa: S608
                    f"anomalous, iso_zone, velocity_rms FROM results WHERE {where} "
                    "ORDER BY channel, t0_ns",
                    params,
                ):
                    s = get(ch)
                    s.t_ns.append(t0)
                    s.count.append(1)
                    s.anomaly_score.append(score)
                    s.anomaly_score_max.append(score)
                    s.anomaly_threshold.append(thr)
                    s.anomalous.append(int(anom))
                    s.velocity_rms.append(vel)
                    s.velocity_rms_max.append(vel)
                    s.iso_zone.append(zone)
                    s.condition.append(cond)
            else:
                bucket = -(-(until_ns - since_ns) // max_points)
                for ch, t, n, score, smax, thr, anom, vel, vmax, zone in conn.execute(
                    "SELECT channel, CAST(avg(t0_ns) AS INTEGER), count(*), avg(anomaly_score), "  # noqa: S608
                    "max(anomaly_score), avg(anomaly_threshold), sum(anomalous), "
                    f"avg(velocity_rms), max(velocity_rms), max({_ZONE_CASE}) "
                    f"FROM results WHERE {where} "
                    "GROUP BY channel, (t0_ns - ?) / ? ORDER BY channel, 2",
                    [*params, since_ns, bucket],
                ):
                    s = get(ch)
                    s.t_ns.append(t)
                    s.count.append(n)
                    s.anomaly_score.append(score)
                    s.anomaly_score_max.append(smax)
                    s.anomaly_threshold.append(thr)
                    s.anomalous.append(int(anom))
                    s.velocity_rms.append(vel)
                    s.velocity_rms_max.append(vmax)
                    s.iso_zone.append(ZONES_BY_RANK[int(zone)])
                    s.condition.append(None)
            return History(
                pump=pump, since_ns=since_ns, until_ns=until_ns, bucket_ns=bucket, rows=total,
                series=[series[ch] for ch in sorted(series)],
            )

        return await self._run(run)

    async def latest_report(self, pump: str, channel: str | None = None) -> ArchivedReport | None:
        """The newest archived report of ``pump`` (and ``channel``, if given)."""
        sql = (
            "SELECT device, epoch, seq, site, pump, channel, t0_ns, received_ns, report "
            "FROM archive WHERE pump = ?"
        )
        params: list[Any] = [pump]
        if channel is not None:
            sql += " AND channel = ?"
            params.append(channel)
        sql += " ORDER BY t0_ns DESC LIMIT 1"

        def run(conn: sqlite3.Connection) -> ArchivedReport | None:
            row = conn.execute(sql, params).fetchone()
            if row is None:
                return None
            d, e, s, si, p, c, t0, rx, rep = row
            return ArchivedReport(
                device=d, epoch=from_i64(e), seq=s, site=si, pump=p, channel=c, t0_ns=t0,
                received_ns=rx, report=bytes(rep),
            )

        return await self._run(run)

    async def gaps(self, device: str, *, before_ns: int, limit: int = 1000) -> list[Gap]:
        """Missing sequence ranges of ``device``'s streams (the store's one gap query)."""
        sql = gaps_sql("?1", "?2", "?3")
        return await self._run(
            lambda conn: gap_rows(conn.execute(sql, (device, before_ns, limit)), from_i64)
        )

    async def manifests(self) -> list[ManifestRow]:
        """Every stored bundle manifest, oldest first."""
        return await self._run(
            lambda conn: [_manifest_row(r) for r in conn.execute(MANIFEST_SELECT)]
        )

    # -- alarms -------------------------------------------------------------------------------

    async def alarms(
        self, *, pump: str | None = None, state: str | None = None, limit: int = 200
    ) -> list[AlarmRow]:
        """Alarms, newest raised first."""
        return await self._run(lambda conn: _alarms(conn, pump=pump, state=state, limit=limit))

    async def active_alarm_pumps(self) -> dict[str, int]:
        """Pump -> number of alarms in state "raised"."""

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            if not _has_alarms(conn):
                return {}
            return dict(
                conn.execute(
                    "SELECT pump, count(*) FROM alarms WHERE state = 'raised' GROUP BY pump"
                ).fetchall()
            )

        return await self._run(run)

    # -- the live stream's cursor queries -------------------------------------------------------

    async def data_version(self) -> int:
        """Changes whenever another connection commits (only meaningful on one thread)."""
        return await self._run(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))

    async def watermarks(self) -> tuple[int, int]:
        """(max stored_ns of results, max updated_ns of alarms); 0 when empty."""

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            (r,) = conn.execute("SELECT coalesce(max(stored_ns), 0) FROM results").fetchone()
            a = 0
            if _has_alarms(conn):
                (a,) = conn.execute("SELECT coalesce(max(updated_ns), 0) FROM alarms").fetchone()
            return int(r), int(a)

        return await self._run(run)

    async def has_stored_index(self) -> bool:
        """Whether some index on ``results`` leads with ``stored_ns``."""

        def run(conn: sqlite3.Connection) -> bool:
            for row in conn.execute("PRAGMA index_list(results)").fetchall():
                cols = conn.execute(f"PRAGMA index_info({row[1]!r})").fetchall()
                if cols and cols[0][2] == "stored_ns":
                    return True
            return False

        return await self._run(run)

    async def results_after(
        self,
        after_ns: int,
        *,
        upto_ns: int | None = None,
        received_after: int | None = None,
        limit: int = 5000,
    ) -> list[ResultRow]:
        """Results with ``after_ns < stored_ns [<= upto_ns]`` (and, if given,
        ``received_ns >= received_after``), in commit order."""
        sql = f"SELECT {_RESULT_COLUMNS} FROM results WHERE stored_ns > ?"  # noqa: S608
        params: list[Any] = [after_ns]
        if upto_ns is not None:
            sql += " AND stored_ns <= ?"
            params.append(upto_ns)
        if received_after is not None:
            sql += " AND received_ns >= ?"
            params.append(received_after)
        sql += " ORDER BY stored_ns, t0_ns, device, epoch, seq LIMIT ?"
        params.append(limit)

        def run(conn: sqlite3.Connection) -> list[ResultRow]:
            return [_result_row(r) for r in conn.execute(sql, params)]

        return await self._run(run)

    async def alarms_after(
        self, after_ns: int, *, upto_ns: int | None = None, limit: int = 1000
    ) -> list[AlarmRow]:
        """Alarm writes with ``after_ns < updated_ns [<= upto_ns]``, oldest first."""
        return await self._run(
            lambda conn: _alarms(
                conn, updated_after=after_ns, updated_upto=upto_ns, limit=limit,
                oldest_first=True,
            )
        )


def open_reader(url: str, *, threads: int = 2) -> SQLiteReader:
    """A reader for ``url``; only SQLite stores are readable by the dashboard so far."""
    scheme = url.split("://", 1)[0] if "://" in url else "sqlite"
    if scheme != "sqlite":
        raise StoreError(f"the dashboard reads SQLite stores only so far, got {url=}")
    reader = SQLiteReader(url, threads=threads)
    reader.open()
    return reader
