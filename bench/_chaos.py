"""The chaos run of ``bench.pipeline``: several consumers, PostgreSQL or SQLite, faults injected.

    python -m bench.pipeline --json --store postgresql --consumers 2 --chaos

Real parts: Mosquitto (persistence on), the model server behind the
fault-injecting proxy (tests/infra/fault_proxy.py), ``--consumers``
``pumpwatch cloud`` processes on one shared subscription (persistent sessions,
stable client ids), and the store (``postgresql``: a throwaway server this
process starts; a ``postgresql://`` URL: an existing one; ``sqlite``: one file).

One run: ``--reports`` reports (8 per message, 16 gateways) published as fast
as the broker takes them, plus ``--poison`` reports the proxy answers with
ModelError. As the stored count passes milestones the chaos schedule fires:
503 for ``--outage-s``, 429 throttling, ModelNotReady, connection resets,
responses slower than the consumer's timeout, and consumer 1 SIGKILLed and
restarted (same client id: its session and unacknowledged messages wait at
the broker). ``reports_per_s`` = reports stored / (last commit - first
publish): the whole run, outages included. ``max_backlog`` = the most
reports published (PUBACKed by the broker) but not yet stored, sampled every
0.1 s. ``lost`` = published good reports without a result row,
``duplicates_stored`` = rows beyond one per identity, ``dead_lettered`` =
model dead letters (each poison report must be exactly one).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dsp
from tests.infra.fault_proxy import FaultProxy
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import (
    ConsumerProcess,
    Publisher,
    chunks,
    consumer_config,
    encoded_reports,
    write_toml,
)
from tests.infra.postgres import PostgresServer

PER_MESSAGE = 8
Identity = tuple[str, int, int]


class Tally:
    """Reads what the consumers wrote for one run (epoch), from PostgreSQL or SQLite."""

    def __init__(self, url: str, epoch: int) -> None:
        self.url = url
        self.epoch = epoch
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None

    def _pg(self, sql: str) -> list[Any]:
        import asyncpg

        async def q() -> list[Any]:
            if self._conn is None:
                self._conn = await asyncpg.connect(self.url)
            try:
                return list(await self._conn.fetch(sql, self.epoch))
            except asyncpg.UndefinedTableError:
                return []

        return self._loop.run_until_complete(q())

    def _sqlite(self, sql: str) -> list[Any]:
        path = self.url.removeprefix("sqlite:///")
        if not Path(path).exists():
            return []
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql.replace("$1", "?"), (self.epoch,)).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def query(self, sql: str) -> list[Any]:
        return self._sqlite(sql) if self.url.startswith("sqlite") else self._pg(sql)

    def stored(self) -> int:
        rows = self.query("SELECT count(*) FROM results WHERE epoch = $1")
        return int(rows[0][0]) if rows else 0

    def rows(self) -> list[tuple[str, int, int, int | None, int]]:
        return [tuple(r) for r in self.query(
            "SELECT device, epoch, seq, published_ns, stored_ns FROM results WHERE epoch = $1")]

    def model_dead_letters(self) -> list[Identity]:
        return [tuple(r) for r in self.query(
            "SELECT device, epoch, seq FROM dead_letters WHERE kind = 'model' AND epoch = $1")]

    def close(self) -> None:
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def chaos_run(
    *, work: Path, store: str, consumers: int, n_reports: int, n_poison: int, outage_s: float,
    chaos: bool, say: Callable[[str], None],
) -> dict[str, Any]:
    epoch = int(time.time()) & 0xFFFFFF
    root = f"chaos{epoch}"
    devices = [f"cgw{i:02d}" for i in range(16)]
    per_dev = -(-n_reports // len(devices))
    by_dev = {
        d: chunks(encoded_reports(d, epoch, range(per_dev), pumps=[f"{d}-p{k}" for k in range(4)]),
                  PER_MESSAGE)
        for d in devices
    }
    messages = [(f"{root}/devices/{d}/reports", dsp.encode_batch(d, by_dev[d][k]))
                for k in range(len(by_dev[devices[0]])) for d in devices]
    published = {(d, epoch, s) for d in devices for s in range(per_dev)}
    # Poison: reports spread over the run, refused by the "model" (the proxy).
    step = max(1, per_dev // (n_poison + 1))
    poison = {(devices[i % len(devices)], epoch, step * (i + 1)) for i in range(n_poison)}
    good = published - poison

    pg: PostgresServer | None = None
    broker = Mosquitto(work / "mosquitto", max_inflight_messages=1000,
                       log_types=("error", "warning"))
    procs: list[ConsumerProcess] = []
    try:
        if store == "postgresql":
            pg = PostgresServer().start()
            url = pg.create_database("bench")
        elif store.startswith(("postgresql://", "postgres://")):
            url = store
        else:
            url = f"sqlite:///{work / 'chaos.db'}"
        broker.start()
        with ModelServerProcess() as server, FaultProxy(server.url) as proxy:
            proxy.poison(*poison)
            for i in range(consumers):
                cfg = consumer_config(
                    broker_port=broker.port, endpoint_url=proxy.url, db=url, topic_root=root,
                    client_id=f"bench-consumer-{i}", group="bench",
                    batch={"max_size": 128, "max_delay_ms": 50},
                    store={"synchronous": "normal"},
                    endpoint={"max_concurrency": 4, "timeout_s": 2.0, "connect_timeout_s": 1.0,
                              "retry_initial_s": 0.1, "retry_max_s": 1.0,
                              "breaker_failures": 5, "breaker_open_s": 0.25,
                              "breaker_open_max_s": 2.0},
                    consumer={"drain_timeout_s": 5.0, "stats_interval_s": 0},
                )
                procs.append(ConsumerProcess(write_toml(work / f"c{i}.toml", cfg),
                                             work / f"c{i}.log"))
            for p in procs:
                p.start()
            for p in procs:
                if not _wait(lambda p=p: "mqtt connected" in p.log_tail(300)  # type: ignore[misc]
                             or not p.running, 60) or not p.running:
                    raise RuntimeError(f"consumer did not connect:\n{p.log_tail()}")
            time.sleep(0.5)
            tally = Tally(url, epoch)
            acked = [0]
            done = threading.Event()
            events: list[str] = []

            def publish() -> None:
                with Publisher("127.0.0.1", broker.port, f"bench-chaos-pub{epoch}",
                               max_inflight=200) as pub:
                    infos = [pub.publish(t, p) for t, p in messages]
                    for info in infos:
                        info.wait_for_publish(120)
                        acked[0] += PER_MESSAGE
                done.set()

            t0 = time.monotonic()
            publisher = threading.Thread(target=publish, daemon=True)
            publisher.start()
            schedule: list[tuple[float, str]] = []
            if chaos:
                schedule = [(0.10, "503"), (0.25, "kill"), (0.40, "429"), (0.50, "not_ready"),
                            (0.60, "reset"), (0.70, "slow")]
            max_backlog = 0
            victim = procs[1] if len(procs) > 1 else procs[0]
            restart_at: float | None = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                stored = tally.stored()
                max_backlog = max(max_backlog, min(acked[0], len(published)) - stored)
                if stored >= len(good) and len(tally.model_dead_letters()) >= len(poison):
                    break
                frac = stored / len(good)
                while schedule and frac >= schedule[0][0]:
                    _, what = schedule.pop(0)
                    at = round(time.monotonic() - t0, 2)
                    if what == "kill":
                        victim.kill()
                        restart_at = time.monotonic() + outage_s
                        events.append(f"{at}s: consumer killed (SIGKILL)")
                    elif what == "slow":
                        proxy.fault("slow", seconds=outage_s / 2, delay_s=3.0)
                        events.append(f"{at}s: slow responses for {outage_s / 2} s")
                    else:
                        secs = outage_s if what == "503" else outage_s / 2
                        proxy.fault(what, seconds=secs)  # type: ignore[arg-type]
                        events.append(f"{at}s: {what} for {secs} s")
                    say(events[-1])
                if restart_at is not None and time.monotonic() >= restart_at:
                    victim.start()
                    restart_at = None
                    events.append(f"{round(time.monotonic() - t0, 2)}s: consumer restarted")
                    say(events[-1])
                time.sleep(0.1)
            publisher.join(30)
            rows = tally.rows()
            dls = tally.model_dead_letters()
            tally.close()
            proxy_stats = dict(proxy.stats)
    finally:
        for p in procs:
            p.stop(30)
        broker.stop()
        if pg is not None:
            pg.stop()
    ids = [(d, e, s) for d, e, s, _, _ in rows]
    distinct = set(ids)
    lost = len(good - distinct)
    duplicates = (len(ids) - len(distinct)) + len(distinct - good)
    first_pub = min((p for *_, p, _ in rows if p is not None), default=0)
    last_stored = max((s for *_, s in rows), default=0)
    rps = len(rows) / ((last_stored - first_pub) / 1e9) if rows and last_stored > first_pub else 0
    return {
        "reports_per_s": round(rps, 1),
        "lost": lost,
        "duplicates_stored": duplicates,
        "poison_injected": len(poison),
        "dead_lettered": len(dls),
        "dead_lettered_exactly_the_poison": set(dls) == poison,
        "max_backlog": max_backlog,
        "reports": len(published),
        "consumers": consumers,
        "store": "postgresql" if "postgres" in url else "sqlite",
        "chaos": chaos,
        "outage_s": outage_s,
        "events": events,
        "proxy": proxy_stats,
    }
