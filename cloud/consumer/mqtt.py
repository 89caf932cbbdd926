"""The MQTT adapter: a paho-mqtt v5 subscriber with a persistent session and manual acks.

Theory of operation
-------------------
* ``clean_start=False`` and a Session Expiry Interval make the broker keep our
  subscription and our unacknowledged QoS 1 messages across disconnects and
  consumer restarts (same ``client_id``). ``manual_ack=True`` means paho
  sends no PUBACK by itself: :meth:`MqttSource.ack` sends it, and the consumer
  calls it only after every report of the message is committed.
* Every (re)connection starts a new *generation*. A delivery remembers its
  generation, and an ack for a delivery of an older generation is *not*
  sent: after a reconnect the broker redelivers every unacknowledged message
  (same packet id), and that copy will be acked on the new connection. Acking
  the stale packet id could acknowledge a different, newer message that
  reused it.
* paho runs its network loop on its own thread (``loop_start``); ``ack`` from
  the event loop only queues the PUBACK for that thread. Reconnects use
  paho's exponential backoff between ``reconnect_min_s`` and
  ``reconnect_max_s``; the minimum is jittered per process so a fleet of
  consumers does not reconnect in lockstep after a broker restart.
* Messages cross to the event loop through a bounded :class:`Handoff`
  (backpressure: the paho thread blocks when it is full).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ._queue import Handoff
from .config import MqttConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_ns: int
    published_ns: int | None

    def without_payload(self) -> Delivery:
        """What acking (and naming) it needs once parsed: the payload's memory is let go."""
        return dataclasses.replace(self, payload=b"")


@dataclass(slots=True)
class MqttStats:
    connects: int = 0
    disconnects: int = 0
    session_present: bool = False
    connected: bool = False
    delivered: int = 0
    acked: int = 0
    stale_acks_skipped: int = 0
    published: int = 0
    publish_skipped: int = 0


