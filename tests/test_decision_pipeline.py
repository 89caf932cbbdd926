"""End to end: a dead-sensor channel and a bearing-fault channel stream through the real
pipeline and come out as ``sensor_fault`` and the right defect, each saying why.

Real parts: a Mosquitto broker, the model server as a subprocess (the built-in
physics bundle), the consumer (``pumpwatch cloud``) as a subprocess, SQLite.
The reports are what the edge computes (``dsp.analyze`` + ``dsp.make_report``)
from two channels of one pump: one whose sensor delivers a constant value,
one with outer-race impacts ringing at a structural resonance.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

import dsp
from cloud.dashboard.views import result_json
from cloud.store import ResultRow, SQLiteStore
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto, mosquitto_available
from tests.infra.pipeline import ConsumerProcess, Publisher, consumer_config, write_toml
from tests.infra.require import need
from tests.test_decision import B6205, ORDERS, signal

N = 6  # reports per channel
FS = 25600.0
PUMP = "P-301"


def _reports(now_ns: int) -> list[dsp.Report]:
    cfg = dsp.ReportConfig()
    spec = dsp.ChannelSpec(asset=dsp.Asset(bearings=[B6205], rated_rpm=1800.0), rpm=1800.0)
    out: list[dsp.Report] = []
    for i in range(N):
        fault = signal(FS, rate_order=ORDERS["bpfo"], amp=4.0, slip=0.015, seed=100 + i)
        dead = np.full(fault.shape, 0.013, dtype=np.float32)  # a sensor stuck at one value
        res = dsp.analyze(np.stack([fault, dead]), cfg, [spec, spec])
        for ch, r in zip(("de_h", "nde_h"), res, strict=True):
            out.append(dsp.make_report(r, cfg, spec, device="gw-3", epoch=5, seq=len(out),
                                       site="plant-c", pump=PUMP, channel=ch,
                                       t0_ns=now_ns - (N - i) * 10**9))
    return out


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ResultRow]]:
    need("mosquitto", None if mosquitto_available() else "mosquitto not installed")
    tmp = tmp_path_factory.mktemp("decision")
    db = tmp / "results.db"
    root = "dec"
    with contextlib.ExitStack() as stack:
        broker = Mosquitto(tmp / "mosquitto").start()
        stack.callback(broker.stop)
        server = stack.enter_context(ModelServerProcess())
        cfg = consumer_config(broker_port=broker.port, endpoint_url=server.url, db=db,
                              topic_root=root, client_id="dec-consumer")
        consumer = ConsumerProcess(write_toml(tmp / "cloud.toml", cfg), tmp / "consumer.log")
        consumer.start()
        stack.callback(consumer.stop)
        _wait(lambda: "mqtt connected" in consumer.log_tail(), 30, "consumer connected")
        time.sleep(0.3)  # subscription granted
        reports = _reports(time.time_ns())
        with Publisher("127.0.0.1", broker.port, "pub-dec") as pub:
            pub.publish_all(f"{root}/devices/gw-3/reports",
                            [dsp.encode_batch("gw-3", [dsp.encode_report(r)]) for r in reports])
        _wait(lambda: len(_rows(db)) >= 2 * N, 60, f"{2 * N} results stored")
        yield _rows(db)


def _rows(db: Path) -> list[ResultRow]:
    """The stored results of the pump, read through the store as the dashboard reads them."""
    if not db.exists():
        return []

    async def read() -> list[ResultRow]:
        store = SQLiteStore(f"sqlite:///{db}", readonly=True)
        await store.open()
        try:
            return await store.results(pump=PUMP)
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except sqlite3.OperationalError:  # the consumer has not created the schema yet
        return []


def _wait(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_dead_sensor_is_a_sensor_fault_and_the_fault_channel_names_its_defect(
    stored: list[ResultRow],
) -> None:
    by_channel: dict[str, list[ResultRow]] = {}
    for r in stored:
        by_channel.setdefault(r.channel, []).append(r)
    assert sorted(by_channel) == ["de_h", "nde_h"] and all(len(v) == N for v in
                                                           by_channel.values())
    for r in by_channel["nde_h"]:
        assert r.condition == "sensor_fault" and not r.anomalous
        assert r.extra.get("decided_by") == "quality"
        assert any(e.name == "sensor_fault:constant" for e in r.evidence)
    for r in by_channel["de_h"]:
        assert r.condition == "bearing_outer" and r.extra.get("decided_by") == "physics"
        fam = next(e for e in r.evidence if e.name == "env_family:bearing_outer")
        assert "lit: 1x" in fam.note
    # the API's result objects carry decided_by (merged from the row's extra fields)
    api = [result_json(r) for r in stored]
    assert {(a["channel"], a["decided_by"]) for a in api} == {("nde_h", "quality"),
                                                             ("de_h", "physics")}
    assert all("decided_by" in a["extra_fields"] for a in api)
    msgspec.json.encode(api)  # JSON as served
