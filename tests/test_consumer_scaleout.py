"""Two consumers on one shared subscription against one PostgreSQL; one killed for good.

Each consumer is a real ``pumpwatch cloud`` process with its own persistent session
(stable client id). Consumer B is SIGKILLed mid-stream and never comes back as a member:
Mosquitto keeps assigning B's share of the stream to B's offline session, so the
operator retires B (``pumpwatch cloud --config b.toml --retire``: same client id, no
subscription, drain, Session Expiry 0). Every report is stored exactly once, and
traffic after the retirement goes to A alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

import dsp
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import ConsumerProcess, Publisher, chunks, consumer_config, write_toml
from tests.infra.pipeline import encoded_reports as make_reports
from tests.test_consumer_pipeline import Stream

Identity = tuple[str, int, int]


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


def pg_identities(url: str) -> list[Identity]:
    async def fetch() -> list[Identity]:
        conn = await asyncpg.connect(url)
        try:
            try:
                rows = await conn.fetch("SELECT device, epoch, seq FROM results")
            except asyncpg.UndefinedTableError:
                return []
            return [(d, e if e >= 0 else e + (1 << 64), s) for d, e, s in rows]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_connected(proc: ConsumerProcess, timeout: float = 30) -> None:
    wait_for(lambda: "mqtt connected" in proc.log_tail(400) or not proc.running, timeout,
             "consumer connected")
    assert proc.running, proc.log_tail()
    time.sleep(0.3)  # subscription granted


def test_two_consumers_one_killed_for_good_then_retired(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    postgres_url: str, tmp_path: Path,
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    root = "scale"
    cfgs = {}
    procs = {}
    for name in ("a", "b"):
        cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url,
                              db=postgres_url, topic_root=root, client_id=f"consumer-{name}",
                              group="cloud")
        cfgs[name] = write_toml(tmp_path / f"{name}.toml", cfg)
        procs[name] = ConsumerProcess(cfgs[name], tmp_path / f"{name}.log").start()
    for p in procs.values():
        wait_connected(p)
    devices = [f"gw{i}" for i in range(4)]
    published: set[Identity] = set()
    streams = []
    for d in devices:
        reports = make_reports(d, 42, range(480), pumps=[f"{d}-p1", f"{d}-p2"])
        published |= {(d, 42, s) for s in range(480)}
        streams.append(Stream(broker.port, f"{root}/devices/{d}/reports",
                              [dsp.encode_batch(d, b) for b in chunks(reports, 8)],
                              rate_hz=15, client_id=f"pub-{d}").start())  # ~4 s
    try:
        time.sleep(1.5)
        procs["b"].kill()  # for good: this process never comes back
        for s in streams:
            s.join(60)
        # A alone cannot finish: B's offline session holds B's share of the stream.
        time.sleep(2.0)
        stuck = len(published) - len(set(pg_identities(postgres_url)))
        assert stuck > 0, "expected the broker to hold messages for the dead member"
        # The operator retires B: same client id, drain its session, end it.
        retire = ConsumerProcess(cfgs["b"], tmp_path / "b-retire.log", extra=["--retire"])
        retire.start()
        assert retire.proc is not None
        retire.proc.wait(60)
        assert retire.proc.returncode == 0, retire.log_tail()
        assert "session drained" in retire.log_tail(400), retire.log_tail()
        wait_for(lambda: set(pg_identities(postgres_url)) >= published, 30, "all results")
        # After the retirement, the group is A alone: new traffic is not held for B.
        extra = make_reports("gw9", 43, range(80), pumps=["gw9-p1"])
        with Publisher("127.0.0.1", broker.port, "pub-after") as pub:
            pub.publish_all(f"{root}/devices/gw9/reports",
                            [dsp.encode_batch("gw9", b) for b in chunks(extra, 8)])
        published |= {("gw9", 43, s) for s in range(80)}
        wait_for(lambda: set(pg_identities(postgres_url)) >= published, 30,
                 "post-retirement results via A alone")
    finally:
        for p in procs.values():
            p.stop()
    rows = pg_identities(postgres_url)
    assert len(rows) == len(set(rows)), "duplicate result rows"
    assert set(rows) == published
    assert "Traceback" not in procs["a"].log_tail(2000)
