"""The edge agent: source -> ring (which frames) -> dsp -> spool -> transport, with status.

Theory of operation
-------------------
Three threads of ours plus the transport's network thread:

* ``acquire`` reads blocks from the source into the :class:`~edge.ring.SampleRing`
  (bounded; when DSP falls behind a live source the ring loses samples, the
  oldest unread or, while DSP holds its interval, the arriving ones; a replay
  waits).
* ``compute`` takes each report interval straight from the ring (a lease on
  its samples, no second copy; :meth:`~edge.ring.SampleRing.take`), runs
  :class:`~edge.pipeline.ReportBuilder` (dsp.analyze vectorized over
  channels) on it group by group of channels and appends the interval's
  reports to the spool in one group commit. Before it starts an interval it
  writes the progress mark, so reports lost to a crash mid-computation are
  counted and logged at the next start.
* the caller's thread (:meth:`Agent.run`) drains: it feeds transport events to
  the :class:`~edge.publisher.Publisher`, publishes what the publisher hands
  out, publishes the retained status every ``status.interval_s`` and syncs the
  spool's acks once a second.

The spool is the only state shared between ``compute`` and the drain loop, and
one lock guards it. numpy/scipy release the GIL in their heavy loops and paho
runs in its own thread, so DSP never starves the MQTT keep-alive.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict
from typing import Any, Literal

import numpy as np

from simulator.source import Source

from .config import EdgeConfig, config_notes
from .link import LinkLog
from .metrics import MetricsServer, render
from .pipeline import COMPUTING, SPOOLED, ProgressMark, Record, ReportBuilder
from .publisher import Publisher
from .ring import Interval, SampleRing
from .sources import channel_index
from .spool import Spool, SpoolError
from .transport import (
    Acked,
    Connected,
    Disconnected,
    Event,
    Message,
    Subscribed,
    Transport,
    TransportError,
    Will,
)
from .transports import make_transport

log = logging.getLogger(__name__)

STATUS_VERSION = 1


def ring_capacity(cfg: EdgeConfig, overflow: Literal["block", "drop"]) -> int:
    """Samples per channel of the agent's ring: the report interval being framed lives
    in it, plus the time DSP may fall behind (``pipeline.ring_s``; a source that waits,
    ``"block"``, needs at most 0.25 s of it), at least two source blocks."""
    ring_s = cfg.pipeline.ring_s if overflow == "drop" else min(cfg.pipeline.ring_s, 0.25)
    slack = max(round(ring_s * cfg.report.fs), 2 * cfg.source.block_size, 1)
    return cfg.report.interval_samples + slack


class Agent:
    """One device's agent. ``run()`` blocks until ``stop`` is set (or, with
    ``exit_when_drained``, until the source ended and every report was acknowledged)."""

    def __init__(
        self,
        cfg: EdgeConfig,
        source: Source,
        *,
        transport: Transport | None = None,
        epoch: int | None = None,
        overflow: str | None = None,
        exit_when_drained: bool = False,
        drain_timeout_s: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.epoch = secrets.randbits(64) if epoch is None else epoch
        self.exit_when_drained = exit_when_drained
        self.drain_timeout_s = drain_timeout_s
        self.started = time.monotonic()
        self.started_wall = time.time()
        self._idx = channel_index(cfg, source.channels)
        self._identity = bool(
            len(self._idx) == len(source.channels)
            and (self._idx == np.arange(len(self._idx))).all()
        )
        if source.fs != cfg.report.fs:
            raise ValueError(
                f"the source samples at {source.fs} Hz but report.fs is {cfg.report.fs} Hz"
            )
        rc = cfg.report
        self.spool = Spool(
            cfg.spool.path,
            max_bytes=cfg.spool.max_bytes,
            segment_bytes=cfg.spool.segment_bytes,
            fsync=cfg.spool.fsync,
        )
        self.mark = ProgressMark(self.spool.path)
        self.lost_at_start = self.mark.report_previous()
        n_ch = len(self._idx)
        ovf = overflow or cfg.pipeline.overflow
        if ovf == "auto":
            ovf = "drop" if cfg.source.pace == "realtime" else "block"
        mode: Literal["block", "drop"] = "block" if ovf == "block" else "drop"
        self.ring = SampleRing(n_ch, ring_capacity(cfg, mode), overflow=mode)
        step = cfg.pipeline.chunk_channels
        self._groups = [(lo, min(lo + step, n_ch)) for lo in range(0, n_ch, step)]
        self.builder = ReportBuilder(cfg, self.epoch)
        # warm up (FFT plans, caches) before samples arrive, so a live source's first
        # interval does not find the ring full; results discarded, no seq used
        k = min(n_ch, cfg.pipeline.chunk_channels)
        self.builder.build_part(0, np.zeros((k, rc.interval_samples), np.float32), 0, seq0=0)
        self.builder.reset_tracking()  # the zeros' envelope band is no evidence
        self.publisher = Publisher(
            self.spool,
            cfg.device,
            max_message_bytes=cfg.mqtt.max_message_bytes,
            rate=cfg.mqtt.publish_rate,
            inflight=cfg.mqtt.inflight,
            failure_backoff_s=cfg.mqtt.failure_backoff_s,
            confirm_timeout_s=cfg.mqtt.confirm_timeout_s if cfg.mqtt.confirm else None,
            now=time.monotonic(),
        )
        self.status_topic = cfg.topic("status")
        self.reports_topic = cfg.topic("reports")
        # the broker publishes this (retained) if the link dies without a goodbye
        will_payload = json.dumps(
            {
                "v": STATUS_VERSION,
                "device": cfg.device,
                "site": cfg.site,
                "state": "offline",
                "reason": "connection lost",
                "epoch": f"{self.epoch:016x}",
            }
        ).encode()
        will = Will(self.status_topic, will_payload)
        self.transport: Transport = transport or make_transport(
            cfg.mqtt, client_id=cfg.client_id, will=will,
            subscribe=cfg.acks_topic if cfg.mqtt.confirm else None,
        )
        self.publisher.transport_resends = self.transport.resends_inflight
        self._lock = threading.Lock()  # guards the spool and the publisher
        self._wake = threading.Event()
        self._inbox: deque[Event] = deque()
        self._halt = threading.Event()  # compute: stop taking new intervals
        self._source_done = threading.Event()
        self._compute_done = threading.Event()
        self.errors: list[str] = []
        self.errors_nonfatal: list[str] = []
        self.lost_to_spool_errors = 0
        self.link_state = "connecting"
        self.connects = 0
        self.disconnects = 0
        self.link_since = time.monotonic()
        self.link_log = LinkLog()
        self.intervals = 0
        self.compute_s = 0.0
        self._rate_mark = (time.monotonic(), 0, 0)
        self.reports_per_s = 0.0
        self.acked_per_s = 0.0
        sc = cfg.status
        # bound now, so a port in use fails the start (exit 2) like a bad spool; served in run()
        self.metrics: MetricsServer | None = (
            None if sc.metrics_port is None
            else MetricsServer(sc.metrics_host, sc.metrics_port, self.metrics_text)
        )
        log.info(
            "agent %s (site %s): epoch %x, %d channels of %d pumps at %.0f Hz, %s s reports, "
            "spool %s",
            cfg.device,
            cfg.site,
            self.epoch,
            n_ch,
            len(cfg.pumps),
            rc.fs,
            rc.interval_s,
            cfg.spool.path,
            extra={"device": cfg.device, "site": cfg.site, "epoch": f"{self.epoch:016x}"},
        )
        for note in config_notes(cfg):
            log.info("config: %s", note)

    # -- threads -------------------------------------------------------------------------

    def _acquire(self) -> None:
        try:
            for block in self.source.blocks():
                if self._halt.is_set():
                    break
                x = block.samples if self._identity else block.samples[self._idx]
                rpm = None if block.rpm is None else np.asarray(block.rpm)[self._idx]
                self.ring.write(x, block.t0_ns, block.fs, rpm)
        except Exception as exc:
            log.exception("acquisition failed")
            self.errors.append(f"source: {exc}")
        finally:
            self._source_done.set()
            self.ring.close()

    def _compute(self) -> None:
        rc = self.cfg.report
        n = len(self._idx)
        try:
            while not self._halt.is_set():
                iv = self.ring.take(rc.interval_samples, timeout=0.5)
                if iv is None:
                    if self.ring.drained:
                        break
                    continue
                try:
                    self._compute_interval(iv, n)
                finally:
                    self.ring.release()
        except Exception as exc:
            log.exception("computation failed")
            self.errors.append(f"compute: {exc}")
        finally:
            self._compute_done.set()
            self._wake.set()

    def _compute_interval(self, iv: Interval, n: int) -> None:
        """Analyze one leased interval group by group of channels (views of the ring,
        a few MB of DSP temporaries at a time), then spool its reports together (one
        group commit)."""
        base = self.builder.seq
        self.mark.write(self.epoch, base, base + n, COMPUTING)
        recs: list[Record] = []
        t = time.thread_time()  # CPU time of this thread: unaffected by other load
        for lo, hi in self._groups:
            recs += self.builder.build_part(
                lo,
                iv.rows(lo, hi),
                iv.t0_ns,
                seq0=base,
                after_restart=iv.after_restart,
                rpm=None if iv.rpm is None else iv.rpm[lo:hi],
            )
        self.compute_s += time.thread_time() - t
        try:
            with self._lock:
                self.spool.append(recs, stamp_ns=time.time_ns())
        except SpoolError as exc:
            # the disk refused (full, I/O error): these reports are lost, the agent
            # carries on and says so (status last_error, lost_spool_errors)
            self.lost_to_spool_errors += len(recs)
            self.errors_nonfatal.append(str(exc))
            log.error("%d reports lost: %s", len(recs), exc, extra={
                "device": self.cfg.device, "epoch": f"{self.epoch:016x}",
                "seq": recs[0][1] if recs else None,
            })
        self.builder.seq += n
        self.builder.intervals += 1
        self.intervals += 1
        self.mark.write(self.epoch, self.builder.seq, base + n, SPOOLED)
        self._wake.set()

    def _emit(self, ev: Event) -> None:
        self._inbox.append(ev)
        self._wake.set()

    # -- status ------------------------------------------------------------------------------

    def status(self, state: str = "online", **extra: Any) -> dict[str, Any]:
        now = time.monotonic()
        sp = self.spool.stats
        pub = self.publisher.stats
        oldest = self.spool.oldest_stamp_ns()
        return {
            "v": STATUS_VERSION,
            "device": self.cfg.device,
            "site": self.cfg.site,
            "state": state,
            "ts": time.time(),
            "epoch": f"{self.epoch:016x}",  # hex: JSON readers lose 64-bit integers
            "uptime_s": round(now - self.started, 1),
            "channels": len(self._idx),
            "dsp_load": round(self.compute_s / max(1e-9, now - self.started), 3),
            "reports": self.builder.seq,
            "reports_per_s": round(self.reports_per_s, 2),
            "acked_per_s": round(self.acked_per_s, 2),
            "published": pub.reports,
            "acked": pub.acked_reports,
            "failed_messages": pub.failed_messages,
            "last_error": pub.last_error
            or (self.errors[-1] if self.errors else None)
            or (self.link_log.last_error if self.link_state != "connected" else None)
            or (self.errors_nonfatal[-1] if self.errors_nonfatal else None),
            "lost_spool_errors": self.lost_to_spool_errors,
            "link": {
                "state": self.link_state,
                "since_s": round(now - self.link_since, 1),
                "connects": self.connects,
                "disconnects": self.disconnects,
                # why the link last failed (kept after a recovery) and how often it has
                "last_error": self.link_log.last_error,
                "last_error_age_s": None if self.link_log.last_error_at is None
                else round(now - self.link_log.last_error_at, 1),
                "failures": self.link_log.failures,
                "inflight": pub.inflight,
                "inflight_peak": pub.inflight_peak,
                "inflight_max": pub.inflight_capacity,
                # end-to-end confirmation: "on", "off" (config), "refused" (no read grant on
                # the acks topic: a PUBACK settles meanwhile)
                "confirmations": "off" if self.publisher.confirm_timeout_s is None
                else "on" if self.publisher.confirming else "refused",
            },
            "spool": {
                "reports": sp.records,
                "bytes": sp.bytes,
                "max_bytes": self.spool.max_bytes,
                "peak_bytes": sp.peak_bytes,
                "dropped": sp.dropped,
                "recovered": sp.recovered,
                # end-to-end confirmation: PUBACKed, not yet confirmed by the cloud
                "unconfirmed": sp.unconfirmed,
                "unconfirmed_oldest_age_s": None
                if (t_unc := self.spool.oldest_unconfirmed()) is None
                else round(now - t_unc, 1),
                "republished": sp.republished,
                # of which: passed over by the confirmations (the broker lost them), and
                # sent as probes while the cloud confirmed nothing (edge/republish.py)
                "republished_passed": self.spool.schedule.stats.passed,
                "republished_probed": self.spool.schedule.stats.probed,
                "probe_rounds": self.spool.schedule.stats.rounds,
                "confirmed": sp.confirmed,
                "oldest_age_s": None
                if oldest is None
                else round((time.time_ns() - oldest) / 1e9, 1),
            },
            "ring": asdict(self.ring.stats),
            "framer": {  # framing is the ring's (edge.ring): kept here for readers
                "restarts": self.ring.stats.restarts,
                "discarded": self.ring.stats.discarded,
            },
            "lost_at_start": self.lost_at_start,
            **extra,
        }

    def _status_json(self, state: str, **extra: Any) -> bytes:
        if state == "offline" and not hasattr(self, "builder"):
            return json.dumps(
                {
                    "v": STATUS_VERSION,
                    "device": self.cfg.device,
                    "site": self.cfg.site,
                    "state": state,
                    **extra,
                }
            ).encode()
        return json.dumps(self.status(state, **extra), separators=(",", ":")).encode()

    def metrics_text(self) -> str:
        """The status as Prometheus text (what ``/metrics`` serves; see edge/metrics.py)."""
        with self._lock:
            status = self.status()
        return render(status, dsp_seconds=self.compute_s)

    def _publish_status(self) -> None:
        now = time.monotonic()
        t0, app0, ack0 = self._rate_mark
        dt = now - t0
        if dt > 0.5:
            self.reports_per_s = (self.spool.stats.appended - app0) / dt
            self.acked_per_s = (self.publisher.stats.acked_reports - ack0) / dt
            self._rate_mark = (now, self.spool.stats.appended, self.publisher.stats.acked_reports)
        try:
            with self._lock:
                payload = self._status_json("online")
            self.transport.publish(self.status_topic, payload, retain=True)
        except TransportError:
            pass

    # -- the drain loop ------------------------------------------------------------------------

    def _handle_events(self, now: float) -> None:
        while self._inbox:
            ev = self._inbox.popleft()
            if isinstance(ev, Acked):
                with self._lock:
                    self.publisher.on_ack(ev.token, ev.ok, ev.reason, now)
            elif isinstance(ev, Message):
                with self._lock:
                    self.publisher.on_confirm(ev.payload, now)
            elif isinstance(ev, Subscribed):
                with self._lock:
                    self.publisher.on_subscribed(ev.ok, ev.reason)
            elif isinstance(ev, Connected):
                self.connects += 1
                self.link_state, self.link_since = "connected", now
                if (line := self.link_log.connected(now)) is not None:
                    log.info("mqtt: connected to %s:%d %s", self.cfg.mqtt.host,
                             self.cfg.mqtt.port, line, extra={"device": self.cfg.device})
                self.publisher.on_connect(now, ev.max_packet, self.reports_topic)
                self._publish_status()
            elif isinstance(ev, Disconnected):
                if self.link_state == "connected":
                    self.disconnects += 1
                if self.link_state != "disconnected":
                    self.link_since = now
                self.link_state = "disconnected"
                if not self._halt.is_set() and (line := self.link_log.failure(
                        ev.reason, now)) is not None:
                    log.warning("mqtt: %s: %s",
                                "cannot connect" if ev.connect_failed else "disconnected",
                                line, extra={"device": self.cfg.device})
                with self._lock:
                    self.publisher.on_disconnect(now, ev.reason)

    def _pump(self, now: float) -> None:
        with self._lock:
            outs = self.publisher.poll(now)
        for out in outs:
            try:
                token = self.transport.publish(self.reports_topic, out.payload)
            except TransportError as exc:
                with self._lock:
                    if self.transport.connected:
                        self.publisher.send_failed(out, str(exc), now)
                    else:  # the link went down under us: not a failure of these reports
                        self.publisher.requeue(out)
                    for rest in outs[outs.index(out) + 1 :]:  # leased, never tried
                        self.publisher.requeue(rest)
                break
            with self._lock:
                self.publisher.sent(out, token)

    def run(self, stop: threading.Event | None = None) -> int:
        """Run until ``stop`` is set; returns an exit code (0, or 1 after a fatal error)."""
        stop = stop or threading.Event()
        if self.metrics is not None:
            self.metrics.start()
        self.transport.start(self._emit)
        threads = [
            threading.Thread(target=self._acquire, name="acquire", daemon=True),
            threading.Thread(target=self._compute, name="compute", daemon=True),
        ]
        for t in threads:
            t.start()
        next_status = time.monotonic() + self.cfg.status.interval_s
        next_sync = time.monotonic() + 1.0
        drain_deadline: float | None = None
        try:
            while not stop.is_set():
                now = time.monotonic()
                self._handle_events(now)
                self._pump(now)
                if now >= next_status:
                    self._publish_status()
                    next_status = now + self.cfg.status.interval_s
                if now >= next_sync:
                    with self._lock:
                        self.spool.sync()
                    next_sync = now + 1.0
                if self._compute_done.is_set():
                    if self.errors:
                        return 1
                    if self.exit_when_drained:
                        if drain_deadline is None and self.drain_timeout_s is not None:
                            drain_deadline = now + self.drain_timeout_s
                        with self._lock:
                            left = self.spool.stats.records
                        if left == 0:
                            log.info("source ended and every report was acknowledged")
                            return 0
                        if drain_deadline is not None and now > drain_deadline:
                            log.warning("drain timeout: %d reports stay spooled", left)
                            return 0
                with self._lock:
                    wait = self.publisher.next_wakeup(now)
                wait = max(0.0, min(wait, next_status - now, next_sync - now, 1.0))
                self._wake.wait(wait)
                self._wake.clear()
            return 0
        finally:
            self._shutdown(threads)

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        self._halt.set()
        self.ring.close()
        for t in threads:
            t.join(timeout=30.0)
        partial = self.ring.stats.depth
        log.info(
            "stopping: %d intervals computed, %d reports spooled this run; "
            "%d buffered samples per channel (less than an interval) not reported",
            self.intervals,
            self.spool.stats.appended,
            partial,
        )
        # a moment for outstanding PUBACKs, then the rest stays spooled for next time
        deadline = time.monotonic() + 2.0
        while self.publisher.inflight_messages and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            self._handle_events(time.monotonic())
        with self._lock:
            self.publisher.release_all()
            final = self._status_json("offline", reason="shutdown")
        try:
            self.transport.stop(final=(self.status_topic, final))
        except Exception:
            log.exception("transport stop failed")
        if self.metrics is not None:
            self.metrics.stop()
        with self._lock:
            self.spool.close()
        self.mark.close()
