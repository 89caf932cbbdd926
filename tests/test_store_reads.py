"""The store's read interface on both stores, and the rule that its SQL lives once.

The dashboard, the API and the CLI read only through these methods; each is
checked here against SQLite and PostgreSQL with the same assertions.
"""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import cloud.store
from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.store import Commit, Store, make_store
from tests.test_store_sqlite import archived
from tests.test_store_sqlite import result as _result

S = 1_000_000_000
STORE_DIR = Path(cloud.store.__file__).parent
TABLES = ("results", "archive", "dead_letters", "alarms", "alarm_state", "manifests", "latest",
          "monitor_hist", "monitor_runs", "monitor_usage")


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = make_store(f"sqlite:///{tmp_path / 'r.db'}", synchronous="normal")
    else:
        s = make_store(str(request.getfixturevalue("postgres_url")))
    await s.open()
    yield s
    await s.close()


def result(**over: object) -> cloud.store.ResultRow:
    return msgspec.structs.replace(_result(), **over)


def sql_literals(path: Path) -> list[str]:
    """String constants in a module that name one of the schema's tables."""
    words = re.compile(r"\b(" + "|".join(TABLES) + r")\b")
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    verbs = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER)\b")
    return [
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings and words.search(node.value) and verbs.search(node.value)
    ]


def test_no_statement_of_the_schema_is_in_either_store_module() -> None:
    """Statements on the tables live once, in _sql.py; the store modules hold only their
    dialect's own (PRAGMA user_version, pumpwatch_schema, advisory locks)."""
    assert sql_literals(STORE_DIR / "sqlite.py") == []
    assert sql_literals(STORE_DIR / "postgres.py") == []
    assert len(sql_literals(STORE_DIR / "_sql.py")) > 10  # the check sees statements
    for name in ("sqlite.py", "postgres.py"):
        text = (STORE_DIR / name).read_text()
        assert "_sql" in text and "_engine" in text


async def test_latest_is_the_newest_window_per_channel_whatever_the_commit_order(
    store: Store,
) -> None:
    rows = [result(seq=i, pump=f"p{i % 2}", t0_ns=1_000 + i * S) for i in range(10)]
    await store.commit(Commit(results=rows[5:]))
    await store.commit(Commit(results=rows[:5]))  # older windows committed later
    latest = await store.latest()
    assert [(r.pump, r.seq) for r in latest] == [("p0", 8), ("p1", 9)]
    assert [r.seq for r in await store.latest(pump="p1")] == [9]
    assert await store.last_t0("p1") == 1_000 + 9 * S
    assert await store.last_t0("nope") is None


async def test_series_is_bucketed_in_the_database(store: Store) -> None:
    rows = [result(seq=i, pump="p1", t0_ns=i * S, anomaly_score=float(i % 10), anomalous=i % 4 == 0)
            for i in range(1000)]
    await store.commit(Commit(results=rows, archive=[archived(rows[-1])]))
    raw = await store.series("p1", since_ns=0, until_ns=50 * S, max_points=100)
    assert raw.bucket_ns == 0 and raw.rows == 50 and raw.series[0].condition[0] is not None
    s = await store.series("p1", since_ns=0, until_ns=1000 * S, max_points=100)
    (ch,) = s.series
    assert s.rows == 1000 and s.bucket_ns == 10 * S and len(ch.t_ns) == 100
    assert sum(ch.count) == 1000 and max(ch.anomaly_score_max) == 9.0
    assert ch.anomaly_score[0] == pytest.approx(4.5) and sum(ch.anomalous) == 250
    assert ch.t_ns[0] == int(4.5 * S)  # mean window time of the bucket
    assert (await store.latest_archived("p1")) == archived(rows[-1])
    assert await store.latest_archived("p1", "nope") is None


async def test_recent_archived_is_the_newest_n_of_a_channel_newest_first(store: Store) -> None:
    rows = [result(seq=i, pump="p1", channel="xy"[i % 2], t0_ns=(i * 7 % 20) * S)
            for i in range(20)]  # committed out of window order
    await store.commit(Commit(results=rows, archive=[archived(r) for r in rows]))
    got = await store.recent_archived("p1", "x", limit=4)
    want = sorted((r for r in rows if r.channel == "x"), key=lambda r: -r.t0_ns)[:4]
    assert [a.seq for a in got] == [r.seq for r in want]
    assert len(await store.recent_archived("p1", limit=50)) == 20
    assert await store.recent_archived("p1", "z", limit=3) == []
    with pytest.raises(ValueError, match="limit"):
        await store.recent_archived("p1", limit=0)


async def test_alarm_reads_for_the_list_and_the_stream(store: Store) -> None:
    tracker = AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1, zone_alarm_at=None))
    flags = [True, False, True]  # raise, clear, raise again: two episodes
    outs = []
    for i, flag in enumerate(flags):
        r = result(seq=i, pump="p1", t0_ns=i * S, anomalous=flag)
        outs.append(await store.commit(Commit(results=[r]), alarms=tracker.evaluate))
    # every commit writes its episode, then the pump's asset alarm (one: never closed)
    assert [[a.kind for a in o.alarms] for o in outs] == [["anomaly", "asset"]] * 3
    assert len({a.id for o in outs for a in o.alarms if a.kind == "asset"}) == 1
    all_stamps = [a.updated_ns for o in outs for a in o.alarms]
    assert all_stamps == sorted(all_stamps) and len(set(all_stamps)) == 6
    stamps = [a.updated_ns for o in outs for a in o.alarms if a.kind != "asset"]
    by_update = await store.alarms(kind="episode")
    assert [a.state for a in by_update] == ["cleared", "raised"]
    newest = await store.alarms(order="raised_desc", limit=1, kind="episode")
    assert newest[0].raised_ns == 2 * S and newest[0].state == "raised"
    assert await store.active_alarms() == {"p1": 1}
    after = await store.alarms(since_updated_ns=stamps[1], upto_updated_ns=stamps[2])
    assert [a.updated_ns for a in after] == [stamps[2]]
    marks = await store.watermarks()
    assert marks[1] == all_stamps[-1] and marks[0] == outs[-1].stored_ns
    stored = await store.results_stored_after(outs[0].stored_ns)
    assert [r.seq for r in stored] == [1, 2]
    assert msgspec.structs.asdict(stored[0])["extra"] == {}


async def test_prune_takes_a_channel_whose_results_are_gone_off_the_fleet(store: Store) -> None:
    old = [result(seq=i, pump="p1", t0_ns=i * S, received_ns=10 + i) for i in range(3)]
    new = result(seq=9, pump="p2", t0_ns=S)
    await store.commit(Commit(results=[*old, new]))
    assert [r.pump for r in await store.latest()] == ["p1", "p2"]
    pruned = await store.prune(before_ns=1_000)
    assert pruned.results == 3
    assert [r.pump for r in await store.latest()] == ["p2"]
