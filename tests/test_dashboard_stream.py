"""The live stream's hub, driven poll by poll over a real SQLite store.

Rows are written through the consumer's store and then given the
``stored_ns`` / ``received_ns`` another writer or an endpoint outage would
have produced, to check the cursor's look-back, the straggler scan and the
fan-out's bound.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import msgspec

from cloud.dashboard import SQLiteReader, StreamHub, format_cursor
from cloud.dashboard.stream import Event, event_stream
from tests.test_dashboard_api import commit, reports

S = 1_000_000_000


def stamp(db: Path, epoch: int, *, stored_ns: int, received_ns: int | None = None) -> None:
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE results SET stored_ns = ?, received_ns = coalesce(?, received_ns) "
                    "WHERE epoch = ?", (stored_ns, received_ns, epoch))
    con.close()


def drain(q: asyncio.Queue[Event | None]) -> list[Event]:
    out = []
    while not q.empty():
        ev = q.get_nowait()
        assert ev is not None
        out.append(ev)
    return out


def epochs(events: list[Event]) -> list[int]:
    return [int(msgspec.json.decode(e.data)["epoch"]) for e in events]


Started = tuple[StreamHub, asyncio.Queue[Event | None], SQLiteReader]


async def start(db: Path, **kw: float) -> Started:
    reader = SQLiteReader(f"sqlite:///{db}", threads=1)
    reader.open()
    hub = StreamHub(reader, **kw)  # type: ignore[arg-type]
    hub._results_ns, hub._alarms_ns = await reader.watermarks()
    hub._full_from = hub._results_ns
    await hub.poll_once(broadcast=False)
    return hub, hub.subscribe().queue, reader


async def test_late_commit_with_older_stamp_is_sent_once(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    await commit(db, reports(("p1",), 1, epoch=1))
    hub, q, reader = await start(db)
    now = time.time_ns()
    await commit(db, reports(("p1",), 1, epoch=2))
    stamp(db, 2, stored_ns=now)
    await hub.poll_once(full=False)
    assert epochs(drain(q)) == [2]
    # A second writer's commit, stamped 1 s before the one already sent, shows up now.
    await commit(db, reports(("p1",), 1, epoch=3))
    stamp(db, 3, stored_ns=now - 1 * S)
    await hub.poll_once(full=False)
    got = drain(q)
    assert epochs(got) == [3]
    assert got[-1].id == format_cursor(now, 0)  # the cursor never moves backwards
    await hub.poll_once(full=False)
    assert drain(q) == []
    reader.close()


async def test_straggler_held_past_the_window_is_sent_by_the_full_scan(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    await commit(db, reports(("p1",), 1, epoch=1))
    hub, q, reader = await start(db, window_s=60.0, lag_s=5.0)
    now = time.time_ns()
    # Received 10 min ago (held through an endpoint outage), committed now; then newer
    # traffic moves the cursor 20 s on before the next full scan.
    await commit(db, reports(("p1",), 1, epoch=2))
    stamp(db, 2, stored_ns=now, received_ns=now - 600 * S)
    await commit(db, reports(("p1",), 1, epoch=3))
    stamp(db, 3, stored_ns=now + 20 * S, received_ns=now + 20 * S)
    await hub.poll_once(full=False)
    assert epochs(drain(q)) == [3]
    await hub.poll_once(full=True)
    assert epochs(drain(q)) == [2]
    await hub.poll_once(full=True)
    assert drain(q) == []
    reader.close()


async def test_a_subscriber_that_falls_behind_is_ended_and_resumes_from_the_store(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.db"
    await commit(db, reports(("p1",), 1, epoch=1))
    hub, fast, reader = await start(db, queue_size=4)
    hub.ready.set()
    slow = event_stream(hub, None)
    assert await slow.__anext__() == b"retry: 1000\n\n"
    hello = await slow.__anext__()
    resume_at = hello.split(b"id: ")[1].split(b"\n")[0].decode()
    await commit(db, reports(("p1", "p2"), 6, epoch=2))
    await hub.poll_once(full=True)
    rest = [chunk async for chunk in slow]  # ends: dropped, not blocked
    assert rest == []
    assert hub.stats.subscribers_dropped == 2  # both 4-deep queues overflowed
    # EventSource reconnects with its last id and gets all 6 from the store.
    resumed = event_stream(hub, tuple(map(int, resume_at.split("."))))  # type: ignore[arg-type]
    chunks = [await resumed.__anext__() for _ in range(7)]
    assert sum(c.startswith(b"event: result") for c in chunks) == 6
    await resumed.aclose()
    del fast
    reader.close()
