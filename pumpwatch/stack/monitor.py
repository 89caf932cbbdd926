"""What the stack's status display and the demo scorer read: device status and the store.

* :class:`StatusFeed` subscribes (mTLS, as the ``dashboard`` identity the ACL
  lets read device status) to ``pumpwatch/devices/+/status`` and keeps each
  device's latest retained status (reports/s, spool backlog, link, epoch).
* :class:`StoreView` reads the SQLite results store read-only (WAL: never
  blocks the consumer): stored and dead-lettered reports, rates, results of
  given stream epochs, and the ``alarms`` table once the alarm writer exists.
"""

from __future__ import annotations

import json
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .plan import DASHBOARD_ID, StackOptions


class StatusFeed:
    """Latest status message per device (retained on the broker, so a late start sees all)."""

    def __init__(self, opts: StackOptions) -> None:
        pki = opts.path("pki")
        self.lock = threading.Lock()
        self.latest: dict[str, dict[str, Any]] = {}
        self.received_at: dict[str, float] = {}
        self.connected = False
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                        client_id=f"pumpwatch-stack-monitor-{time.time_ns() % 10**9}",
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(pki / "ca.crt"),
                  certfile=str(pki / "clients" / f"{DASHBOARD_ID}.crt"),
                  keyfile=str(pki / "clients" / f"{DASHBOARD_ID}.key"),
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.reconnect_delay_set(1, 5)
        self.client = c
        self.port = opts.broker_port

    def start(self) -> None:
        self.client.connect_async("localhost", self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            self.connected = True
            client.subscribe("pumpwatch/devices/+/status", qos=1)

    def _on_disconnect(self, *_a: Any) -> None:
        self.connected = False

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            status = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(status, dict) and isinstance(status.get("device"), str):
            with self.lock:
                self.latest[status["device"]] = status
                self.received_at[status["device"]] = time.monotonic()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.latest)


def signed_epoch(epoch: int) -> int:
    """The SQLite store's form of an unsigned 64-bit epoch (>= 2**63 shifted by -2**64)."""
    return epoch - (1 << 64) if epoch >= 1 << 63 else epoch


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    device: str
    pump: str
    channel: str
    t0_ns: int
    condition: str
    anomalous: bool
    baseline: str
    stored_ns: int
    duration_ns: int = 1_000_000_000


class StoreView:
    """Read-only queries on the stack's SQLite store (absent tables read as empty)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0,
                                             check_same_thread=False)
            except sqlite3.Error:
                return None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self._db()
        if db is None:
            return []
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # no such table (yet), busy
            return []

    def counts(self, since_ns: int = 0) -> dict[str, int]:
        stored = self._query("SELECT count(*) FROM results WHERE stored_ns >= ?", (since_ns,))
        dead = self._query("SELECT count(*) FROM dead_letters WHERE received_ns >= ?",
                           (since_ns,))
        return {"stored": int(stored[0][0]) if stored else 0,
                "dead_letters": int(dead[0][0]) if dead else 0}

    def rate(self, window_s: float = 5.0) -> float:
        since = time.time_ns() - int(window_s * 1e9)
        rows = self._query("SELECT count(*) FROM results WHERE stored_ns >= ?", (since,))
        return (int(rows[0][0]) if rows else 0) / window_s

    def epoch_counts(self, device: str, epoch: int) -> tuple[int, int]:
        """(stored results, dead-lettered reports) of one device's stream epoch."""
        e = signed_epoch(epoch)
        r = self._query("SELECT count(*) FROM results WHERE device = ? AND epoch = ?",
                        (device, e))
        d = self._query("SELECT count(DISTINCT seq) FROM dead_letters WHERE device = ? "
                        "AND epoch = ? AND seq IS NOT NULL", (device, e))
        return (int(r[0][0]) if r else 0, int(d[0][0]) if d else 0)

    def results(self, device: str, epoch: int) -> list[ResultRow]:
        rows = self._query(
            "SELECT device, pump, channel, t0_ns, condition, anomalous, baseline, stored_ns "
            "FROM results WHERE device = ? AND epoch = ? ORDER BY t0_ns",
            (device, signed_epoch(epoch)))
        return [ResultRow(device=r[0], pump=r[1], channel=r[2], t0_ns=int(r[3]),
                          condition=r[4], anomalous=bool(r[5]), baseline=r[6],
                          stored_ns=int(r[7])) for r in rows]

    def recent_results(self, since_ns: int) -> list[ResultRow]:
        """Results stored since ``since_ns`` (indexed on ``stored_ns``), in window order."""
        rows = self._query(
            "SELECT device, pump, channel, t0_ns, condition, anomalous, baseline, stored_ns "
            "FROM results WHERE stored_ns >= ? ORDER BY t0_ns", (since_ns,))
        return [ResultRow(device=r[0], pump=r[1], channel=r[2], t0_ns=int(r[3]),
                          condition=r[4], anomalous=bool(r[5]), baseline=r[6],
                          stored_ns=int(r[7])) for r in rows]

    def alarms(self, since_ns: int = 0) -> list[dict[str, Any]]:
        """Rows of the ``alarms`` table (cloud/dashboard/alarms.py) raised since ``since_ns``."""
        rows = self._query("SELECT pump, kind, state, raised_ns, reason, evidence FROM alarms "
                           "WHERE raised_ns >= ? ORDER BY raised_ns", (since_ns,))
        return [{"pump": r[0], "kind": r[1], "state": r[2], "raised_ns": int(r[3]),
                 "reason": r[4], "evidence": r[5]} for r in rows]

    def alarms_table_exists(self) -> bool:
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'alarms'"))
