"""The shared broker fixture works: pub/sub, restart on the same port, persistence."""

from __future__ import annotations

import signal
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .mosquitto import Mosquitto


def _connect(broker: Mosquitto, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def _retained(broker: Mosquitto, topic: str, timeout: float = 5.0) -> bytes | None:
    got: list[bytes] = []
    done = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(bytes(msg.payload))
        done.set()

    def on_connect(
        c: mqtt.Client, _u: object, _f: object, _rc: ReasonCode, _p: Properties | None
    ) -> None:
        c.subscribe(topic, qos=1)

    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_connect = on_connect
    c.connect(broker.host, broker.port)
    c.loop_start()
    done.wait(timeout)
    c.loop_stop()
    c.disconnect()
    return got[0] if got else None


def test_publish_retained_survives_sigterm_restart(mosquitto: Mosquitto, unique_topic: str) -> None:
    port = mosquitto.port
    c = _connect(mosquitto, "infra-pub")
    c.publish(unique_topic, b"hello", qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    assert _retained(mosquitto, unique_topic) == b"hello"
    mosquitto.stop(signal.SIGTERM)
    assert not mosquitto.running
    mosquitto.start()
    assert mosquitto.port == port
    assert _retained(mosquitto, unique_topic) == b"hello"


def test_sigkill_after_autosave_keeps_retained(mosquitto: Mosquitto, unique_topic: str) -> None:
    c = _connect(mosquitto, "infra-pub2")
    c.publish(unique_topic, b"saved", qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
    time.sleep(mosquitto.autosave_interval + 1.0)  # let the periodic save run
    mosquitto.stop(signal.SIGKILL)
    mosquitto.start()
    assert _retained(mosquitto, unique_topic) == b"saved"
