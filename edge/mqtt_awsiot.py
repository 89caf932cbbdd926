"""The awsiotsdk (awscrt MQTT 5) transport: AWS IoT Core, or any broker, over mutual TLS.

Theory of operation
-------------------
``mqtt5_client_builder.mtls_from_path`` builds an awscrt MQTT 5 client that
authenticates with the device's X.509 certificate. The client id is the
device name, which is the AWS IoT thing name: the IoT policy binds
``iot:Connect`` to ``${iot:Connection.Thing.ThingName}``. SDK metrics (which the
SDK otherwise puts into the MQTT username) are disabled.

Durability is the spool's job, not the SDK's. The SDK's offline queue lives in
memory only, so it is never used: :meth:`publish` refuses while the link is
down (the reports stay spooled and the publisher sends them after the
reconnect), and the client runs with ``FAIL_ALL_ON_DISCONNECT``, under which
nothing queued survives a disconnect except what MQTT 5 itself requires
(unacknowledged QoS 1 publishes, retransmitted on session resumption; the
session is persistent: ``REJOIN_ALWAYS`` plus a session expiry).

What happens to those in-flight publishes depends on the broker: with the
session resumed the SDK resends them; without it (a broker that lost its
state) the SDK fails them with ``OPERATION_FAILED_DUE_TO_OFFLINE_QUEUE_POLICY``.
The agent must not wait on the first nor punish the second, so this transport
declares ``resends_inflight = False``: on every disconnect the agent releases
its in-flight batches to the spool and publishes them again after the
reconnect; the old publishes' late outcomes are ignored (a disconnect-caused
failure is not reported at all, a late PUBACK settles nothing). The price is
at most one in-flight window of duplicates after a reconnect with a resumed
session; duplicates carry their report identity and the consumer dedupes.
Every other outcome is reported as :class:`~edge.transport.Acked`: a PUBACK
(success, or a failure reason such as 0x87 Not authorized) or an error.
Anything unacknowledged when the process dies is still in the spool and goes
out again at the next start.

The batching, rate limit and in-flight window are the publisher's, identical
for both transports; the config defaults them to AWS IoT's limits (128 KB per
message, 100 publishes/s, 100 in flight) when this transport is chosen.
awscrt runs its own event-loop threads, so DSP never starves the keep-alive.
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import Future
from typing import Any

from awscrt import mqtt5
from awsiot import mqtt5_client_builder

from .config import MqttConfig
from .transport import (
    Acked,
    Connected,
    Disconnected,
    Emit,
    Message,
    Subscribed,
    TransportError,
    Will,
)

log = logging.getLogger(__name__)

#: publish errors caused by the link going down (or our own stop), not by the message:
#: the agent has already released these reports to the spool on ``Disconnected``
_LINK_ERRORS = frozenset(
    {
        "AWS_ERROR_MQTT5_OPERATION_FAILED_DUE_TO_OFFLINE_QUEUE_POLICY",
        "AWS_ERROR_MQTT5_USER_REQUESTED_STOP",
        "AWS_ERROR_MQTT5_CLIENT_TERMINATED",
    }
)


def puback_reason(code: object) -> tuple[bool, str]:
    """``(ok, "Not authorized (0x87)")`` for an MQTT 5 PUBACK reason code."""
    if code is None:
        return True, "Success"
    value = int(code)  # type: ignore[call-overload]
    name = getattr(code, "name", None) or f"reason {value}"
    text = name.replace("_", " ").capitalize()
    return value < 0x80, f"{text} (0x{value:02x})"


_TLS_READ_FAILURE = "AWS_IO_TLS_ERROR_READ_FAILURE"
#: a connect that fails reading TLS before CONNACK: the broker closed the session after
#: the handshake, which under TLS 1.3 is how a refused client certificate arrives
_TLS_READ_HINT = (" (the broker closed the TLS session before CONNACK: a client "
                  "certificate it does not accept, e.g. from another CA, or revoked?)")


def _error_text(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    # AwsCrtError's str() is already "AWS_ERROR_NAME: message"
    return str(exc) or getattr(exc, "name", None) or type(exc).__name__


class AwsIotTransport:
    """One awscrt MQTT 5 client for one device (client id = thing name)."""

    resends_inflight = False  # see the module docstring

    def __init__(
        self, cfg: MqttConfig, *, client_id: str, will: Will | None = None,
        subscribe: str | None = None,
    ) -> None:
        if cfg.tls is None or not cfg.tls.cert or not cfg.tls.key:
            raise ValueError("the awsiot transport needs mqtt.tls.cert and mqtt.tls.key")
        self.cfg = cfg
        self.client_id = client_id
        self.subscribe = subscribe
        self._emit: Emit | None = None
        self._connected = threading.Event()
        self._stopped = threading.Event()
        self._stopping = False  # our own clean disconnect: logged at INFO, not WARNING
        self._tokens = itertools.count(1)
        kw: dict[str, Any] = {}
        if cfg.tls.ca:
            kw["ca_filepath"] = cfg.tls.ca  # else the system trust store (Amazon Root CA)
        if cfg.username is not None:
            kw["username"] = cfg.username
            kw["password"] = (cfg.password or "").encode()
        if will is not None:
            kw["will"] = mqtt5.PublishPacket(
                topic=will.topic,
                payload=will.payload,
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain=will.retain,
            )
        self._client = mqtt5_client_builder.mtls_from_path(
            endpoint=cfg.host,
            port=cfg.port,
            cert_filepath=cfg.tls.cert,
            pri_key_filepath=cfg.tls.key,
            client_id=client_id,
            keep_alive_interval_sec=cfg.keepalive_s,
            session_expiry_interval_sec=cfg.session_expiry_s,
            session_behavior=mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS,
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            min_reconnect_delay_ms=max(1, round(cfg.reconnect_min_s * 1000)),
            max_reconnect_delay_ms=max(1, round(cfg.reconnect_max_s * 1000)),
            enable_metrics_collection=False,
            on_lifecycle_connection_success=self._on_success,
            on_lifecycle_connection_failure=self._on_failure,
            on_lifecycle_disconnection=self._on_disconnection,
            on_lifecycle_stopped=self._on_stopped,
            on_publish_received=self._on_publish_received,
            **kw,
        )

    # -- awscrt callbacks (its event-loop thread) ------------------------------------------

    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        present = bool(data.connack_packet and data.connack_packet.session_present)
        log.info(
            "mqtt(awsiot): connected to %s:%d as %s (session present: %s)",
            self.cfg.host,
            self.cfg.port,
            self.client_id,
            present,
        )
        self._connected.set()
        if self.subscribe is not None:  # every connection (AWS IoT may have lost the session)
            sub = mqtt5.SubscribePacket(subscriptions=[
                mqtt5.Subscription(topic_filter=self.subscribe, qos=mqtt5.QoS.AT_LEAST_ONCE)
            ])
            self._client.subscribe(sub).add_done_callback(self._subscribed)
        settings = data.negotiated_settings
        limit = getattr(settings, "maximum_packet_size_to_server", None) if settings else None
        if self._emit:
            self._emit(Connected(present, int(limit) if limit else None))

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        why = _error_text(data.exception)
        if data.connack_packet is not None and data.connack_packet.reason_code is not None:
            _ok, code = puback_reason(data.connack_packet.reason_code)
            why = f"connect refused: {code}"
        elif getattr(data.exception, "name", None) == _TLS_READ_FAILURE:
            # awscrt does not pass the broker's alert on: say what it most likely means
            why += _TLS_READ_HINT
        # logged by the agent (edge.link: once per change, then with backoff)
        log.debug(
            "mqtt(awsiot): connection to %s:%d failed: %s", self.cfg.host, self.cfg.port, why
        )
        if self._emit:
            self._emit(Disconnected(f"connection to {self.cfg.host}:{self.cfg.port} failed: "
                                    f"{why}", True))

    def _on_disconnection(self, data: mqtt5.LifecycleDisconnectData) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        why = _error_text(data.exception)
        if data.disconnect_packet is not None and data.disconnect_packet.reason_code is not None:
            why = f"server disconnect: {puback_reason(data.disconnect_packet.reason_code)[1]}"
        if was:  # a lost link is logged by the agent (edge.link)
            log.log(logging.INFO if self._stopping else logging.DEBUG,
                    "mqtt(awsiot): disconnected: %s", why)
        if self._emit:
            self._emit(Disconnected(why))

    def _subscribed(self, fut: Future[Any]) -> None:
        exc = fut.exception()
        codes = [] if exc is not None else list(getattr(fut.result(), "reason_codes", []) or [])
        if exc is not None and getattr(exc, "name", None) in _LINK_ERRORS:
            return  # the link went down first: subscribed again on the next connection
        ok = exc is None and all(int(c) < 0x80 for c in codes)
        why = _error_text(exc) if exc is not None else ", ".join(
            puback_reason(c)[1] for c in codes)
        if not ok:
            log.error("mqtt(awsiot): subscription to %s refused: %s", self.subscribe, why)
        if self._emit:
            self._emit(Subscribed(ok, why))

    def _on_publish_received(self, data: mqtt5.PublishReceivedData) -> None:
        packet = data.publish_packet
        if self._emit and packet is not None:
            self._emit(Message(packet.topic, bytes(packet.payload or b"")))

    def _on_stopped(self, _data: mqtt5.LifecycleStoppedData) -> None:
        self._connected.clear()
        self._stopped.set()

    def _completed(self, token: int, fut: Future[Any]) -> None:
        exc = fut.exception()
        if exc is not None:
            if getattr(exc, "name", None) in _LINK_ERRORS:
                log.debug("mqtt(awsiot): message %d dropped by the link: %s", token, exc)
                return
            ok, why = False, f"publish failed: {_error_text(exc)}"
        else:
            puback = getattr(fut.result(), "puback", None)
            ok, why = puback_reason(getattr(puback, "reason_code", None))
        if self._emit:
            self._emit(Acked(token, ok, why))

    # -- Transport ---------------------------------------------------------------------------

    def start(self, emit: Emit) -> None:
        self._emit = emit
        self._stopped.clear()
        self._client.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _send(self, topic: str, payload: bytes, retain: bool) -> Future[Any]:
        packet = mqtt5.PublishPacket(
            topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=retain
        )
        try:
            fut: Future[Any] = self._client.publish(packet)
        except Exception as exc:  # awscrt validation errors arrive as plain exceptions
            raise TransportError(f"publish refused by the client: {_error_text(exc)}") from exc
        return fut

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        # never hand the SDK a message while offline: its queue is memory only
        if not self._connected.is_set():
            raise TransportError("not connected")
        token = next(self._tokens)
        fut = self._send(topic, payload, retain)
        fut.add_done_callback(lambda f: self._completed(token, f))
        return token

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        if final is not None and self._connected.is_set():
            try:
                self._send(final[0], final[1], True).result(timeout)
            except Exception as exc:
                log.warning("mqtt(awsiot): final status not delivered: %s", _error_text(exc))
        # An explicit normal DISCONNECT: without a packet the SDK just drops the socket, and
        # the broker then publishes the will ("connection lost") over the "shutdown" status.
        self._stopping = True
        self._client.stop(
            mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode.NORMAL_DISCONNECTION)
        )
        if not self._stopped.wait(timeout):
            log.warning("mqtt(awsiot): client did not stop within %.1f s", timeout)
        self._connected.clear()
