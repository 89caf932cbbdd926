"""The SQLite results store: schema, idempotent writes, 64-bit epochs, queries, retention."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from cloud.store import (
    ArchivedReport,
    Commit,
    DeadLetter,
    EvidenceRow,
    ManifestRow,
    ResultRow,
    SchemaError,
    SQLiteStore,
    Store,
    StoreError,
    make_store,
)
from cloud.store.sqlite import MIGRATIONS, SCHEMA_VERSION, path_from_url

BIG_EPOCH = (1 << 64) - 3  # above the signed 64-bit range


def result(device: str = "d1", epoch: int = 1, seq: int = 0, *, t0: int = 0, pump: str = "p1",
           received: int | None = None, condition: str = "healthy") -> ResultRow:
    return ResultRow(
        device=device, epoch=epoch, seq=seq, site="s", pump=pump, channel="x", t0_ns=t0,
        condition=condition, probabilities={"healthy": 0.9, "imbalance": 0.1},
        anomaly_score=0.7, anomaly_threshold=2.0, anomalous=False, baseline="fleet",
        iso_zone="A", velocity_rms=1.2, rpm=2950.0,
        evidence=[EvidenceRow("v1x", 1.1, "1x line")], model_version="m1", target="ep",
        published_ns=10, received_ns=received if received is not None else time.time_ns(),
    )


def archived(r: ResultRow) -> ArchivedReport:
    return ArchivedReport(
        device=r.device, epoch=r.epoch, seq=r.seq, site=r.site, pump=r.pump, channel=r.channel,
        t0_ns=r.t0_ns, received_ns=r.received_ns, report=b"\x93raw" + bytes([r.seq % 256]),
    )


def dead(key: bytes = b"k" * 16, part: int = -1, received: int | None = None) -> DeadLetter:
    return DeadLetter(
        key=key, part=part, received_ns=received if received is not None else time.time_ns(),
        topic="t/devices/d1/reports", kind="malformed", reason="truncated", payload=b"\x00\x01",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SQLiteStore(f"sqlite:///{tmp_path / 'r.db'}", synchronous="normal")
    await s.open()
    yield s
    await s.close()


def test_url_parsing(tmp_path: Path) -> None:
    assert path_from_url("sqlite:///rel/x.db") == Path("rel/x.db")
    assert path_from_url("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert path_from_url("plain.db") == Path("plain.db")
    with pytest.raises(StoreError, match="sqlite:///PATH"):
        path_from_url("sqlite://host/x.db")
    assert isinstance(make_store(f"sqlite:///{tmp_path}/a.db"), SQLiteStore)
    assert type(make_store("postgresql://localhost/db")).__name__ == "PostgresStore"
    with pytest.raises(StoreError, match="scheme"):
        make_store("mongodb://x")


async def test_creates_schema_in_wal_mode(store: SQLiteStore) -> None:
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"results", "archive", "dead_letters"} <= tables
    con.close()


async def test_commit_is_idempotent_on_identity(store: SQLiteStore) -> None:
    rows = [result(seq=i, t0=i) for i in range(10)]
    out = await store.commit(Commit(results=rows, archive=[archived(r) for r in rows],
                                    dead_letters=[dead()]))
    assert (out.results_inserted, out.archived, out.dead_lettered) == (10, 10, 1)
    # Redelivery: the same identities again (even with a different result) change nothing.
    again = [result(seq=i, t0=i, condition="looseness") for i in range(10)]
    out = await store.commit(Commit(results=again, archive=[archived(r) for r in again],
                                    dead_letters=[dead()]))
    assert (out.results_inserted, out.archived, out.dead_lettered) == (0, 0, 0)
    counts = await store.counts()
    assert (counts.results, counts.archive, counts.dead_letters) == (10, 10, 1)
    got = await store.results(pump="p1")
    assert [r.seq for r in got] == list(range(10))
    assert {r.condition for r in got} == {"healthy"}  # first result wins
    assert got[0].evidence == [EvidenceRow("v1x", 1.1, "1x line")]
    assert got[0].probabilities == {"healthy": 0.9, "imbalance": 0.1}
    assert got[0].stored_ns > 0


async def test_unsigned_64_bit_epochs_round_trip(store: SQLiteStore) -> None:
    rows = [result(epoch=BIG_EPOCH, seq=1), result(epoch=(1 << 63), seq=2), result(epoch=0)]
    await store.commit(Commit(results=rows, archive=[archived(r) for r in rows]))
    got = {r.identity for r in await store.results()}
    assert got == {r.identity for r in rows}
    assert await store.known([("d1", BIG_EPOCH, 1), ("d1", BIG_EPOCH, 9)]) == {
        ("d1", BIG_EPOCH, 1)
    }
    arch = await store.archived(pump="p1")
    assert {a.epoch for a in arch} == {BIG_EPOCH, 1 << 63, 0}


async def test_known_handles_many_identities(store: SQLiteStore) -> None:
    rows = [result(seq=i) for i in range(0, 2000, 2)]
    await store.commit(Commit(results=rows))
    wanted = [("d1", 1, i) for i in range(2000)]
    assert await store.known(wanted) == {("d1", 1, i) for i in range(0, 2000, 2)}
    assert await store.known([]) == set()


async def test_queries_by_pump_and_window(store: SQLiteStore) -> None:
    rows = [result(seq=i, t0=i * 100, pump=f"p{i % 2}") for i in range(10)]
    await store.commit(Commit(results=rows, archive=[archived(r) for r in rows]))
    got = await store.results(pump="p0", since_ns=200, until_ns=800)
    assert [r.seq for r in got] == [2, 4, 6]
    assert [r.seq for r in await store.results(limit=3)] == [0, 1, 2]
    # newest first: --limit keeps the latest rows (pumpwatch results)
    assert [r.seq for r in await store.results(limit=3, newest_first=True)] == [9, 8, 7]
    assert [r.seq for r in await store.results(pump="p1", newest_first=True)] == [9, 7, 5, 3, 1]
    arch = await store.archived(pump="p1", since_ns=300)
    assert [a.seq for a in arch] == [3, 5, 7, 9]
    assert arch[0].report == b"\x93raw\x03"


async def test_dead_letters_keyed_per_part(store: SQLiteStore) -> None:
    await store.commit(Commit(dead_letters=[dead(part=0), dead(part=1), dead(part=0)]))
    dls = await store.dead_letters()
    assert [(d.part, d.kind, d.reason) for d in dls] == [
        (0, "malformed", "truncated"), (1, "malformed", "truncated"),
    ]
    assert dls[0].payload == b"\x00\x01"


async def test_prune_by_arrival_time(store: SQLiteStore) -> None:
    old = [result(seq=i, received=1000) for i in range(3)]
    new = [result(seq=10 + i, received=5000) for i in range(2)]
    await store.commit(Commit(
        results=old + new, archive=[archived(r) for r in old + new],
        dead_letters=[dead(b"a" * 16, received=1000), dead(b"b" * 16, received=5000)],
    ))
    out = await store.prune(before_ns=2000)
    assert (out.results, out.archive, out.dead_letters) == (3, 3, 1)
    assert [r.seq for r in await store.results()] == [10, 11]


async def test_rejects_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.close()
    s = SQLiteStore(str(db))
    with pytest.raises(SchemaError, match="newer"):
        await s.open()


async def test_reopen_keeps_data_and_readonly_reader(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s = SQLiteStore(url)
    await s.open()
    await s.commit(Commit(results=[result()]))
    reader = SQLiteStore(url, readonly=True)
    await reader.open()
    assert len(await reader.results()) == 1
    await reader.close()
    await s.close()
    await s.close()  # idempotent
    s2 = SQLiteStore(url)
    await s2.open()
    assert (await s2.counts()).results == 1
    await s2.close()
    with pytest.raises(StoreError, match="not open"):
        await s2.counts()


async def test_store_errors_are_converted(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    s = SQLiteStore(str(tmp_path / "dir.db"))
    with pytest.raises(StoreError):
        await s.open()


async def test_non_finite_model_output_is_stored_not_a_livelock(store: SQLiteStore) -> None:
    """A model answering NaN must not make every later commit fail (SQLite: NaN -> NULL)."""
    nan = float("nan")
    r = msgspec.structs.replace(
        result(seq=5), anomaly_score=nan, anomaly_threshold=float("inf"), velocity_rms=nan,
        probabilities={"healthy": nan}, evidence=[EvidenceRow("x", nan)],
    )
    out = await store.commit(Commit(results=[r]))
    assert out.results_inserted == 1
    (got,) = await store.results()
    assert math.isnan(got.anomaly_score) and math.isnan(got.velocity_rms)
    assert got.anomaly_threshold == float("inf")
    assert math.isnan(got.probabilities["healthy"])
    assert math.isnan(got.evidence[0].value)


async def test_extra_fields_and_manifests_round_trip(store: SQLiteStore) -> None:
    """The open contract: a model's own result fields and its manifest, kept whole."""
    extra = {"centroid_distance": 0.25, "cluster": {"id": 3, "tags": ["a", "b"]},
             "note": "quote ' and \" and \\u0000", "missing": None}
    with_extra = msgspec.structs.replace(result(seq=1, condition="dry_running"), extra=extra,
                                         manifest_digest="abc123")
    m = ManifestRow(digest="abc123", model_version="m2",
                    manifest='{"model_version":"m2","classes":[],"fields":{"x":"y"}}')
    out = await store.commit(Commit(results=[result(seq=0), with_extra], manifests=[m]))
    assert out.results_inserted == 2
    # the same digest again (another consumer, a restart): stored once, first wins
    await store.commit(Commit(manifests=[msgspec.structs.replace(m, manifest="{}"), m]))
    plain, got = await store.results()
    assert plain.extra == {} and plain.manifest_digest is None
    assert got.condition == "dry_running"
    assert got.extra == extra and got.manifest_digest == "abc123"
    (stored,) = await store.manifests()
    assert (stored.digest, stored.model_version, stored.manifest) == (
        m.digest, m.model_version, m.manifest)
    assert stored.stored_ns > 0


