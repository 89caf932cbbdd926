"""The shadow table (migration 8): a shadow version's results stored once per report and
version, beside production's, on SQLite and PostgreSQL through the one store layer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.store import Commit, ShadowRow, Store, make_store
from tests.test_store_sqlite import BIG_EPOCH, result


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


def shadow(device: str, epoch: int, seq: int, *, version: str = "g/2", condition: str = "unknown",
           score: float = 0.9, pclass: str = "centrifugal",
           received: int | None = None) -> ShadowRow:
    return ShadowRow(
        device=device, epoch=epoch, seq=seq, model_version=version, production_version="m1",
        pump_class=pclass, site="s", pump="p1", channel="x", t0_ns=seq, condition=condition,
        probabilities={"unknown": 0.6, "healthy": 0.4}, anomaly_score=score,
        anomaly_threshold=2.0, anomalous=False, decided_by="classifier",
        received_ns=received if received is not None else time.time_ns(),
    )


async def test_shadow_rows_are_stored_once_and_paired_with_production(any_store: Store) -> None:
    s = any_store
    prod = [result("d1", BIG_EPOCH, q) for q in range(4)]
    rows = [shadow("d1", BIG_EPOCH, q, condition="healthy" if q < 1 else "unknown")
            for q in range(4)]
    # seq 9's production result is not stored (yet): its shadow row waits, unpaired
    out = await s.commit(Commit(results=prod, shadow=[*rows, shadow("d1", BIG_EPOCH, 9)]))
    assert out.shadow_inserted == 5 and out.results_inserted == 4
    # re-delivery: the same shadow results again (and another version's for one report)
    again = await s.commit(Commit(shadow=[*rows, shadow("d1", BIG_EPOCH, 0, version="g/3")]))
    assert again.shadow_inserted == 1
    pairs = await s.shadow_pairs(shadow_version="g/2")
    assert [(p.epoch, p.seq) for p in pairs] == [(BIG_EPOCH, q) for q in range(4)]
    p0 = pairs[0]
    assert (p0.production_version, p0.production_condition, p0.production_score) == \
        ("m1", "healthy", 0.7)
    assert (p0.shadow_version, p0.shadow_condition, p0.shadow_score, p0.pump_class,
            p0.shadow_decided_by) == ("g/2", "healthy", 0.9, "centrifugal", "classifier")
    assert [p.shadow_condition for p in pairs[1:]] == ["unknown"] * 3
    assert len(await s.shadow_pairs(version_prefix="g/")) == 5
    assert len(await s.shadow_pairs(version_prefix="g/", limit=2)) == 2
    assert await s.shadow_pairs(version_prefix="other/") == []
    assert [p.seq for p in await s.shadow_pairs(shadow_version="g/3")] == [0]
    await s.commit(Commit(results=[result("d1", BIG_EPOCH, 9)]))
    assert len(await s.shadow_pairs(shadow_version="g/2")) == 5  # now paired


async def test_prune_deletes_old_shadow_rows(any_store: Store) -> None:
    s = any_store
    now = time.time_ns()
    await s.commit(Commit(results=[result("d2", 1, q, received=now) for q in range(2)],
                          shadow=[shadow("d2", 1, 0, received=now - 10**12),
                                  shadow("d2", 1, 1, received=now)]))
    await s.prune(before_ns=now - 10**9)
    assert [p.seq for p in await s.shadow_pairs()] == [1]
