"""Retention of the monitoring tables (cloud/monitor/retention.py): histogram and usage cells
older than ``[monitor] retention_days`` are pruned on SQLite and PostgreSQL, except each
model version's first day of histograms (its default live reference window, which
``monitor run`` reads); and the consumer's retention chore runs it (real Mosquitto, model
server, SQLite)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cloud.monitor.retention import REFERENCE_WINDOW_NS, prune_monitoring
from cloud.monitor.run import monitor
from cloud.store import Commit, HistCell, UsageCell, make_store
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.test_consumer_faults import fault_config
from tests.test_consumer_pipeline import running_consumer

HOUR = 3600 * 1_000_000_000
DAY = 24 * HOUR
T0 = 1_780_000_000 * 1_000_000_000 // DAY * DAY
NOW = T0 + 30 * DAY


def hist(version: str, bucket: int, value: float = 1.0) -> HistCell:
    return (version, "t", "all", bucket, "healthy", "log:rms", 3, value)


def usage(version: str, bucket: int) -> UsageCell:
    return (version, "t", "p1", bucket, "reports", 0, 5.0)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def test_old_cells_are_pruned_and_each_versions_reference_day_is_kept(url: str) -> None:
    cells = [
        hist("A", T0),
        hist("A", T0 + 23 * HOUR),  # A's first day: its reference
        hist("A", T0 + 25 * HOUR),
        hist("A", T0 + 10 * DAY),  # old: pruned
        hist("A", NOW - HOUR),  # recent: kept
        hist("B", T0 + 5 * DAY),
        hist("B", T0 + 5 * DAY + 2 * HOUR),  # B's reference
        hist("B", T0 + 7 * DAY),  # old: pruned
        hist("B", T0 + 25 * DAY),  # recent: kept
    ]
    use = [
        usage("A", T0),
        usage("A", T0 + 19 * DAY),
        usage("A", NOW - HOUR),
        usage("B", T0 + 5 * DAY),
    ]
    s = make_store(url)
    await s.open()
    try:
        await s.commit(Commit(usage=use), histograms=lambda _rows: cells)
        first = await s.histograms(since_ns=0, until_ns=1 << 62)
        assert len(first) == len(cells)
        out = await prune_monitoring(s, retention_days=10, now_ns=NOW)  # cutoff T0 + 20 d
        assert (out.histograms, out.usage) == (3, 3)
        kept = {(c[0], c[3]) for c in await s.histograms(since_ns=0, until_ns=1 << 62)}
        assert kept == {
            ("A", T0),
            ("A", T0 + 23 * HOUR),
            ("A", NOW - HOUR),
            ("B", T0 + 5 * DAY),
            ("B", T0 + 5 * DAY + 2 * HOUR),
            ("B", T0 + 25 * DAY),
        }
        assert [(c[0], c[3]) for c in await s.usage(since_ns=0, until_ns=1 << 62)] == [
            ("A", NOW - HOUR)
        ]
        # the reference monitor run reads is where it was: the version's first day
        assert await s.histogram_start("A") == T0
        rep = await monitor(s, "A", since_ns=NOW - DAY, until_ns=NOW)
        assert (rep.reference_since_ns, rep.reference_until_ns) == (T0, T0 + REFERENCE_WINDOW_NS)
        # pruning again deletes nothing more
        again = await prune_monitoring(s, retention_days=10, now_ns=NOW)
        assert (again.histograms, again.usage) == (0, 0)
        with pytest.raises(ValueError, match="retention_days"):
            await prune_monitoring(s, retention_days=1, now_ns=NOW)
    finally:
        await s.close()


async def test_the_consumers_retention_chore_prunes_monitoring_cells(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    now = time.time_ns() // HOUR * HOUR
    old = now - 30 * DAY
    s = make_store(f"sqlite:///{db}")
    await s.open()
    try:
        await s.commit(
            Commit(usage=[usage("A", old + 2 * DAY), usage("A", now)]),
            histograms=lambda _rows: [hist("A", old), hist("A", old + 2 * DAY), hist("A", now)],
        )
    finally:
        await s.close()
    with ModelServerProcess() as model_server:
        cfg = fault_config(
            mosquitto.port,
            model_server.url,
            db,
            "ret",
            store={"prune_interval_s": 0.1},
            monitor={"retention_days": 7.0},
        )
        await _chore_prunes(cfg, db, old, now)


async def _chore_prunes(cfg: dict[str, Any], db: Path, old: int, now: int) -> None:
    async with running_consumer(cfg):
        s = make_store(f"sqlite:///{db}", readonly=True)
        await s.open()
        try:

            async def hist_buckets() -> list[int]:
                return [c[3] for c in await s.histograms(since_ns=0, until_ns=1 << 62)]

            async def pruned() -> bool:
                use = await s.usage(since_ns=0, until_ns=1 << 62)
                return await hist_buckets() == [old, now] and [c[3] for c in use] == [now]

            deadline = time.monotonic() + 20
            while not await pruned():
                assert time.monotonic() < deadline, await hist_buckets()
                await asyncio.sleep(0.05)  # polling the store, under a deadline
        finally:
            await s.close()
