"""The live stream's hub, driven poll by poll over real SQLite and PostgreSQL stores.

Rows are written through the consumer's store; a few are then given the
``stored_ns`` another writer would have produced (a commit stamped before one
that became visible earlier), to check the cursor's look-back and the
fan-out's bound. On PostgreSQL, several consumers' stores commit at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg
import msgspec
import pytest

from cloud.dashboard import StoreHandle, StreamHub, format_cursor
from cloud.dashboard.stream import Event, event_stream
from cloud.store import Commit, make_store
from tests.test_dashboard_api import archive_for, commit, reports, result_for

S = 1_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    return str(request.getfixturevalue("postgres_url"))


async def stamp(url: str, epoch: int, *, stored_ns: int) -> None:
    """What another writer's clock would have stamped (raw SQL: no store API writes this)."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        with con:
            con.execute("UPDATE results SET stored_ns = ? WHERE epoch = ?", (stored_ns, epoch))
        con.close()
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("UPDATE results SET stored_ns = $1 WHERE epoch = $2", stored_ns, epoch)
    finally:
        await conn.close()


def drain(q: asyncio.Queue[Event | None]) -> list[Event]:
    out = []
    while not q.empty():
        ev = q.get_nowait()
        assert ev is not None
        out.append(ev)
    return out


def epochs(events: list[Event]) -> list[int]:
    return [int(msgspec.json.decode(e.data)["epoch"]) for e in events if e.kind == "result"]


Started = tuple[StreamHub, asyncio.Queue[Event | None], StoreHandle]


async def start(url: str, **kw: float) -> Started:
    handle = StoreHandle(url)
    hub = StreamHub(handle, **kw)  # type: ignore[arg-type]
    hub._results_ns, hub._alarms_ns = await (await handle.get()).watermarks()
    await hub.poll_once(broadcast=False)
    return hub, hub.subscribe().queue, handle


async def test_late_commit_with_older_stamp_is_sent_once(url: str) -> None:
    await commit(url, reports(("p1",), 1, epoch=1))
    hub, q, handle = await start(url)
    now = time.time_ns()
    await commit(url, reports(("p1",), 1, epoch=2))
    await stamp(url, 2, stored_ns=now)
    await hub.poll_once()
    assert epochs(drain(q)) == [2]
    # A second writer's commit, stamped 1 s before the one already sent, shows up now.
    await commit(url, reports(("p1",), 1, epoch=3))
    await stamp(url, 3, stored_ns=now - 1 * S)
    await hub.poll_once()
    got = drain(q)
    assert epochs(got) == [3]
    assert got[-1].id == format_cursor(now, 0)  # the cursor never moves backwards
    await hub.poll_once()
    assert drain(q) == []
    await handle.close()


async def test_several_consumers_committing_at_once_are_all_streamed_once(
    postgres_url: str,
) -> None:
    """Four consumers' stores commit concurrently to one PostgreSQL while the hub runs:
    every result reaches the subscriber exactly once."""
    await commit(postgres_url, reports(("p1",), 1, epoch=1))
    handle = StoreHandle(postgres_url)
    hub = StreamHub(handle, poll_s=0.02)
    task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.ready.wait(), 10)
    q = hub.subscribe().queue
    stores = [make_store(postgres_url) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        async def consumer(k: int) -> None:
            for b in range(10):
                reps = reports(("p1", "p2"), 5, epoch=100 + k, seq0=5 * b)
                await stores[k].commit(Commit(results=[result_for(r) for r in reps],
                                              archive=[archive_for(r) for r in reps]))

        await asyncio.gather(*(consumer(k) for k in range(4)))
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + 10
        while len(seen) < 200 and time.monotonic() < deadline:
            ev = await asyncio.wait_for(q.get(), 10)
            assert ev is not None
            if ev.kind == "result":
                d = msgspec.json.decode(ev.data)
                seen.append((int(d["epoch"]), d["seq"]))
        assert len(seen) == 200 and len(set(seen)) == 200
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for s in stores:
            await s.close()
        await handle.close()


async def test_a_subscriber_that_falls_behind_is_ended_and_resumes_from_the_store(
    url: str,
) -> None:
    await commit(url, reports(("p1",), 1, epoch=1))
    hub, fast, handle = await start(url, queue_size=4)
    hub.ready.set()
    slow = event_stream(hub, None)
    assert await slow.__anext__() == b"retry: 1000\n\n"
    hello = await slow.__anext__()
    resume_at = hello.split(b"id: ")[1].split(b"\n")[0].decode()
    await commit(url, reports(("p1", "p2"), 6, epoch=2))
    await hub.poll_once()
    rest = [chunk async for chunk in slow]  # ends: dropped, not blocked
    assert rest == []
    assert hub.stats.subscribers_dropped == 2  # both 4-deep queues overflowed
    # EventSource reconnects with its last id and gets all 6 from the store.
    resumed = event_stream(hub, tuple(map(int, resume_at.split("."))))  # type: ignore[arg-type]
    chunks = [await resumed.__anext__() for _ in range(7)]
    assert sum(c.startswith(b"event: result") for c in chunks) == 6
    await resumed.aclose()
    del fast
    await handle.close()
