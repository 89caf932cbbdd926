"""The consumer against real parts: Mosquitto, the local model server, SQLite.

Every test publishes reports with known identities and then checks the
results table holds exactly one row per published identity (count and set),
whatever was injected: bad messages, redeliveries, a broker restart, a
consumer killed with SIGKILL mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsp
from cloud.consumer import Consumer, config_from_dict
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

Identity = tuple[str, int, int]


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory(max_inflight_messages=1000).start()


def stored(db: Path) -> list[Identity]:
    """All result identities (a separate reader, as a dashboard would be)."""
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=10)
    try:
        rows = con.execute("SELECT device, epoch, seq FROM results").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    return [(d, e if e >= 0 else e + (1 << 64), s) for d, e, s in rows]


def dead_letters(db: Path) -> list[tuple[str, int, str]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT kind, part, reason FROM dead_letters ORDER BY id").fetchall()
    finally:
        con.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_exactly_once(db: Path, published: set[Identity]) -> None:
    rows = stored(db)
    assert len(rows) == len(set(rows)), "duplicate result rows"
    missing = published - set(rows)
    extra = set(rows) - published
    assert not missing, f"{len(missing)} reports lost, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:3]}"
    assert len(rows) == len(published)


class Stream:
    """Publishes messages from a thread, like an edge agent: republish until PUBACKed."""

    def __init__(self, port: int, topic: str, payloads: list[bytes], *, rate_hz: float,
                 client_id: str) -> None:
        self.port = port
        self.topic = topic
        self.payloads = payloads
        self.rate_hz = rate_hz
        self.client_id = client_id
        self.sent = 0
        self.republished = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            pub = Publisher("127.0.0.1", self.port, self.client_id)
            try:
                for payload in self.payloads:
                    t_next = time.monotonic() + 1.0 / self.rate_hz
                    while True:  # at-least-once: an edge spool resends until acknowledged
                        info = pub.publish(self.topic, payload)
                        try:
                            info.wait_for_publish(2.0)
                            ok = info.is_published()
                        except (RuntimeError, ValueError):  # not connected right now
                            ok = False
                        if ok:
                            break
                        self.republished += 1
                        time.sleep(0.1)
                    self.sent += 1
                    time.sleep(max(0.0, t_next - time.monotonic()))
            finally:
                pub.close()
        except BaseException as exc:
            self.error = exc

    def start(self) -> Stream:
        self.thread.start()
        return self

    def join(self, timeout: float = 60.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "publisher did not finish"
        if self.error is not None:
            raise self.error


@contextlib.asynccontextmanager
async def running_consumer(cfg: dict[str, Any]) -> AsyncIterator[Consumer]:
    consumer = Consumer(config_from_dict(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.wait_for(consumer.started.wait(), 10)
    assert consumer._mqtt is not None
    await asyncio.wait_for(consumer._mqtt.connected.wait(), 10)
    await asyncio.sleep(0.2)  # subscription granted
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def await_rows(db: Path, n: int, within_s: float) -> None:
    await asyncio.to_thread(wait_for, lambda: len(stored(db)) >= n, within_s, f"{n} rows")


async def test_bad_messages_are_dead_lettered_while_good_traffic_flows(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "dl"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, mqtt={"max_payload": 16 * 1024})
    good = encoded_reports("dev1", 11, range(300))
    spoof_reports = encoded_reports("dev2", 11, range(3))
    topic = f"{root}/devices/dev1/reports"
    bad: list[tuple[str, bytes, str]] = [
        (topic, dsp.encode_batch("dev1", good[:2])[:-40], "malformed"),  # truncated
        (topic, b"\xc1\xc1\xc1", "malformed"),
        (topic, msgspec.msgpack.encode({"v": 9, "device": "dev1", "reports": []}), "schema"),
        (topic, msgspec.msgpack.encode({"v": 1, "device": "dev1", "reports": [[1, 2]]}),
         "schema"),
        (topic, dsp.encode_batch("dev2", spoof_reports), "spoofed"),  # envelope lies
        (topic, dsp.encode_batch("dev1", spoof_reports[:1]), "spoofed"),  # report lies
        (topic, dsp.encode_batch("dev1", good[:1] * 12), "oversize"),  # > 16 KiB
    ]
    async with running_consumer(cfg) as consumer:
        with Publisher("127.0.0.1", broker.port, "pub-dl") as pub:
            messages = chunks(good, 6)
            for i, batch in enumerate(messages):
                await asyncio.to_thread(pub.publish_all, topic, [dsp.encode_batch("dev1", batch)])
                if i < len(bad):
                    await asyncio.to_thread(pub.publish_all, bad[i][0], [bad[i][1]])
        await await_rows(db, len(good), 30)
        await asyncio.to_thread(
            wait_for, lambda: consumer.counters.acks == len(messages) + len(bad), 10, "acks"
        )
        stats = consumer.stats()
    assert_exactly_once(db, {("dev1", 11, s) for s in range(300)})
    kinds = sorted(k for k, _, _ in dead_letters(db))
    assert kinds == sorted(k for _, _, k in bad)
    assert all(reason for _, _, reason in dead_letters(db))
    assert stats["unacked_messages"] == 0
    assert stats["handoff"]["drops"] == 0
    # the archive holds every accepted report's bytes exactly as published
    con = sqlite3.connect(db)
    arch = {(d, s): bytes(b) for d, s, b in con.execute(
        "SELECT device, seq, report FROM archive")}
    con.close()
    assert len(arch) == 300
    assert arch[("dev1", 17)] == good[17]


async def test_redelivered_messages_yield_one_row_each(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "redeliver"
    topic = f"{root}/devices/devA/reports"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root)
    reports = encoded_reports("devA", (1 << 64) - 5, range(200))  # epoch above int64 too
    messages = [dsp.encode_batch("devA", c) for c in chunks(reports, 5)]
    async with running_consumer(cfg) as consumer:
        with Publisher("127.0.0.1", broker.port, "pub-rd") as pub:
            # the same messages twice, interleaved (an edge resending after a lost PUBACK),
            # and overlapping re-chunked batches of the same reports
            await asyncio.to_thread(pub.publish_all, topic, messages + messages[::-1])
            await asyncio.to_thread(
                pub.publish_all, topic, [dsp.encode_batch("devA", c) for c in chunks(reports, 7)]
            )
        await await_rows(db, 200, 30)
        await asyncio.to_thread(wait_for, lambda: consumer.stats()["unacked_messages"] == 0,
                                10, "acks")
        counters = consumer.counters
        dedup = counters.already_stored + counters.joined_in_flight
    assert_exactly_once(db, {("devA", (1 << 64) - 5, s) for s in range(200)})
    assert dedup == 400  # every redelivered report was recognized
    assert counters.invoked_reports == 200  # and none was scored twice


async def test_broker_restart_loses_nothing(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "restart"
    topic = f"{root}/devices/devB/reports"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root)
    reports = encoded_reports("devB", 3, range(1200))
    messages = [dsp.encode_batch("devB", c) for c in chunks(reports, 4)]
    async with running_consumer(cfg):
        stream = Stream(broker.port, topic, messages, rate_hz=150, client_id="pub-rs").start()
        await asyncio.to_thread(wait_for, lambda: stream.sent > 60, 20, "traffic")
        await asyncio.to_thread(broker.restart, signal.SIGTERM)  # saves, then restarts
        await asyncio.to_thread(stream.join, 60)
        await await_rows(db, len(reports), 40)
    assert_exactly_once(db, {("devB", 3, s) for s in range(1200)})


async def test_broker_sigkill_outside_the_autosave_window_loses_nothing(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    """Mosquitto persists every autosave_interval (1 s here): what it held longer survives -9."""
    db = tmp_path / "r.db"
    root = "brokerkill"
    topic = f"{root}/devices/devC/reports"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root)
    reports = encoded_reports("devC", 4, range(400))
    first, second = reports[:100], reports[100:]
    # 1: the consumer registers its persistent session, takes some traffic, goes away
    async with running_consumer(cfg):
        with Publisher("127.0.0.1", broker.port, "pub-bk1") as pub:
            await asyncio.to_thread(
                pub.publish_all, topic, [dsp.encode_batch("devC", c) for c in chunks(first, 5)]
            )
        await await_rows(db, 100, 20)
    # 2: while it is offline, the broker queues for its session; then dies with SIGKILL
    with Publisher("127.0.0.1", broker.port, "pub-bk2") as pub:
        pub.publish_all(topic, [dsp.encode_batch("devC", c) for c in chunks(second, 5)])
    await asyncio.sleep(2.5)  # > autosave_interval: the queue is on disk
    broker.kill()
    broker.start()
    # 3: the consumer comes back to its session and gets the backlog
    async with running_consumer(cfg):
        await await_rows(db, 400, 30)
    assert_exactly_once(db, {("devC", 4, s) for s in range(400)})


def test_consumer_killed_with_sigkill_mid_stream_and_restarted(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "kill9"
    topic = f"{root}/devices/devK/reports"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, client_id="consumer-k9")
    conf = write_toml(tmp_path / "cloud.toml", cfg)
    proc = ConsumerProcess(conf, tmp_path / "consumer.log").start()
    n = 2400
    reports = encoded_reports("devK", 77, range(n))
    messages = [dsp.encode_batch("devK", c) for c in chunks(reports, 6)]
    try:
        wait_for(lambda: "mqtt connected" in proc.log_tail(), 20, "consumer connected")
        time.sleep(0.3)
        stream = Stream(broker.port, topic, messages, rate_hz=200, client_id="pub-k9").start()
        kills = 0
        for fraction in (0.25, 0.6):
            wait_for(lambda f=fraction: len(stored(db)) >= f * n, 30,  # type: ignore[misc]
                     f"{fraction:.0%} stored")
            proc.kill()  # SIGKILL: no drain, no disconnect, unacked messages stay at the broker
            kills += 1
            time.sleep(0.3)
            proc.start()
        stream.join(60)
        wait_for(lambda: len(stored(db)) >= n, 40, "all stored")
        # The last restart may not be up yet when the rows are in (a loaded machine takes
        # seconds to import): stop it only once it runs, so SIGTERM meets its handler.
        wait_for(lambda: proc.log_path.read_text().count("mqtt connected") == 3, 30,
                 "restarted consumer connected")
        time.sleep(0.5)  # any straggling duplicate would show up now
    finally:
        code = proc.stop()
    assert kills == 2
    assert code == 0, proc.log_tail()
    assert_exactly_once(db, {("devK", 77, s) for s in range(n)})
    log = proc.log_path.read_text()
    assert log.count("mqtt connected") == 3
    assert "session present: True" in log  # the restarted consumer resumed its session
