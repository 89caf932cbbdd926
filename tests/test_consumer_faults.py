"""Endpoint faults: a fault-injecting proxy between the consumer and the real model server,
and the model server killed for real. Whatever happens, every report is stored exactly once,
the poison report alone is dead-lettered, and the consumer never crashes.

Outage lengths are parameters (``PUMPWATCH_TEST_OUTAGE_S``, short by default).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import dsp
from tests.infra.fault_proxy import FaultProxy
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, chunks, consumer_config, encoded_reports
from tests.test_consumer_pipeline import (
    Stream,
    assert_exactly_once,
    await_rows,
    dead_letters,
    running_consumer,
)

OUTAGE_S = float(os.environ.get("PUMPWATCH_TEST_OUTAGE_S", "1.5"))


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory(max_inflight_messages=1000).start()


async def until(pred: Callable[[], bool], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not pred() and time.monotonic() < deadline:  # noqa: ASYNC110 -- polling others' state
        await asyncio.sleep(0.05)
    return pred()


def fault_config(port: int, url: str, db: Path, root: str, **sections: dict[str, Any]) -> dict[
        str, Any]:
    cfg = consumer_config(
        broker_port=port, endpoint_url=url, db=db, topic_root=root,
        endpoint={"timeout_s": 1.0, "connect_timeout_s": 0.5, "retry_initial_s": 0.05,
                  "retry_max_s": 0.5, "breaker_failures": 3, "breaker_open_s": 0.2,
                  "breaker_open_max_s": 1.0},
        batch={"max_size": 32, "max_delay_ms": 20},
    )
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


async def test_every_fault_kind_through_the_proxy_loses_nothing(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "faults"
    reports = encoded_reports("devF", 3, range(1920))
    messages = [dsp.encode_batch("devF", b) for b in chunks(reports, 4)]  # 12 s at 40 Hz
    with FaultProxy(model_server.url) as proxy:
        cfg = fault_config(broker.port, proxy.url, db, root)
        async with running_consumer(cfg) as consumer:
            stream = Stream(broker.port, f"{root}/devices/devF/reports", messages,
                            rate_hz=40, client_id="pub-faults").start()
            peak_unacked = 0
            short = max(0.6, OUTAGE_S / 2)
            for kind, secs, delay in (("503", OUTAGE_S, 0.0), ("429", short, 0.0),
                                      ("not_ready", short, 0.0), ("reset", short, 0.0),
                                      ("slow", short, 1.5)):
                # Each fault starts once the consumer is back to normal (breaker closed).
                await until(lambda: consumer.breaker.state == "closed", 10)
                await asyncio.sleep(0.2)
                proxy.fault(kind, seconds=secs, delay_s=delay)  # type: ignore[arg-type]
                t_end = time.monotonic() + secs
                while time.monotonic() < t_end:
                    peak_unacked = max(peak_unacked, consumer.stats()["unacked_messages"])
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(stream.join, 60)
            await await_rows(db, len(reports), 60)
            stats = consumer.stats()
    assert_exactly_once(db, {("devF", 3, s) for s in range(1920)})
    assert dead_letters(db) == []
    assert all(proxy.stats[k] > 0 for k in ("503", "429", "not_ready", "reset", "slow")), \
        proxy.stats
    assert stats["counters"]["endpoint_retries"] > 0
    assert stats["breaker"]["opened"] >= 1 and stats["breaker"]["closed_again"] >= 1
    assert stats["breaker"]["state"] == "closed"
    assert peak_unacked > 0  # the outage was a backlog of unacknowledged messages
    assert stream.republished == 0  # ...which the broker held; publishers never noticed


async def test_poison_report_is_bisected_out_through_the_proxy(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "poison"
    reports = encoded_reports("devP", 5, range(256))
    poison = ("devP", 5, 77)
    with FaultProxy(model_server.url) as proxy:
        proxy.poison(poison)
        cfg = fault_config(broker.port, proxy.url, db, root, batch={"max_size": 64,
                                                                   "max_delay_ms": 200})
        async with running_consumer(cfg) as consumer:
            with Publisher("127.0.0.1", broker.port, "pub-poison") as pub:
                await asyncio.to_thread(
                    pub.publish_all, f"{root}/devices/devP/reports",
                    [dsp.encode_batch("devP", b) for b in chunks(reports, 64)],
                )
            await await_rows(db, 255, 30)
            await until(lambda: consumer.counters.acks >= 4, 10)
            stats = consumer.stats()
    assert_exactly_once(db, {("devP", 5, s) for s in range(256)} - {poison})
    dls = dead_letters(db)
    assert [(k, part) for k, part, _ in dls] == [("model", 0)]
    assert "ModelError" in dls[0][2] and "injected" in dls[0][2]
    assert stats["counters"]["bisections"] >= 6  # 64 -> 32 -> ... -> 1
    assert stats["counters"]["acks"] == 4 and stats["unacked_messages"] == 0
    assert stats["breaker"]["opened"] == 0  # ModelError is an answer, not an outage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_model_server_sigkilled_then_restarted(
    broker: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "killsrv"
    port = _free_port()
    srv = ModelServerProcess(extra=["--port", str(port)])  # the last --port wins
    srv.start()
    try:
        reports = encoded_reports("devK", 9, range(640))
        messages = [dsp.encode_batch("devK", b) for b in chunks(reports, 8)]
        cfg = fault_config(broker.port, srv.url, db, root)
        async with running_consumer(cfg) as consumer:
            stream = Stream(broker.port, f"{root}/devices/devK/reports", messages,
                            rate_hz=40, client_id="pub-killsrv").start()
            await asyncio.sleep(0.5)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGKILL)
            srv.proc.wait(10)
            srv.stop()
            await asyncio.sleep(OUTAGE_S)
            during = consumer.stats()
            await asyncio.to_thread(srv.start)
            await asyncio.to_thread(stream.join, 60)
            await await_rows(db, len(reports), 60)
            stats = consumer.stats()
    finally:
        srv.stop()
    assert_exactly_once(db, {("devK", 9, s) for s in range(640)})
    assert during["unacked_messages"] > 0 and during["breaker"]["state"] != "closed"
    assert stats["breaker"]["closed_again"] >= 1 and stats["breaker"]["state"] == "closed"
    assert dead_letters(db) == []


async def test_alarms_are_stored_and_published_on_result_topics(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "alarmtopics"
    got: list[tuple[str, bytes, bool]] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="dash-sub",
                      protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), bool(m.retain)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(f"{root}/sites/#", qos=1)
    sub.loop_start()
    try:
        # Zone alarms need no trained baseline: consumer-side limits put every window in D.
        cfg = fault_config(broker.port, model_server.url, db, root, alarms={
            "zone_limits": [{"pump": "*", "limits": [1e-6, 2e-6, 3e-6]}], "zone_alarm_at": "D",
        })
        reports = encoded_reports("devA", 1, range(24), pumps=["PA"])
        async with running_consumer(cfg) as consumer:
            with Publisher("127.0.0.1", broker.port, "pub-alarm") as pub:
                await asyncio.to_thread(pub.publish_all, f"{root}/devices/devA/reports",
                                        [dsp.encode_batch("devA", b) for b in chunks(reports, 8)])
            await await_rows(db, 24, 30)
            await asyncio.sleep(0.5)
            stats = consumer.stats()
    finally:
        sub.loop_stop()
        sub.disconnect()
    import sqlite3

    con = sqlite3.connect(db)
    alarms = con.execute(
        "SELECT id, kind, state, channel FROM alarms WHERE kind = 'iso_zone'").fetchall()
    con.close()
    assert alarms == [("PA:x:iso_zone:1700000000000000000", "iso_zone", "raised", "x")]
    topics = {t for t, _, _ in got}
    assert f"{root}/sites/lab/pumps/PA/condition" in topics
    assert f"{root}/sites/lab/pumps/PA/alarms" in topics
    assert stats["counters"]["alarm_writes"] >= 1
    # A late subscriber gets the retained condition at once.
    late: list[bool] = []
    sub2 = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="dash-late",
                       protocol=mqtt.MQTTv5)
    sub2.on_message = lambda c, u, m: late.append(bool(m.retain))
    sub2.connect("127.0.0.1", broker.port)
    sub2.subscribe(f"{root}/sites/+/pumps/+/condition", qos=1)
    sub2.loop_start()
    await until(lambda: bool(late), 5)
    sub2.loop_stop()
    sub2.disconnect()
    assert late == [True]


@pytest.mark.parametrize("n", [1])
def test_fault_proxy_forwards_untouched(model_server: ModelServerProcess, n: int) -> None:
    import urllib.request

    with FaultProxy(model_server.url) as proxy, urllib.request.urlopen(  # noqa: S310
            proxy.url + "/ping", timeout=5) as r:
        assert r.status == 200 and proxy.stats["forwarded"] == n
