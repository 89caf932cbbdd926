"""The paho-mqtt (MQTT 5) transport: any broker, QoS 1, persistent session, will."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

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


def _reason(rc: ReasonCode | int | None) -> tuple[bool, str]:
    if rc is None:
        return True, "Success"
    if isinstance(rc, ReasonCode):
        return (not rc.is_failure), f"{rc.getName()} (0x{rc.value:02x})"
    return rc == 0, f"rc={rc}"


def describe_failure(exc: BaseException | None, host: str, port: int) -> str:
    """An operator's words for why a connection attempt to ``host:port`` failed."""
    where = f"{host}:{port}"
    if exc is None:
        return f"cannot connect to {where}"
    if isinstance(exc, socket.gaierror):
        return f"DNS: cannot resolve {host!r}: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate at {where} is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (no broker listening there?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"connecting to {where} timed out"
    if isinstance(exc, OSError):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    return f"cannot connect to {where}: {exc}"


def _is_alert(sock_error: str) -> bool:
    """Whether a socket error is a TLS alert the broker sent (``[SSL: TLSV1_ALERT_...]``,
    ``SSLV3_ALERT_...``): its reason for closing, in its own words."""
    return "_ALERT_" in sock_error


def _is_bare_eof(sock_error: str) -> bool:
    """Whether a socket error is a TLS connection closed without an alert or a
    close_notify (``ssl.SSLEOFError``'s message)."""
    return sock_error.startswith("EOF occurred in violation of protocol")


def refusal_reason(sock_error: str, alert: str | None) -> tuple[str, str | None]:
    """The reason to report for a connection the broker closed before CONNACK, given
    ``alert``, the TLS alert an earlier attempt of this failure episode saw; and the
    alert to remember.

    A broker refusing our certificate sends an alert and closes; under TLS 1.3 the
    client's handshake has already finished, our CONNECT is in flight, and depending on
    timing the next read returns the alert or only the closed connection (the alert lost
    with the reset our unread CONNECT causes). A bare EOF after an alert from the same
    broker is that same refusal: reported in the alert's words, so the link log sees one
    state, not a change per attempt. Anything else is reported as it is."""
    if _is_alert(sock_error):
        return sock_error, sock_error
    if alert is not None and _is_bare_eof(sock_error):
        return alert, alert
    return sock_error, alert


class PahoTransport:
    """paho-mqtt client in its own network thread (``loop_start``): DSP never starves
    the keep-alive, and paho resends unacknowledged QoS 1 messages after a reconnect."""

    resends_inflight = True

    def __init__(
        self, cfg: MqttConfig, *, client_id: str, will: Will | None = None,
        subscribe: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.subscribe = subscribe
        self._emit: Emit | None = None
        self._connected = threading.Event()
        self._stopping = False  # our own clean disconnect: logged at INFO, not WARNING
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
        )
        # our own window limits what is in flight; paho must never queue on its own
        c.max_inflight_messages_set(cfg.inflight + 8)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(
            max(1, round(cfg.reconnect_min_s)), max(1, round(cfg.reconnect_max_s))
        )
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls is not None:
            c.tls_set(
                ca_certs=cfg.tls.ca,
                certfile=cfg.tls.cert,
                keyfile=cfg.tls.key,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        if will is not None:
            c.will_set(will.topic, will.payload, qos=1, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_log = self._on_log
        self._client = c
        # paho logs a socket error (a TLS alert from a broker refusing our certificate)
        # and then reports only "connection lost": the logged text is the reason
        self._sock_error: str | None = None
        self._refused = False  # CONNACK refused: the disconnect that follows says nothing new
        # the TLS alert of this failure episode (refusal_reason); cleared on CONNACK
        self._alert: str | None = None

    # -- paho callbacks (network thread) -------------------------------------------------

    def _on_connect(
        self,
        _c: mqtt.Client,
        _u: Any,
        flags: mqtt.ConnectFlags,
        rc: ReasonCode,
        props: Properties | None,
    ) -> None:
        ok, why = _reason(rc)
        self._sock_error = self._alert = None  # a CONNACK: TLS let us in
        if not ok:  # logged by the agent (edge.link: once per change, then with backoff)
            log.debug("mqtt: broker refused the connection: %s", why)
            self._refused = True
            if self._emit:
                self._emit(Disconnected(f"broker refused the connection: {why}", True))
            return
        log.info(
            "mqtt: connected to %s:%d as %s (session present: %s)",
            self.cfg.host,
            self.cfg.port,
            self.client_id,
            flags.session_present,
        )
        self._connected.set()
        if self.subscribe is not None:
            # every connection: a broker without our session must learn it again
            _c.subscribe(self.subscribe, qos=1)
        if self._emit:
            limit = getattr(props, "MaximumPacketSize", None) if props is not None else None
            self._emit(Connected(bool(flags.session_present), limit))

    def _on_disconnect(
        self,
        _c: mqtt.Client,
        _u: Any,
        _f: mqtt.DisconnectFlags,
        rc: ReasonCode,
        _p: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        _ok, why = _reason(rc)
        sock, self._sock_error = self._sock_error, None
        if not was and self._refused:
            self._refused = False
            return
        code = getattr(rc, "value", rc)
        if sock is not None and not was:
            sock, self._alert = refusal_reason(sock, self._alert)
        if sock is not None and (not was or code == 0x80):  # 0x80: "Unspecified error"
            why = sock if was else f"{self.cfg.host}:{self.cfg.port} closed the connection: {sock}"
        elif not was and code == 0x80:
            why = (f"{self.cfg.host}:{self.cfg.port} closed the connection before CONNACK "
                   "(a refused client certificate, or not an MQTT broker?)")
        if self._stopping:
            log.info("mqtt: disconnected: %s", why)
        else:  # logged by the agent (edge.link: once per change, then with backoff)
            log.debug("mqtt: disconnected: %s", why)
        if self._emit:
            self._emit(Disconnected(why, not was))

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        # paho calls this from inside its ``except OSError:`` around the connect and
        # passes no exception: the one being handled is the reason
        why = describe_failure(sys.exc_info()[1], self.cfg.host, self.cfg.port)
        log.debug("mqtt: %s", why)
        if self._emit:
            self._emit(Disconnected(why, True))

    def _on_log(self, _c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR and "socket" in buf:
            self._sock_error = buf.split(": ", 1)[-1]

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        for r in reasons:
            ok, why = _reason(r)
            if not ok:
                log.error("mqtt: subscription to %s refused: %s", self.subscribe, why)
            if self._emit:
                self._emit(Subscribed(ok, why))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self._emit:
            self._emit(Message(msg.topic, bytes(msg.payload)))

    def _on_publish(
        self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        ok, why = _reason(rc)
        if self._emit:
            self._emit(Acked(mid, ok, why))

    # -- Transport -------------------------------------------------------------------------

    def start(self, emit: Emit) -> None:
        self._emit = emit
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self._client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        if not self._connected.is_set():
            raise TransportError("not connected")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish refused by the client: {mqtt.error_string(info.rc)}")
        # NO_CONN: paho keeps the message and sends it after reconnecting
        return int(info.mid)

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        if final is not None and self._connected.is_set():
            try:
                info = self._client.publish(final[0], final[1], qos=1, retain=True)
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: final status not delivered: %s", exc)
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
