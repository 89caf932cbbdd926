"""The agent's status as Prometheus metrics, on an optional local port (``[status]
metrics_port``; off by default). See docs/metrics.md for every series.

Hand-written text exposition (format 0.0.4), because the edge takes no new
dependency: :func:`render` turns the agent's status dict (the same one it
publishes retained on ``.../status``) into text, and :class:`MetricsServer`
serves it on ``GET /metrics`` from one thread that answers one request at a
time (a gateway's resources stay bounded whoever connects), bound to loopback
unless ``metrics_host`` says otherwise.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
P = "pumpwatch_edge_"
LINK_STATES = ("connecting", "connected", "disconnected")

Labels = Mapping[str, str]
Sample = tuple[Labels, float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


class Exposition:
    """Accumulates metric families and renders them as Prometheus text."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, name: str, kind: str, doc: str, samples: Iterable[Sample]) -> None:
        """One family; a counter's ``name`` ends in ``_total`` (the convention)."""
        self._lines.append(f"# HELP {name} {doc}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{lab}}} {_number(value)}" if lab
                               else f"{name} {_number(value)}")

    def gauge(self, name: str, doc: str, value: float) -> None:
        self.add(P + name, "gauge", doc, [({}, value)])

    def counter(self, name: str, doc: str, value: float) -> None:
        self.add(P + name + "_total", "counter", doc, [({}, value)])

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render(status: Mapping[str, Any], *, dsp_seconds: float) -> str:
    """Prometheus text for one agent status (:meth:`edge.agent.Agent.status`)."""
    e = Exposition()
    e.add(P + "info", "gauge", "The agent's identity: device, site and the run's epoch (hex)",
          [({"device": status["device"], "site": status["site"], "epoch": status["epoch"]}, 1)])
    e.gauge("uptime_seconds", "Seconds since the agent started", status["uptime_s"])
    e.gauge("channels", "Sensor channels analyzed", status["channels"])
    reports = status["reports"]
    e.counter("reports", "Reports computed this run", reports)
    e.gauge("reports_per_second", "Reports computed per second over the last status period",
            status["reports_per_s"])
    e.counter("published_reports", "Reports handed to MQTT (resends counted again)",
              status["published"])
    e.counter("acked_reports", "Reports the broker acknowledged (PUBACK)", status["acked"])
    e.counter("failed_messages", "Report messages refused (PUBACK failure or publish error)",
              status["failed_messages"])
    e.add(P + "lost_reports_total", "counter",
          "Reports lost: the disk refused them this run, or a crash before this start",
          [({"reason": "spool_error"}, status["lost_spool_errors"]),
           ({"reason": "crash"}, status["lost_at_start"])])
    e.counter("dsp_seconds", "CPU seconds spent in DSP this run", dsp_seconds)
    e.gauge("dsp_seconds_per_report", "CPU seconds of DSP per report computed this run",
            dsp_seconds / reports if reports else 0.0)
    e.gauge("dsp_load", "DSP CPU seconds per wall-clock second", status["dsp_load"])
    link = status["link"]
    e.add(P + "link_state", "gauge", "MQTT link: 1 for the current state",
          [({"state": s}, 1.0 if link["state"] == s else 0.0) for s in LINK_STATES])
    e.gauge("link_state_seconds", "Seconds in the current link state", link["since_s"])
    e.counter("mqtt_connects", "Connections to the broker", link["connects"])
    e.counter("mqtt_disconnects", "Connections lost or closed", link["disconnects"])
    e.counter("mqtt_link_failures", "Failed connection attempts and lost connections "
              "(the reason: status link.last_error and the WARNING log)", link["failures"])
    e.add(P + "mqtt_last_error_info", "gauge", "The latest link failure's reason (1 while the "
          "link is not connected, 0 after it recovered)",
          [] if link["last_error"] is None
          else [({"reason": link["last_error"][:200]},
                 0.0 if link["state"] == "connected" else 1.0)])
    e.gauge("inflight_messages", "Report messages awaiting PUBACK", link["inflight"])
    e.gauge("inflight_capacity_messages", "Report messages allowed in flight",
            link["inflight_max"])
    sp = status["spool"]
    e.gauge("spool_reports", "Unacknowledged reports in the disk spool", sp["reports"])
    e.gauge("spool_bytes", "Bytes of the disk spool", sp["bytes"])
    e.gauge("spool_max_bytes", "The spool's size limit", sp["max_bytes"])
    e.counter("spool_dropped_reports", "Unacknowledged reports dropped to stay under the limit",
              sp["dropped"])
    e.gauge("spool_oldest_age_seconds", "Age of the oldest spooled report (0: empty)",
            sp["oldest_age_s"] or 0.0)
    e.gauge("spool_unconfirmed_reports", "Reports acknowledged by the broker, not yet "
            "confirmed by the cloud", sp["unconfirmed"])
    e.gauge("spool_unconfirmed_oldest_age_seconds", "Age of the oldest unconfirmed report "
            "(0: none)", sp["unconfirmed_oldest_age_s"] or 0.0)
    e.counter("spool_republished_reports", "Reports published again (no confirmation in "
              "time)", sp["republished"])
    e.counter("spool_republished_passed_reports", "Reports published again because later "
              "ones were confirmed and they were not (lost by the broker)",
              sp["republished_passed"])
    e.counter("spool_republish_probe_rounds", "Probes sent while the cloud confirmed nothing "
              "for the confirm timeout", sp["probe_rounds"])
    ring = status["ring"]
    e.gauge("ring_samples", "Unread samples per channel in the acquisition ring", ring["depth"])
    e.gauge("ring_capacity_samples", "Acquisition ring capacity per channel", ring["capacity"])
    e.counter("ring_dropped_samples", "Samples per channel lost because the ring was full",
              ring["dropped"])
    e.counter("framer_restarts", "Report framing restarts (gaps, rate changes)",
              status["framer"]["restarts"])
    return e.text()


class MetricsServer:
    """``GET /metrics`` from ``text()`` on one thread; ``port`` is the bound port."""

    def __init__(self, host: str, port: int, text: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 5.0  # a client that stalls cannot hold the one serving thread

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                try:
                    body = text().encode()
                except Exception:
                    log.exception("metrics: rendering failed")
                    self.send_error(500, "rendering failed")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        try:
            self._server = HTTPServer((host, port), Handler)
        except OSError as exc:
            raise OSError(exc.errno, f"metrics listener cannot bind {host}:{port}: {exc}") from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.5}, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever to return
            self._thread.join(5.0)
        self._server.server_close()


__all__ = ["CONTENT_TYPE", "Exposition", "MetricsServer", "render"]
