"""End-to-end confirmation with the edge agent as a real process (``pumpwatch edge``), a real
Mosquitto, the model server process and the consumer as a ``pumpwatch cloud`` subprocess
(SQLite).

The consumer is down while the agent runs (no session at the broker either: what the broker
PUBACKs reaches no one), so nothing is confirmed and the spool keeps every report; the
agent exits by itself once the cloud has confirmed everything it kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.spool import Spool
from tests.edge._helpers import build, edge_config, write_toml
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto, free_port
from tests.infra.pipeline import ConsumerProcess, consumer_config
from tests.infra.pipeline import write_toml as write_consumer_toml
from tests.infra.scrape import scrape
from tests.test_consumer_pipeline import assert_exactly_once, stored, wait_for
from tests.test_dashboard_api import served

ROOT_DIR = Path(__file__).resolve().parents[1]
CHANNELS = 4
Identity = tuple[str, int, int]


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


class StatusWatch:
    """The agent's latest retained status message (``{root}/devices/{device}/status``)."""

    def __init__(self, port: int, root: str, device: str) -> None:
        self.latest: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"watch-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_a: c.subscribe(
            f"{root}/devices/{device}/status", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.latest = json.loads(msg.payload)

    def get(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.latest)

    def wait(self, pred: Callable[[dict[str, Any]], bool], within_s: float, what: str) -> dict[
            str, Any]:
        try:
            wait_for(lambda: bool(self.get()) and pred(self.get()), within_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {self.get()}") from None
        return self.get()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def start_agent(cfg_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pumpwatch", "--log-level", "INFO", "edge", "--config",
         str(cfg_path)],
        cwd=ROOT_DIR, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
        env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
    )


def agent_config(tmp_path: Path, port: int, root: str, device: str, *, seconds: float,
                 pace: float | str, **extra: dict[str, Any]) -> dict[str, Any]:
    d = edge_config(tmp_path, port, channels=CHANNELS, device=device,
                    source={"duration_s": seconds, "pace": pace},
                    mqtt_extra={"confirm": True, "confirm_timeout_s": 1.5, "topic_prefix": root},
                    status_interval_s=0.3)
    for section, values in extra.items():
        d[section].update(values)
    build(d)  # a config mistake fails here, not as an agent that never reports
    return d


def consumer_for(tmp_path: Path, port: int, url: str, root: str) -> tuple[ConsumerProcess,
                                                                          Path]:
    db = tmp_path / "r.db"
    cfg = consumer_config(broker_port=port, endpoint_url=url, db=db, topic_root=root,
                          client_id=f"consumer-{root}")
    toml = write_consumer_toml(tmp_path / "consumer.toml", cfg)
    return ConsumerProcess(toml, tmp_path / "consumer.log"), db


def spool_left(path: Path) -> set[tuple[int, int]]:
    """(epoch, seq) of every report still in a (stopped) agent's spool."""
    with Spool(path, max_bytes=1 << 30) as sp:
        return {r.key for r in sp.peek(10**6)}


