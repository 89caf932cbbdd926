"""Helpers for edge tests: a config builder and a report collector on a real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import dsp
from edge.config import EdgeConfig, config_from_dict

from ..infra.mosquitto import Mosquitto


def edge_config(
    tmp_path: Path,
    port: int,
    *,
    channels: int = 2,
    device: str | None = None,
    source: Mapping[str, Any] | None = None,
    mqtt_extra: Mapping[str, Any] | None = None,
    spool_extra: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    status_interval_s: float = 0.5,
) -> dict[str, Any]:
    """A config dict for a device with one pump of ``channels`` channels (synthetic source).

    End-to-end confirmation is off unless ``mqtt_extra`` turns it on: these devices
    talk to a bare broker, with no consumer to confirm anything."""
    return {
        "device": device or f"gw-{uuid.uuid4().hex[:8]}",
        "site": "lab",
        "report": dict(report or {}),
        "source": {"kind": "synthetic", "pace": "fast", **(source or {})},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "confirm": False,
            **(mqtt_extra or {}),
        },
        "spool": {"path": str(tmp_path / "spool"), **(spool_extra or {})},
        "status": {"interval_s": status_interval_s},
        "pumps": [
            {
                "id": "p1",
                "vanes": 6,
                "rated_rpm": 2950,
                "bearings": ["6205"],
                "full_scale": 490.0,
                "channels": [f"c{i}" for i in range(channels)],
            }
        ],
    }


def build(d: Mapping[str, Any]) -> EdgeConfig:
    return config_from_dict(d, source="test")


def write_toml(path: Path, d: Mapping[str, Any]) -> Path:
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines: list[str] = []
    for k, v in d.items():
        if (
            not isinstance(v, dict | list)
            or (isinstance(v, list) and not v)
            or (isinstance(v, list) and not isinstance(v[0], dict))
        ):
            lines.append(f"{k} = {val(v)}")
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {val(vv)}" for kk, vv in v.items() if vv is not None]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {val(vv)}" for kk, vv in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Collector:
    """A persistent-session QoS 1 subscriber that records every report identity it gets."""

    def __init__(self, broker: Mosquitto, device: str, *, client_id: str | None = None) -> None:
        self.broker = broker
        self.device = device
        self.reports: list[dsp.Report] = []  # in arrival order, duplicates included
        self.status: list[dict[str, Any]] = []
        self.messages = 0
        self.arrivals: list[float] = []  # monotonic time of each report message
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"col-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *_a: self._subscribed.set()
        c.reconnect_delay_set(1, 1)
        self.client = c

    def start(self) -> Collector:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(self.broker.host, self.broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(5), "collector did not subscribe"
        return self

    def _on_connect(self, c: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        if not flags.session_present:
            c.subscribe(f"pumpwatch/devices/{self.device}/#", qos=1)
        else:
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.endswith("/status"):
                self.status.append(json.loads(msg.payload))
                return
            batch = dsp.decode_batch(bytes(msg.payload))
            assert batch.device == self.device
            self.messages += 1
            self.arrivals.append(time.monotonic())
            self.reports += [dsp.decode_report(r) for r in batch.reports]

    def identities(self) -> list[tuple[int, int]]:
        with self._lock:
            return [(r.epoch, r.seq) for r in self.reports]

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(set(self.identities())) >= n:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
