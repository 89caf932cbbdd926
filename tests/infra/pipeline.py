"""Test and benchmark helpers for the cloud consumer: reports, publishers, a consumer process.

* :func:`templates` analyzes a few synthetic 1 s signals once (dsp.analyze +
  dsp.make_report); :func:`encoded_reports` stamps identities onto copies and
  encodes them, so thousands of distinct reports cost milliseconds.
* :class:`Publisher` is a paho-mqtt v5 QoS 1 publisher that waits for every
  PUBACK and stamps a ``published_ns`` user property (the consumer stores it,
  so latency is ``stored_ns - published_ns`` on one machine's clock).
* :class:`ConsumerProcess` runs ``pumpwatch cloud --config FILE`` as a real
  subprocess, to be SIGKILLed and restarted.
"""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import dsp
from tests.infra.process import stop_process

ROOT = Path(__file__).resolve().parents[2]
ASSET = dsp.Asset(
    bearings=[dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")],
    vanes=6,
    rated_rpm=2950.0,
)


def _signal(fs: float, n: int, rpm: float, seed: int, outer: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    fr = rpm / 60.0
    x = 2.0 * np.sin(2 * np.pi * fr * t) + 0.5 * np.sin(2 * np.pi * 6 * fr * t + 0.3)
    if outer > 0:
        ring = np.exp(-800.0 * t[:200]) * np.sin(2 * np.pi * 3200.0 * t[:200])
        imp = np.zeros(n)
        imp[(np.arange(0, n / fs, 1 / (3.5848 * fr)) * fs).astype(int)] = outer
        x += np.convolve(imp, ring)[:n]
    x += 0.4 * rng.standard_normal(n)
    return x.astype(np.float32)


def stored_results(db: Path) -> int:
    """Result rows in a consumer's SQLite store, read-only (0 before it or its schema
    exists)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            (n,) = con.execute("SELECT count(*) FROM results").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(n)


@functools.cache
def templates(count: int = 4) -> tuple[dsp.Report, ...]:
    """``count`` analyzed reports (healthy and outer-race faults), identity to be replaced."""
    cfg = dsp.ReportConfig()
    n = cfg.interval_samples
    xs = np.stack(
        [_signal(cfg.fs, n, 2950.0 + 7 * i, seed=i, outer=20.0 * (i % 2)) for i in range(count)]
    )
    specs = [dsp.ChannelSpec(asset=ASSET) for _ in range(count)]
    return tuple(
        dsp.make_report(
            r, cfg, specs[i], device="template", epoch=0, seq=0, site="lab", pump="p0",
            channel="x", t0_ns=0,
        )
        for i, r in enumerate(dsp.analyze(xs, cfg, specs))
    )


def encoded_reports(
    device: str,
    epoch: int,
    seqs: Iterable[int],
    *,
    pumps: Sequence[str] = ("p1", "p2", "p3"),
    site: str = "lab",
    t0_ns: int = 1_700_000_000_000_000_000,
) -> list[bytes]:
    """Distinct encoded reports ``(device, epoch, seq)`` for each seq, cycling pumps."""
    tpl = templates()
    out = []
    for seq in seqs:
        base = tpl[seq % len(tpl)]
        rep = msgspec.structs.replace(
            base, device=device, epoch=epoch, seq=seq, site=site,
            pump=pumps[seq % len(pumps)], t0_ns=t0_ns + seq * 1_000_000_000,
        )
        out.append(dsp.encode_report(rep))
    return out


def chunks(items: Sequence[bytes], size: int) -> list[list[bytes]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class Publisher:
    """A QoS 1 MQTT v5 publisher; ``publish`` returns after the broker's PUBACK."""

    def __init__(self, host: str, port: int, client_id: str, *, max_inflight: int = 100,
                 username: str | None = None) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self._connected = threading.Event()
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError(f"publisher could not connect to {host}:{port}")

    def publish(
        self, topic: str, payload: bytes, *, stamp: bool = True
    ) -> mqtt.MQTTMessageInfo:
        props = None
        if stamp:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = [("published_ns", str(time.time_ns()))]
        return self.client.publish(topic, payload, qos=1, properties=props)

    def publish_all(
        self, topic: str, payloads: Iterable[bytes], *, timeout: float = 30.0
    ) -> None:
        infos = [self.publish(topic, p) for p in payloads]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"publish to {topic} not acknowledged in {timeout} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def consumer_config(
    *,
    broker_port: int,
    endpoint_url: str,
    db: Path | str,
    topic_root: str,
    client_id: str = "consumer-test",
    group: str = "g1",
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """A consumer config dict for a local broker, model server and store (a SQLite file's
    path, or a store URL such as ``postgresql://...``)."""
    store_url = db if isinstance(db, str) else f"sqlite:///{db}"
    cfg: dict[str, Any] = {
        "mqtt": {
            "host": "127.0.0.1", "port": broker_port, "client_id": client_id, "group": group,
            "topic_root": topic_root, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
            "keepalive_s": 10,
        },
        "endpoint": {"endpoint_url": endpoint_url, "timeout_s": 20.0, "retry_initial_s": 0.1,
                     "retry_max_s": 1.0},
        "batch": {"max_size": 64, "max_delay_ms": 20},
        "store": {"url": store_url, "synchronous": "normal"},
        "consumer": {"stats_interval_s": 0, "drain_timeout_s": 5.0},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def write_toml(path: Path, cfg: dict[str, Any]) -> Path:
    """Tiny TOML writer for the flat config dicts above (tables of scalars)."""
    lines: list[str] = []
    for section, values in cfg.items():
        if isinstance(values, list):
            for item in values:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {v!r} as TOML here")


class ConsumerProcess:
    """``pumpwatch cloud --config FILE`` as a subprocess (log to ``log_path``)."""

    def __init__(self, config_path: Path, log_path: Path, *, extra: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pumpwatch", "--log-level", "INFO", "cloud",
                 "--config", str(self.config_path), *self.extra],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, timeout)
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
