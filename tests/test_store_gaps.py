"""Gaps and dead-letter byte retention: one statement each, on SQLite and PostgreSQL, and
the dashboard's /api/devices/{device}/gaps over it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.store import Commit, DeadLetter, Gap, Store, make_store
from tests.test_dashboard_api import db as db  # the fixture: SQLite and PostgreSQL
from tests.test_dashboard_api import served
from tests.test_store_sqlite import BIG_EPOCH, result

HOUR = 3600 * 10**9


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = make_store(url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _dead(device: str, epoch: int, seq: int, received: int, size: int = 10) -> DeadLetter:
    return DeadLetter(key=seq.to_bytes(16, "big"), part=0, received_ns=received,
                      topic=f"t/devices/{device}/reports", kind="lengths", reason="r" * 10,
                      payload=b"x" * size, device=device, epoch=epoch, seq=seq)


async def fill(s: Store) -> int:
    """Commit the streams below; returns "now" (taken here: a test's grace period counts
    from when its rows were written, not from when the module was collected)."""
    now = time.time_ns()
    old = now - HOUR
    rows = [result("d1", BIG_EPOCH, q, received=old) for q in (0, 1, 2, 5, 6, 9)]
    rows += [result("d1", 7, q, received=old) for q in (2, 3)]  # starts late: 0..1 missing
    rows += [result("d1", 8, q, received=now) for q in (0, 4)]  # too young to be a gap
    rows += [result("d2", 1, q, received=old) for q in (0, 3)]
    await s.commit(Commit(results=rows, dead_letters=[_dead("d1", BIG_EPOCH, 3, old)]))
    return now


async def test_gaps_are_the_uncommitted_ranges_older_than_the_grace_period(
    any_store: Store,
) -> None:
    now = await fill(any_store)
    gaps = await any_store.gaps(device="d1", before_ns=now - 10**9)
    got = sorted((g.epoch, g.first, g.last) for g in gaps)
    # seq 3 is a dead letter: committed, so not a gap
    assert got == sorted([(BIG_EPOCH, 4, 4), (BIG_EPOCH, 7, 8), (7, 0, 1)])
    assert all(isinstance(g, Gap) and g.after_received_ns == now - HOUR for g in gaps)
    everyone = await any_store.gaps(before_ns=now + 10**9)
    assert {(g.device, g.epoch, g.first, g.last) for g in everyone} >= {
        ("d2", 1, 1, 2), ("d1", 8, 1, 3)}
    assert sum(g.count for g in everyone) == 1 + 2 + 2 + 2 + 3


async def test_dead_letters_are_kept_under_a_byte_budget_oldest_deleted_first(
    any_store: Store,
) -> None:
    old = time.time_ns() - HOUR
    dls = [_dead("d1", 1, q, old + q, size=90) for q in range(10)]  # 100 bytes each
    await any_store.commit(Commit(dead_letters=dls))
    assert await any_store.prune_dead_letters(max_bytes=350) == 7
    kept = await any_store.dead_letters()
    assert [d.seq for d in kept] == [7, 8, 9]
    assert await any_store.prune_dead_letters(max_bytes=350) == 0


async def test_gaps_api(db: str) -> None:
    """The route, on both stores (``db``: a SQLite file or a fresh PostgreSQL database)."""
    s = make_store(db)
    await s.open()
    await fill(s)
    await s.close()
    async with served(db) as client:
        async with client.get("/api/devices/d1/gaps") as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["missing"] == 1 + 2 + 2 and body["grace_s"] == 600
        assert {(g["epoch"], g["first"], g["last"]) for g in body["gaps"]} == {
            (f"{BIG_EPOCH:016x}", 4, 4), (f"{BIG_EPOCH:016x}", 7, 8), (f"{7:016x}", 0, 1)}
        async with client.get("/api/devices/d1/gaps?grace_s=0") as resp:
            assert (await resp.json())["missing"] == 5 + 3  # epoch 8 is young
        for bad in ["/api/devices/a+b/gaps", "/api/devices/d1/gaps?grace_s=-1",
                    "/api/devices/d1/gaps?what=1"]:
            async with client.get(bad) as resp:
                assert resp.status == 400, bad
