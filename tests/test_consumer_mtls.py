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
from pumpwatch.mosquitto_conf import acl_text, tls_listener_conf
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto, free_port, mosquitto_available
from tests.infra.pipeline import chunks, encoded_reports
from tests.test_consumer_pipeline import (
    assert_exactly_once,
    dead_letters,
    running_consumer,
    stored,
    wait_for,
)

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


def device_client(port: int, pkidir: Path, name: str) -> mqtt.Client:
    pki.issue(pkidir, "device", name)
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


async def test_consumer_over_mtls_with_the_acl(tmp_path: Path) -> None:
    pkidir = tmp_path / "pki"
    pki.init_ca(pkidir)
    pki.issue(pkidir, "client", "consumer")
    crt, key = pki.issued_path(pkidir, "client", "consumer")
    port = free_port()
    acl = tmp_path / "acl"
    acl.write_text(acl_text())
    broker = Mosquitto(
        tmp_path / "mosquitto", port=port, plain_listener=False, max_inflight_messages=1000,
        extra_conf=tls_listener_conf(port=port, host="127.0.0.1", pki_dir=pkidir, acl_path=acl),
    )
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
            try:
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
                for c in (good, liar):
                    c.disconnect()
                    c.loop_stop()
    assert_exactly_once(db, {("gw-tls", 9, s) for s in range(40)})
    assert [k for k, _, _ in dead_letters(db)] == ["spoofed"]
