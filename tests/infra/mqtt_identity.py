"""A bare paho MQTT 5 client holding one identity's certificate, recording what it gets.

Used by the broker perimeter tests: :meth:`Identity.pub` returns the PUBACK reason
code of a QoS 1 publish, :meth:`Identity.sub` the SUBACK reason code of one
subscription, and :attr:`Identity.got` every message delivered to it.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud import pki
from cloud.roles import Role

from .mosquitto import Mosquitto


class Identity:
    """One connected client with the certificate of ``name`` (issued as ``role`` in ``pkidir``)."""

    def __init__(
        self, broker: Mosquitto, pkidir: Path, role: Role, name: str, *, client_id: str = ""
    ) -> None:
        crt, key = pki.issued_path(pkidir, role, name)
        if not crt.exists():
            pki.issue(pkidir, role, name)
        self.name = name
        self.got: list[tuple[str, bytes, bool]] = []
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.ready = threading.Event()
        self.lock = threading.Lock()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or uuid.uuid4().hex,
            protocol=mqtt.MQTTv5,
        )
        c.tls_set(ca_certs=str(pkidir / "ca.crt"), certfile=str(crt), keyfile=str(key))
        c.on_connect = lambda *_a: self.ready.set()
        c.on_message = self._on_message
        c.on_publish = lambda _c, _u, mid, rc, _p: self.acks.__setitem__(mid, rc.value)
        c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(
            mid, [r.value for r in rcs]
        )
        c.connect(broker.host, broker.port)
        c.loop_start()
        assert self.ready.wait(10), f"{name} could not connect"
        self.c = c

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((m.topic, bytes(m.payload), bool(m.retain)))

    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.got)

    def pub(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> int:
        """PUBACK reason code of a QoS 1 publish (0 success, 16 no subscribers, 0x87 refused)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + 5
        while info.mid not in self.acks and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.acks[info.mid]

    def sub(self, topic: str) -> int:
        """SUBACK reason code of subscribing to ``topic`` at QoS 1 (1 granted, 0x87 refused)."""
        _, mid = self.c.subscribe(topic, qos=1)
        assert mid is not None
        deadline = time.monotonic() + 5
        while mid not in self.subacks and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.subacks[mid][0]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