async def test_a_version_3_store_migrates_keeping_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "v3.db"
    con = sqlite3.connect(db, isolation_level=None)
    for migration in MIGRATIONS[:3]:
        con.executescript(migration)
    con.execute("PRAGMA user_version=3")
    con.execute(
        "INSERT INTO results (device, epoch, seq, site, pump, channel, t0_ns, condition, "
        "probabilities, anomaly_score, anomaly_threshold, anomalous, baseline, iso_zone, "
        "velocity_rms, rpm, evidence, model_version, target, published_ns, received_ns, "
        "stored_ns) VALUES ('d1', 1, 0, 's', 'p1', 'x', 0, 'healthy', '{}', 0.1, 1.0, 0, "
        "'fleet', 'A', 1.0, NULL, '[]', 'm1', 'ep', NULL, 1, 1)"
    )
    con.close()
    s = SQLiteStore(str(db))
    await s.open()
    try:
        (old,) = await s.results()
        assert old.extra == {} and old.manifest_digest is None
        assert await s.manifests() == []
    finally:
        await s.close()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
    con.close()


async def test_alarm_changes_stored_before_the_outbox_are_not_replayed(tmp_path: Path) -> None:
    """Migration 10 (the alarm-change outbox): changes already stored are marked
    ``before_outbox``, so a dashboard that starts publishing does not replay history."""
    db = tmp_path / "v9.db"
    con = sqlite3.connect(db, isolation_level=None)
    for migration in MIGRATIONS[:9]:
        con.executescript(migration)
    con.execute("PRAGMA user_version=9")
    con.execute("INSERT INTO alarm_events (alarm_id, at_ns, actor, action, detail) "
                "VALUES ('p1:asset:1', 5, 'ann', 'ack', '{}')")
    con.close()
    s = SQLiteStore(str(db))
    await s.open()
    try:
        assert await s.alarm_outbox_depth() == (0, None)
        assert [e.action for e in await s.alarm_events("p1:asset:1")] == ["ack"]
    finally:
        await s.close()
    con = sqlite3.connect(db)
    assert con.execute("SELECT published_ns, publish_outcome FROM alarm_events").fetchall() == [
        (5, "before_outbox")]
    con.close()