def wait_exit(proc: subprocess.Popen[bytes], within_s: float, log: Path) -> int:
    try:
        return proc.wait(within_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        raise AssertionError(f"agent did not exit in {within_s} s:\n"
                             f"{log.read_text(errors='replace')[-3000:]}") from None


def test_agent_sigkilled_with_unconfirmed_reports_loses_none(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """SIGKILL mid-stream with every report unconfirmed; the agent restarts on the same
    spool (a new epoch) and only then does the consumer start: every report the first run
    spooled and every report of the second run is stored exactly once, and the spool
    empties (the agent exits 0 once all is confirmed)."""
    broker = mosquitto_factory().start()
    root, dev = "agentkill", "gw-akill"
    watch = StatusWatch(broker.port, root, dev)
    d = agent_config(tmp_path, broker.port, root, dev, seconds=20, pace=5.0)
    cfg_path = write_toml(tmp_path / "edge.toml", d)
    consumer, db = consumer_for(tmp_path, broker.port, model_server.url, root)
    try:
        first = start_agent(cfg_path, tmp_path / "run1.log")
        st = watch.wait(lambda s: s["spool"]["unconfirmed"] >= 12, 60,
                        "12 PUBACKed, unconfirmed reports")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert st["spool"]["confirmed"] == 0 and st["reports"] < 20 * CHANNELS, st
        epoch1 = int(st["epoch"], 16)
        left = spool_left(tmp_path / "spool")
        assert len(left) >= 12 and {e for e, _ in left} == {epoch1}
        # the second run: the source at full speed, the consumer still down
        d2 = {**d, "source": {**d["source"], "pace": "fast"}}
        second = start_agent(write_toml(tmp_path / "edge.toml", d2), tmp_path / "run2.log")
        st2 = watch.wait(lambda s: s["epoch"] != st["epoch"] and s["reports"] == 20 * CHANNELS,
                         60, "the second run's source to end")
        assert st2["spool"]["recovered"] == len(left), st2
        assert st2["spool"]["confirmed"] == 0, st2
        consumer.start()
        assert wait_exit(second, 90, tmp_path / "run2.log") == 0
        epoch2 = int(st2["epoch"], 16)
    finally:
        watch.close()
        consumer.stop()
    expected = {(dev, e, s) for e, s in left} | {(dev, epoch2, s) for s in range(20 * CHANNELS)}
    assert_exactly_once(db, expected)
    assert spool_left(tmp_path / "spool") == set()
    log2 = (tmp_path / "run2.log").read_text(errors="replace")
    assert f"recovered {len(left)} unacknowledged reports" in log2


async def test_spool_full_of_unconfirmed_reports_drops_the_oldest_and_counts_them(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """A 64 KiB spool (the smallest allowed) and 160 reports nobody confirms: the oldest are
    dropped and counted (status and /metrics); once the consumer is up the store holds
    exactly the kept reports and the dashboard's gaps API reports the dropped range."""
    broker = mosquitto_factory().start()
    root, dev = "spoolfull", "gw-sfull"
    n = 40 * CHANNELS
    metrics_port = free_port()
    watch = StatusWatch(broker.port, root, dev)
    d = agent_config(tmp_path, broker.port, root, dev, seconds=40, pace="fast",
                     spool={"max_bytes": 64 * 1024, "segment_bytes": 16 * 1024},
                     status={"metrics_port": metrics_port})
    consumer, db = consumer_for(tmp_path, broker.port, model_server.url, root)
    try:
        agent = start_agent(write_toml(tmp_path / "edge.toml", d), tmp_path / "agent.log")
        st = watch.wait(lambda s: s["reports"] == n and s["spool"]["unconfirmed"] == (
            s["spool"]["reports"]) and s["link"]["inflight"] == 0, 60,
            "every report computed, and those kept PUBACKed")
        dropped = st["spool"]["dropped"]
        kept = st["spool"]["reports"]
        assert dropped > 0 and kept > 0 and dropped + kept == n, st["spool"]
        assert st["spool"]["confirmed"] == 0
        print(f"spool full: {dropped} of {n} reports dropped, {kept} kept unconfirmed")
        m = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        assert m.value("pumpwatch_edge_spool_dropped_reports_total") == dropped
        consumer.start()
        assert wait_exit(agent, 90, tmp_path / "agent.log") == 0
    finally:
        watch.close()
        consumer.stop()
    epoch = int(st["epoch"], 16)
    # drop-oldest: what is left is the newest run of the stream
    assert_exactly_once(db, {(dev, epoch, s) for s in range(dropped, n)})
    assert len(stored(db)) == kept
    async with served(str(db)) as client, client.get(
            f"/api/devices/{dev}/gaps?grace_s=0") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["missing"] == dropped
    assert [(g["epoch"], g["first"], g["last"]) for g in body["gaps"]] == [
        (f"{epoch:016x}", 0, dropped - 1)]
