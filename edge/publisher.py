"""Publishing policy over the spool, sans-IO: batches, in-flight window, rate, failures.

Theory of operation
-------------------
The publisher decides *what* to send *when*; a transport (:mod:`edge.transport`)
does the sending. Time is passed in (``now``, monotonic seconds).

* :meth:`Publisher.poll` leases the oldest pending reports from the spool and
  packs them into batches (one MQTT message each, :func:`dsp.encode_batch`)
  no bigger than ``max_message_bytes``, while the link is up, the in-flight
  window has room, the rate limiter has a token and no failure hold is on.
  The same limits apply to the drain after an outage: a backlog goes out at
  ``rate`` messages per second, never faster.
* The caller publishes each batch and reports the transport's token with
  :meth:`Publisher.sent` (or :meth:`Publisher.send_failed`).
* :meth:`Publisher.on_ack` settles a token: success acks its reports in the
  spool (they are gone for good) -- or, with end-to-end confirmation on
  (``confirm_timeout_s`` set), makes them *unconfirmed*: they stay until a
  confirmation from the cloud covers them (:meth:`Publisher.on_confirm`), and
  :meth:`Publisher.poll` first returns those the re-publish schedule names
  (:mod:`edge.republish`: passed over by the confirmations, or a probe of at
  most one in-flight window's worth when the cloud has confirmed nothing for the
  confirm timeout) to the pending queue, so they go out again (same identity,
  oldest first) under the same window and rate as any other; a failure reason code (e.g. 0x87 not
  authorized, 0x97 quota exceeded) is logged with the reason, the reports go
  back to the spool, and publishing pauses for ``failure_backoff_s`` (doubling
  per consecutive failure up to 300 s, jittered): no hot retry loop.
* On disconnect, in-flight batches stay in flight when the transport resends
  them itself after reconnecting (paho with a persistent session does);
  otherwise they are released and sent again from the spool.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import dsp
from dsp.confirm import ConfirmDecodeError, decode_confirmation

from .spool import Key, Spool

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 300.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT message's worth of reports."""

    keys: tuple[Key, ...]
    payload: bytes

    def describe(self) -> str:
        (e0, s0), (_e1, s1) = self.keys[0], self.keys[-1]
        return f"{len(self.keys)} reports epoch={e0:x} seq={s0}..{s1}"


@dataclass(slots=True)
class PublisherStats:
    messages: int = 0  # report messages handed to the transport
    reports: int = 0  # reports in them (resends counted again)
    acked_messages: int = 0
    acked_reports: int = 0
    failed_messages: int = 0  # PUBACK with a failure reason code, or publish refused
    inflight: int = 0  # messages awaiting PUBACK
    inflight_peak: int = 0
    inflight_capacity: int = 0
    rate_limited: int = 0  # polls that had work but no rate token
    confirmations: int = 0  # confirmation messages received
    confirmations_invalid: int = 0  # undecodable, or for another device
    confirmed_reports: int = 0  # reports settled by confirmations
    confirm_refused: int = 0  # acks subscriptions refused (PUBACK settles meanwhile)
    last_error: str | None = None
    last_error_at: float | None = None


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.t = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


