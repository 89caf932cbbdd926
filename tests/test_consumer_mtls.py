"""The consumer over mutual TLS with the topic ACL, as deployed (certificates from cloud.pki)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import dsp
from cloud import pki
from cloud.roles import Role
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.mqtt_identity import Identity
from tests.infra.pipeline import chunks, encoded_reports
from tests.test_consumer_pipeline import (
    assert_exactly_once,
    dead_letters,
    running_consumer,
    stored,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("require_mosquitto")


def device_client(port: int, pkidir: Path, name: str) -> mqtt.Client:
    crt, key = pki.issued_path(pkidir, "device", name)
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name,
                    protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(pkidir / "ca.crt"), certfile=str(crt), keyfile=str(key),
              tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert connected.wait(10), "device could not connect over mTLS"
    return c


ROLES: tuple[tuple[Role, str], ...] = (
    ("consumer", "consumer"), ("dashboard", "dashboard"), ("operator", "ops"),
    ("device", "gw-tls"), ("device", "gw-liar"), ("device", "gw-greedy"),
)
REFUSED = 0x87


async def test_consumer_over_mtls_with_the_acl(tmp_path: Path) -> None:
    """Reports of one device all stored exactly once while: a device lies in its payload
    (dead letter), the consumer's, dashboard's and operator's certificates publish valid
    reports as themselves and as the device (PUBACK 0x87, nothing stored), and a device keeps
    trying to join the consumers' shared subscription (SUBACK 0x87 every time)."""
    pkidir = tmp_path / "pki"
    pki.init_ca(pkidir)
    for role, name in ROLES:
        pki.issue(pkidir, role, name)
    crt, key = pki.issued_path(pkidir, "consumer", "consumer")
    broker = Mosquitto(tmp_path / "mosquitto", max_inflight_messages=1000, tls_pki=pkidir)
    port = broker.port
    db = tmp_path / "r.db"
    with broker, ModelServerProcess() as srv:
        cfg = {
            "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "consumer-tls",
                     "tls": {"ca": str(pkidir / "ca.crt"), "cert": str(crt), "key": str(key)}},
            "endpoint": {"endpoint_url": srv.url},
            "batch": {"max_delay_ms": 20},
            "store": {"url": f"sqlite:///{db}", "synchronous": "normal"},
            "consumer": {"stats_interval_s": 0},
        }
        async with running_consumer(cfg):
            good = device_client(port, pkidir, "gw-tls")
            liar = device_client(port, pkidir, "gw-liar")
            greedy = Identity(broker, pkidir, "device", "gw-greedy")
            wrong = [Identity(broker, pkidir, role, name) for role, name in ROLES[:3]]
            codes: list[int] = []
            stop = threading.Event()

            def join_the_share() -> None:
                while not stop.is_set():
                    codes.append(greedy.sub("$share/pumpwatch/pumpwatch/devices/+/reports"))

            joiner = threading.Thread(target=join_the_share)
            joiner.start()
            try:
                for w in wrong:
                    for dev in (w.name, "gw-tls"):
                        forged = dsp.encode_batch(dev, encoded_reports(dev, 5, range(3)))
                        code = await asyncio.to_thread(
                            w.pub, f"pumpwatch/devices/{dev}/reports", forged
                        )
                        assert code == REFUSED, (w.name, dev)
                reports = encoded_reports("gw-tls", 9, range(40))
                for batch in chunks(reports, 8):
                    info = good.publish("pumpwatch/devices/gw-tls/reports",
                                        dsp.encode_batch("gw-tls", batch), qos=1)
                    await asyncio.to_thread(info.wait_for_publish, 10)
                # gw-liar may only write its own tree (the ACL), so it lies in the payload
                info = liar.publish("pumpwatch/devices/gw-liar/reports",
                                    dsp.encode_batch("gw-tls", reports[:2]), qos=1)
                await asyncio.to_thread(info.wait_for_publish, 10)
                await asyncio.to_thread(wait_for, lambda: len(stored(db)) >= 40, 20, "rows")
                await asyncio.to_thread(wait_for, lambda: len(dead_letters(db)) >= 1, 10, "dl")
            finally:
                stop.set()
                joiner.join()
                for c in (good, liar):
                    c.disconnect()
                    c.loop_stop()
                for i in (greedy, *wrong):
                    i.close()
    assert codes and set(codes) == {REFUSED}
    assert_exactly_once(db, {("gw-tls", 9, s) for s in range(40)})
    assert [k for k, _, _ in dead_letters(db)] == ["spoofed"]
