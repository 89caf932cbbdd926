"""The PostgreSQL results store: the SQLite store's contract tests, run against a throwaway
server, plus what only a shared database has to get right (several writers at once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.store import Commit, Store, StoreError, make_store
from cloud.store.postgres import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from tests.test_consumer_alarms import flags
from tests.test_store_sqlite import (
    archived,
    dead,
    result,
)
from tests.test_store_sqlite import (
    test_commit_is_idempotent_on_identity as test_commit_is_idempotent_on_identity,
)
from tests.test_store_sqlite import (
    test_dead_letters_keyed_per_part as test_dead_letters_keyed_per_part,
)
from tests.test_store_sqlite import (
    test_extra_fields_and_manifests_round_trip as test_extra_fields_and_manifests_round_trip,
)
from tests.test_store_sqlite import (
    test_known_handles_many_identities as test_known_handles_many_identities,
)
from tests.test_store_sqlite import (
    test_non_finite_model_output_is_stored_not_a_livelock as test_non_finite_output,
)
from tests.test_store_sqlite import (
    test_prune_by_arrival_time as test_prune_by_arrival_time,
)
from tests.test_store_sqlite import (
    test_queries_by_pump_and_window as test_queries_by_pump_and_window,
)
from tests.test_store_sqlite import (
    test_unsigned_64_bit_epochs_round_trip as test_unsigned_64_bit_epochs_round_trip,
)

__all__ = [
    "test_commit_is_idempotent_on_identity", "test_dead_letters_keyed_per_part",
    "test_extra_fields_and_manifests_round_trip",
    "test_known_handles_many_identities", "test_non_finite_output", "test_prune_by_arrival_time",
    "test_queries_by_pump_and_window", "test_unsigned_64_bit_epochs_round_trip",
]


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[Store]:
    s = make_store(postgres_url)
    assert isinstance(s, PostgresStore)
    await s.open()
    yield s
    await s.close()


async def test_several_writers_store_each_identity_once(postgres_url: str) -> None:
    """Four stores (as four consumers) commit overlapping redeliveries concurrently."""
    stores = [make_store(postgres_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))  # migrate once, under a lock
    try:
        async def writer(k: int, s: Store) -> int:
            inserted = 0
            for start in range(0, 400, 50):
                rows = [result(seq=i, t0=i) for i in range(start, start + 50)]
                out = await s.commit(Commit(results=rows, archive=[archived(r) for r in rows],
                                            dead_letters=[dead(part=start)]))
                inserted += out.results_inserted
            return inserted

        counts = await asyncio.gather(*(writer(k, s) for k, s in enumerate(stores)))
        assert sum(counts) == 400
        c = await stores[0].counts()
        assert (c.results, c.archive, c.dead_letters) == (400, 400, 8)
        assert await stores[1].known([("d1", 1, 5), ("d1", 1, 999)]) == {("d1", 1, 5)}
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_alarm_stamps_increase_across_writers(postgres_url: str) -> None:
    stores = [make_store(postgres_url) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        trackers = [AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1,
                                             zone_alarm_at=None)) for _ in stores]

        async def writer(k: int) -> list[int]:
            stamps = []
            for i in range(20):
                rows = flags("10", pump=f"P{k}-{i}")
                out = await stores[k].commit(Commit(alarms=trackers[k].observe(rows)))
                stamps += [a.updated_ns for a in out.alarms]
            return stamps

        all_stamps = [s for part in await asyncio.gather(*(writer(k) for k in range(3)))
                      for s in part]
        # each commit: an episode raised and cleared, and its pump's asset alarm (open)
        assert len(set(all_stamps)) == len(all_stamps) == 180
        alarms = await stores[0].alarms()
        assert [a.updated_ns for a in alarms] == sorted(a.updated_ns for a in alarms)
        episodes = [a for a in alarms if a.kind != "asset"]
        assert len(episodes) == 60 and {a.state for a in episodes} == {"cleared"}
        assets = await stores[0].alarms(state="raised")
        assert len(assets) == 60 and {a.kind for a in assets} == {"asset"}
    finally:
        for s in stores:
            await s.close()


async def test_unreachable_server_is_a_store_error() -> None:
    s = make_store("postgresql://postgres@127.0.0.1:1/none", connect_timeout_s=2)
    with pytest.raises(StoreError, match="cannot open postgresql store"):
        await s.open()


async def test_a_version_3_database_migrates_keeping_its_rows(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE pumpwatch_schema (version INTEGER)")
        for v, migration in enumerate(MIGRATIONS[:3], start=1):
            await conn.execute(migration)
            await conn.execute("INSERT INTO pumpwatch_schema (version) VALUES ($1)", v)
        await conn.execute(
            "INSERT INTO results (device, epoch, seq, site, pump, channel, t0_ns, condition, "
            "probabilities, anomaly_score, anomaly_threshold, anomalous, baseline, iso_zone, "
            "velocity_rms, rpm, evidence, model_version, target, published_ns, received_ns, "
            "stored_ns) VALUES ('d1', 1, 0, 's', 'p1', 'x', 0, 'healthy', '{}', 0.1, 1.0, "
            "false, 'fleet', 'A', 1.0, NULL, '[]', 'm1', 'ep', NULL, 1, 1)"
        )
    finally:
        await conn.close()
    s = make_store(postgres_url)
    await s.open()
    try:
        (old,) = await s.results()
        assert old.extra == {} and old.manifest_digest is None
        assert await s.manifests() == []
    finally:
        await s.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT max(version) FROM pumpwatch_schema") == \
            SCHEMA_VERSION == 10
    finally:
        await conn.close()
