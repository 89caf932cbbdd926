"""The transport interface: what the agent needs from an MQTT client library.

A transport connects in the background (and reconnects with backoff), publishes
QoS 1 messages, and reports what happens as :data:`Event` values through the
``emit`` callback it was given. ``emit`` may be called from any thread and must
not block; the agent queues events and handles them on its own thread.

A transport given ``subscribe`` (a topic) subscribes to it at QoS 1 on every
connection and emits what arrives as :class:`Message`: the agent's
confirmations topic. Its session is persistent, so confirmations published
while the device is offline are delivered after the reconnect (and if the
broker lost them, the confirm timeout publishes the reports again).

Implementations: :class:`edge.mqtt_paho.PahoTransport` (any MQTT 5 broker);
the awsiotsdk transport for AWS IoT Core slots in beside it (same events,
``resends_inflight`` False if its queue drops in-flight messages on disconnect).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class TransportError(RuntimeError):
    """A publish the transport could not accept (not connected, queue full, closed)."""


@dataclass(frozen=True, slots=True)
class Connected:
    session_present: bool
    #: the broker's Maximum Packet Size from CONNACK (bytes), if it announced one;
    #: the publisher keeps report messages under it
    max_packet: int | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The link is down: ``reason`` says why in words an operator can act on
    ("connection refused by host:port", "TLS: certificate verify failed: ...",
    "broker refused the connection: Not authorized (0x87)"). ``connect_failed``:
    no connection was established (an attempt failed) rather than one lost."""

    reason: str
    connect_failed: bool = False


@dataclass(frozen=True, slots=True)
class Acked:
    """The broker's answer to message ``token``: ``ok`` unless a failure reason code."""

    token: int
    ok: bool
    reason: str  # e.g. "Success", "Not authorized (0x87)"


@dataclass(frozen=True, slots=True)
class Message:
    """A message on a topic the transport subscribed to (the device's acks topic)."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The broker's answer to the acks subscription (``ok`` unless a failure code)."""

    ok: bool
    reason: str


Event = Connected | Disconnected | Acked | Message | Subscribed
Emit = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


class Transport(Protocol):
    """One MQTT connection for one device."""

    #: True when the transport itself resends unacknowledged messages after a
    #: reconnect (then the agent keeps them in flight); False: the agent
    #: releases them to the spool on disconnect and publishes them again.
    resends_inflight: bool

    def start(self, emit: Emit) -> None:
        """Connect in the background; keep reconnecting until :meth:`stop`."""
        ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Send a QoS 1 message; returns its token (see :class:`Acked`).
        Raises :class:`TransportError` if it cannot be accepted now."""
        ...

    @property
    def connected(self) -> bool: ...

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 2.0) -> None:
        """Publish ``final`` (topic, payload; retained) if connected, then disconnect."""
        ...