class MqttSource:
    """Owns one paho client. ``start`` connects (in the background); ``stop`` disconnects."""

    def __init__(
        self, config: MqttConfig, handoff: Handoff[Delivery], *, subscribe: bool = True,
        publish_only: bool = False, on_puback: Callable[[int, bool, str], None] | None = None,
    ) -> None:
        """``subscribe`` False: retiring (see the consumer); ``publish_only``: a publisher
        that neither subscribes nor unsubscribes (the dashboard's alarm changes);
        ``on_puback(mid, ok, reason)``: called in the event loop for each PUBACK of a
        :meth:`publish_tracked` message (ok: reason code below 0x80)."""
        self.config = config
        self._subscribe = subscribe
        self._publish_only = publish_only
        self._handoff = handoff
        self.stats = MqttStats()
        self._generation = 0
        self._lock = threading.Lock()
        self.connected = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._on_puback = on_puback
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if config.username is not None:
            c.username_pw_set(config.username, config.password)
        if config.tls is not None:
            c.tls_set(
                ca_certs=config.tls.ca,
                certfile=config.tls.cert,
                keyfile=config.tls.key,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        jitter = random.uniform(0.5, 1.5)
        c.reconnect_delay_set(
            min_delay=config.reconnect_min_s * jitter,  # type: ignore[arg-type]
            max_delay=config.reconnect_max_s,  # type: ignore[arg-type]
        )
        c.max_inflight_messages_set(100)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        if on_puback is not None:
            c.on_publish = self._on_publish
        self._client = c

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        props.ReceiveMaximum = cfg.receive_maximum
        props.MaximumPacketSize = max(cfg.max_payload * 2, 1 << 20)
        self._client.connect_async(
            cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def stop(self, *, expire_session: bool = False) -> None:
        """Disconnect and join. The session and unacked messages stay at the broker, unless
        ``expire_session`` (Session Expiry 0 in the DISCONNECT: the member is gone for good)."""
        self._stopping = True
        self._handoff.close()
        try:
            props = None
            if expire_session:
                props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
        finally:
            self._client.loop_stop()

    # -- acks ----------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    def ack(self, delivery: Delivery) -> bool:
        """PUBACK ``delivery`` if it arrived on the current connection; False if skipped."""
        if delivery.qos == 0:
            return True
        with self._lock:
            if delivery.generation != self._generation or not self.stats.connected:
                self.stats.stale_acks_skipped += 1
                return False
            self._client.ack(delivery.mid, delivery.qos)
            self.stats.acked += 1
        return True

    # -- result topics ---------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """QoS 1 publish (queued by paho, not awaited); False if not connected or refused.

        Result topics are derived data: the store is the record, so a publish lost
        in a disconnect is not retried (the next result for the pump republishes
        its retained state).
        """
        if not self.stats.connected:
            self.stats.publish_skipped += 1
            return False
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.stats.publish_skipped += 1
            return False
        self.stats.published += 1
        return True

    def publish_tracked(self, topic: str, payload: bytes) -> int | None:
        """QoS 1 publish whose PUBACK reaches ``on_puback``: the packet id, or None if not
        connected or refused by paho. paho keeps an unacknowledged message and sends it
        again (same id) after a reconnect, so its PUBACK still comes."""
        if not self.stats.connected:
            self.stats.publish_skipped += 1
            return None
        info = self._client.publish(topic, payload, qos=1)
        # NO_CONN (the link dropped just now): paho holds the message and sends it on the
        # next connection, so it is handed over all the same
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self.stats.publish_skipped += 1
            return None
        self.stats.published += 1
        return int(info.mid)

    # -- paho callbacks (network thread) ---------------------------------------------------------

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        if self._on_puback is not None:
            ok = not bool(getattr(reason, "is_failure", False))
            self._loop.call_soon_threadsafe(self._on_puback, mid, ok, str(reason))

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt connect to %s:%s refused: %s", self.config.host,
                        self.config.port, reason)
            return
        with self._lock:
            self._generation += 1
            self.stats.connects += 1
            self.stats.connected = True
            self.stats.session_present = bool(flags.session_present)
        log.info(
            "mqtt connected to %s:%s as %s (session present: %s, generation %d)",
            self.config.host, self.config.port, self.config.client_id,
            flags.session_present, self._generation,
        )
        if self._generation > 1 and not flags.session_present:
            log.warning(
                "broker has no session for %s on reconnect (expired, taken over, or a broker "
                "without persistence): messages queued for it meanwhile are gone",
                self.config.client_id,
            )
        if self._publish_only:
            pass
        elif self._subscribe:
            client.subscribe(self.config.subscription, options=SubscribeOptions(qos=1))
        else:
            # Retiring: the session's queued messages still arrive; no new ones are assigned.
            client.unsubscribe(self.config.subscription)
        self._loop.call_soon_threadsafe(self.connected.set)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any
    ) -> None:
        for r in reasons:
            if r.is_failure:
                log.error("subscription to %s refused: %s", self.config.subscription, r)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        with self._lock:
            self.stats.connected = False
            self.stats.disconnects += 1
        if self._stopping:
            log.info("mqtt disconnected: %s", reason)
        else:
            log.warning("mqtt disconnected: %s (will reconnect)", reason)
        self._loop.call_soon_threadsafe(self.connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received_ns = time.time_ns()
        published_ns: int | None = None
        props = getattr(msg, "properties", None)
        user = getattr(props, "UserProperty", None) if props is not None else None
        if user:
            for k, v in user:
                if k == self.config.published_property:
                    try:
                        published_ns = int(v)
                    except ValueError:
                        published_ns = None
                    break
        delivery = Delivery(
            topic=msg.topic,
            payload=bytes(msg.payload),
            mid=msg.mid,
            qos=msg.qos,
            generation=self._generation,
            received_ns=received_ns,
            published_ns=published_ns,
        )
        self.stats.delivered += 1
        self._handoff.put(delivery, len(delivery.payload))
