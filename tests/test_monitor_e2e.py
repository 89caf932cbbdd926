"""Drift end to end: real Mosquitto, the model server (built-in bundle) over HTTP, the
consumer with its monitoring histograms, SQLite; then the monitoring run over the store.

One hour of healthy pumps is the live reference; then an hour of the same pumps (no
unexplained drift), an hour of a constructed shift (a structural resonance at 3 kHz,
excited by broadband noise, that no reference pump has and that the model still calls
healthy: the features that moved are named), and an hour with one pump developing an
outer-race fault (a pump alarm, and no fleet drift alert).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

import dsp
from cloud.monitor.run import monitor
from cloud.monitor.usage import summarize
from cloud.store import Store, make_store
from tests.infra.model_server import ModelServerProcess, resonant_reports, synth_reports
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, consumer_config
from tests.test_consumer_pipeline import await_rows, running_consumer

HOUR = 3600 * 1_000_000_000
T0 = 1_780_000_000 * 1_000_000_000 // HOUR * HOUR
PUMPS = tuple(f"p{i}" for i in range(8))
N = 320  # reports per hour (40 per pump)


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


def phase(hour: int, *, seed: int, faulty: str | None = None, shifted: bool = False
          ) -> list[bytes]:
    reps = (resonant_reports(N, pumps=PUMPS, seed=seed, device="devM", seq0=hour * N)
            if shifted else
            synth_reports(N, pumps=PUMPS, seed=seed, device="devM", seq0=hour * N))
    if faulty is not None:
        bad = {r.seq: r for r in synth_reports(N, pumps=PUMPS, seed=seed, outer=6.0,
                                               device="devM", seq0=hour * N)}
        reps = [bad[r.seq] if r.pump == faulty else r for r in reps]
    return [dsp.encode_report(msgspec.structs.replace(r, t0_ns=T0 + hour * HOUR + k * 10**9))
            for k, r in enumerate(reps)]


async def test_drift_end_to_end(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    root = "mon"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, monitor={"flush_s": 0.0})
    hours = [phase(0, seed=1), phase(1, seed=2), phase(2, seed=3, shifted=True),
             phase(3, seed=4, faulty="p3")]
    async with running_consumer(cfg):
        with Publisher("127.0.0.1", broker.port, "pub-mon") as pub:
            for h, reps in enumerate(hours):
                msgs = [dsp.encode_batch("devM", reps[i:i + 8]) for i in range(0, N, 8)]
                await asyncio.to_thread(pub.publish_all, f"{root}/devices/devM/reports", msgs)
                await await_rows(db, (h + 1) * N, 60)
    store = make_store(f"sqlite:///{db}")
    await store.open()
    try:
        (version,) = {c[0] for c in await store.histograms(since_ns=T0, until_ns=T0 + 4 * HOUR)}

        async def run(hour: int):  # type: ignore[no-untyped-def]
            return await monitor(store, version, since_ns=T0 + hour * HOUR,
                                 until_ns=T0 + (hour + 1) * HOUR, reference=(T0, T0 + HOUR))

        same = await run(1)
        assert same.usage["reports"] == N
        assert same.status == "ok", same.unexplained
        shifted = await run(2)
        assert shifted.status == "drift"
        assert {"log:rms", "log:peak"} <= set(shifted.unexplained), shifted.unexplained
        assert "log:velocity_rms" not in shifted.unexplained  # 10-1000 Hz did not move
        fault = await run(3)
        assert fault.usage["health"].get("fault", 0) >= N // len(PUMPS) // 2
        assert fault.status == "ok", fault.unexplained  # explained by the pump's results
        alarms = await store.alarms(pump="p3")
        assert alarms and all(a.pump == "p3" for a in alarms)
        assert {a.pump for a in await store.alarms()} == {"p3"}
    finally:
        await store.close()


async def test_a_stopping_consumer_writes_the_counts_it_holds(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    root = "monstop"
    n = 48
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, monitor={"flush_s": 3600.0})  # no flush running
    reps = phase(0, seed=7)[:n]
    store = make_store(f"sqlite:///{db}")
    async with running_consumer(cfg) as consumer:
        with Publisher("127.0.0.1", broker.port, "pub-monstop") as pub:
            msgs = [dsp.encode_batch("devM", reps[i:i + 8]) for i in range(0, n, 8)]
            await asyncio.to_thread(pub.publish_all, f"{root}/devices/devM/reports", msgs)
            await await_rows(db, n, 60)
        await store.open()
        assert consumer.histograms is not None and consumer.histograms.held
        assert await store.histograms(since_ns=T0, until_ns=T0 + HOUR) == []  # held
        assert consumer.usage and await store.usage(since_ns=0, until_ns=1 << 62) == []
    try:
        assert await counts_written(store) == (n, n)
    finally:
        await store.close()


async def counts_written(store: Store) -> tuple[float, float]:
    """(reports in the stored usage, reports in the stored histograms of hour 0)."""
    usage = summarize(await store.usage(since_ns=0, until_ns=1 << 62))
    cells = await store.histograms(since_ns=T0, until_ns=T0 + HOUR)
    return (sum(v["reports"] for v in usage.values()),
            sum(c[7] for c in cells if c[5] == "n"))


async def test_an_idle_consumer_writes_its_counts_when_the_flush_falls_due(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """A commit flushes when ``flush_s`` has passed since the last flush; the reports
    committed just after one are written by the commit with no rows the consumer queues
    when the next flush falls due and nothing else is coming, not held until more
    reports arrive."""
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    root = "monidle"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, monitor={"flush_s": 1.0})
    reps = phase(0, seed=8)[:32]
    store = make_store(f"sqlite:///{db}")
    await store.open()

    async def until_written(n: int) -> None:
        deadline = asyncio.get_running_loop().time() + 30
        while await counts_written(store) != (n, n):
            assert asyncio.get_running_loop().time() < deadline, await counts_written(store)
            await asyncio.sleep(0.05)

    try:
        async with running_consumer(cfg) as consumer:
            with Publisher("127.0.0.1", broker.port, "pub-monidle") as pub:
                topic = f"{root}/devices/devM/reports"
                await asyncio.to_thread(pub.publish_all, topic, [dsp.encode_batch(
                    "devM", reps[i:i + 8]) for i in range(0, 16, 8)])
                await until_written(16)  # by a commit of results, or by an idle flush
                flushes = consumer.histograms.flushes if consumer.histograms else 0
                await asyncio.to_thread(pub.publish_all, topic, [dsp.encode_batch(
                    "devM", reps[i:i + 8]) for i in range(16, 32, 8)])
                await await_rows(db, 32, 30)
                await until_written(32)  # nothing more arrives: the idle flush writes them
                assert consumer.histograms is not None
                assert consumer.histograms.flushes > flushes
    finally:
        await store.close()