@dataclass
class Publisher:
    spool: Spool
    device: str
    max_message_bytes: int = 128 * 1024
    rate: float = 100.0
    inflight: int = 20
    failure_backoff_s: float = 5.0
    transport_resends: bool = True
    confirm_timeout_s: float | None = None  # None: PUBACK settles (no confirmations)
    now: float = 0.0
    rng: Callable[[], float] = random.random
    stats: PublisherStats = field(default_factory=PublisherStats)

    def __post_init__(self) -> None:
        self.connected = False
        self._bucket = TokenBucket(self.rate, self.rate / 10.0, self.now)
        self._inflight: dict[int, Outgoing] = {}
        self._hold_until = 0.0
        self._failures = 0
        self._confirm_ok = True  # the acks subscription was not refused
        # a batch wraps raw reports verbatim: envelope + list header (<= 5 bytes)
        self._overhead = len(dsp.encode_batch(self.device, [])) + 5
        self._configured_room = self.max_message_bytes - self._overhead
        self._room = self._configured_room
        self.stats.inflight_capacity = self.inflight
        self.spool.schedule.rng = self.rng
        self._last_now = self.now

    # -- link events ------------------------------------------------------------------

    def on_connect(self, now: float, max_packet: int | None = None, topic: str = "") -> None:
        """The link is up; ``max_packet``: the broker's Maximum Packet Size, if announced
        (a message over it would get the connection closed, again and again)."""
        self.connected = True
        self._last_now = max(self._last_now, now)
        if self.confirming:
            self.spool.schedule.reconnected(now)
        room = self._configured_room
        if max_packet:
            # PUBLISH fixed header (<= 5) + topic (2 + len) + packet id (2) + properties (<= 5)
            room = min(room, max_packet - 14 - len(topic.encode()) - self._overhead)
        if room != self._room:
            log.info("report messages kept under %d bytes of reports", room)
        self._room = max(1, room)

    def on_disconnect(self, now: float, reason: str) -> None:
        self.connected = False
        if not self.transport_resends and self._inflight:
            self.spool.release(k for o in self._inflight.values() for k in o.keys)
            self._inflight.clear()
            self.stats.inflight = 0

    # -- sending ------------------------------------------------------------------

    def held(self, now: float) -> bool:
        return now < self._hold_until

    def poll(self, now: float, limit: int | None = None) -> list[Outgoing]:
        """Batches to publish now (their reports are leased from the spool)."""
        out: list[Outgoing] = []
        self._last_now = max(self._last_now, now)
        if self.confirm_timeout_s is not None and self._confirm_ok and self.connected:
            # (offline, nothing could go out, and its queued confirmations come first)
            self.spool.expire(now, self.confirm_timeout_s, probe=self.probe_reports)
        if not self.connected or self.held(now):
            return out
        while len(self._inflight) + len(out) < self.inflight and (
            limit is None or len(out) < limit
        ):
            if self.spool.pending == 0:
                break
            if not self._bucket.take(now):
                self.stats.rate_limited += 1
                break
            recs = self.spool.lease(10_000, max_bytes=self._room)
            if not recs:
                break
            payload = dsp.encode_batch(self.device, [r.payload for r in recs])
            out.append(Outgoing(tuple(r.key for r in recs), payload))
        return out

    def sent(self, out: Outgoing, token: int) -> None:
        """The transport accepted ``out`` as message ``token``; its PUBACK is awaited."""
        if token in self._inflight:  # token reuse: the old one is lost to the transport
            self.spool.release(self._inflight.pop(token).keys)
        self._inflight[token] = out
        self.stats.messages += 1
        self.stats.reports += len(out.keys)
        self.stats.inflight = len(self._inflight)
        self.stats.inflight_peak = max(self.stats.inflight_peak, self.stats.inflight)

    def send_failed(self, out: Outgoing, reason: str, now: float) -> None:
        """The transport refused ``out`` (not connected, queue full): back to the spool."""
        self.spool.release(out.keys)
        self._fail(reason, now, out)

    def requeue(self, out: Outgoing) -> None:
        """``out`` was not sent (the link just went down): back to the spool, no penalty."""
        self.spool.release(out.keys)

    def on_ack(self, token: int, ok: bool, reason: str, now: float) -> None:
        self._last_now = max(self._last_now, now)
        out = self._inflight.pop(token, None)
        self.stats.inflight = len(self._inflight)
        if out is None:
            return  # not ours (a status message) or already settled
        if ok:
            if not self.confirming:
                self.spool.ack(out.keys)
            else:
                self.spool.delivered(out.keys, now)
            self.stats.acked_messages += 1
            self.stats.acked_reports += len(out.keys)
            self._failures = 0
            return
        self.spool.release(out.keys)
        self._fail(f"PUBACK refused: {reason}", now, out)

    @property
    def confirming(self) -> bool:
        """Whether PUBACKed reports wait for the cloud's confirmation now."""
        return self.confirm_timeout_s is not None and self._confirm_ok

    def on_subscribed(self, ok: bool, reason: str) -> None:
        """The broker's answer to the acks subscription. Refused (the device may not read
        its acks topic: a policy or ACL without the grant), confirmations cannot arrive, so
        a PUBACK settles again (the guarantee is the broker's) until a later connection's
        subscription is granted; waiting ones are settled now. Logged, and in the status."""
        if self.confirm_timeout_s is None or ok == self._confirm_ok:
            return
        self._confirm_ok = ok
        if ok:
            log.info("confirmations available again: reports wait for them after PUBACK")
            return
        n = self.spool.settle_unconfirmed()
        self.stats.confirm_refused += 1
        log.error("the broker refused the confirmations subscription (%s): a PUBACK settles "
                  "reports until it is granted (%d PUBACKed reports settled now); grant the "
                  "device read on its acks topic", reason, n)

    @property
    def probe_reports(self) -> int:
        """A silent round's probe: one in-flight window's worth of reports (at the
        average reports per message sent so far)."""
        per = self.stats.reports // self.stats.messages if self.stats.messages else 1
        return self.inflight * max(1, per)

    def on_confirm(self, payload: bytes, now: float | None = None) -> int:
        """A confirmation from the cloud: settle the reports it covers (``now``: monotonic
        s, default the latest time passed in). Returns how many."""
        try:
            msg = decode_confirmation(payload)
        except ConfirmDecodeError as exc:
            self.stats.confirmations_invalid += 1
            log.warning("ignoring a bad confirmation: %s", exc)
            return 0
        if msg.device != self.device:
            self.stats.confirmations_invalid += 1
            log.warning("ignoring a confirmation for device %r", msg.device)
            return 0
        self.stats.confirmations += 1
        if now is not None:
            self._last_now = max(self._last_now, now)
        n = sum(self.spool.confirm(e.epoch, e.ranges, self._last_now) for e in msg.epochs)
        self.stats.confirmed_reports += n
        return n

    def _fail(self, reason: str, now: float, out: Outgoing) -> None:
        self.stats.failed_messages += 1
        self._failures += 1
        pause = min(MAX_BACKOFF_S, self.failure_backoff_s * 2 ** (self._failures - 1))
        pause *= 0.75 + 0.5 * self.rng()
        self._hold_until = max(self._hold_until, now + pause)
        self.stats.last_error = reason
        self.stats.last_error_at = now
        log.error(
            "publish of %s failed: %s; the reports stay spooled, next try in %.1f s",
            out.describe(),
            reason,
            pause,
        )

    def release_all(self) -> None:
        """Forget what is in flight (shutting down): the spool sends it next time."""
        self.spool.release(k for o in self._inflight.values() for k in o.keys)
        self._inflight.clear()
        self.stats.inflight = 0

    def next_wakeup(self, now: float) -> float:
        """Seconds until :meth:`poll` may produce something new without an event."""
        if self.held(now):
            return self._hold_until - now
        if self.connected and self.spool.pending and len(self._inflight) < self.inflight:
            return self._bucket.wait_s(now)
        if self.confirm_timeout_s is not None and self._confirm_ok and self.connected:
            t = self.spool.next_expiry(self.confirm_timeout_s)
            if t is not None:
                return max(0.0, min(1.0, t - now))
        return 1.0

    @property
    def inflight_messages(self) -> int:
        return len(self._inflight)
