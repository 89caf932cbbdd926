"""The consumer's Prometheus series (see docs/metrics.md).

:class:`ConsumerCollector` reads the consumer's existing statistics
(:class:`~.service.Counters`, the handoff queue, the batcher, the breaker, the
MQTT source, the alarm tracker) when scraped: no second set of books.
:class:`ConsumerMetrics` adds what has no statistics object: histograms of
endpoint calls, store commits and end-to-end latency, observed as they happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.metrics import DURATION_BUCKETS, counter, gauge, new_registry

if TYPE_CHECKING:
    from .service import Consumer

P = "pumpwatch_consumer_"
BREAKER_STATES = ("closed", "open", "half_open")
# publish -> stored: seconds to minutes when a backlog drains
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                   900.0, 3600.0)


class ConsumerMetrics:
    """One consumer's registry: the scrape-time collector plus three histograms."""

    def __init__(self, consumer: Consumer) -> None:
        self.registry = new_registry()
        self.endpoint_seconds = Histogram(
            P + "endpoint_request_seconds",
            "Duration of one InvokeEndpoint call, by target and outcome",
            ["target", "outcome"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.commit_seconds = Histogram(
            P + "store_commit_seconds", "Duration of one store commit (results, archive, "
            "dead letters and alarms in one transaction)",
            buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.result_latency_seconds = Histogram(
            P + "result_latency_seconds",
            "From the edge's publish (MQTT user property) to the result's commit",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(ConsumerCollector(consumer))


class ConsumerCollector(Collector):
    def __init__(self, consumer: Consumer) -> None:
        self._c = consumer

    def collect(self) -> Iterator[Metric]:
        c = self._c
        n = c.counters
        yield counter(P + "messages", "MQTT messages received", n.messages)
        yield counter(P + "reports", "Parts of received messages: reports, and each dead letter "
                      "(an undecodable message is one)", n.reports)
        yield counter(P + "reports_accepted", "Reports accepted for scoring", n.accepted)
        skipped = CounterMetricFamily(
            P + "reports_skipped", "Reports not scored again, by reason", labels=["reason"]
        )
        skipped.add_metric(["duplicate_in_message"], n.duplicates_in_message)
        skipped.add_metric(["already_stored"], n.already_stored)
        skipped.add_metric(["in_flight"], n.joined_in_flight)
        yield skipped
        dead = CounterMetricFamily(
            P + "dead_letters", "Messages or reports dead-lettered, by kind", labels=["kind"]
        )
        for kind, count in sorted(n.dead_letters_by_kind.items()):
            dead.add_metric([kind], count)
        yield dead
        yield counter(P + "results_stored", "Result rows inserted", n.results_inserted)
        batches = CounterMetricFamily(
            P + "batches", "Batches sent to the endpoint, by what closed them", labels=["reason"]
        )
        for reason, count in sorted(c.batcher.stats.by_reason.items()):
            batches.add_metric([reason], count)
        yield batches
        yield counter(P + "endpoint_calls", "InvokeEndpoint calls started", n.invocations)
        yield counter(P + "endpoint_retries", "Endpoint calls retried (unavailable)",
                      n.endpoint_retries)
        yield counter(P + "bisections", "Rejected batches split to find the poison report",
                      n.bisections)
        yield counter(P + "store_commits", "Store transactions committed", n.commits)
        yield counter(P + "store_retries", "Store lookups or commits retried", n.store_retries)
        yield counter(P + "acks", "MQTT messages acknowledged", n.acks)
        yield counter(P + "alarm_writes", "Alarm rows written", n.alarm_writes)
        yield counter(P + "alarm_errors", "Alarm evaluations that failed (commit went ahead)",
                      n.alarm_errors)
        pub = CounterMetricFamily(
            P + "published", "Result topic messages published, by topic", labels=["topic"]
        )
        pub.add_metric(["condition"], n.condition_published)
        pub.add_metric(["alarms"], n.alarms_published)
        yield pub
        s = c.stats()  # the consumer's own view (also logged every stats_interval_s)
        yield from _gauges(s)
        yield from _breaker(s["breaker"])
        yield from _queue_and_link(s)
        yield from _delivery(n, s)


def _delivery(n: Any, s: dict[str, Any]) -> Iterator[Metric]:
    """End-to-end confirmations, gaps and the dead-letter budget (docs/consumer.md)."""
    yield counter(P + "confirmations_sent", "Confirmation messages published to devices",
                  n.confirmations_sent)
    yield counter(P + "confirmations_failed", "Confirmations not published (link down; the "
                  "edge publishes again)", n.confirmations_failed)
    yield gauge(P + "gap_ranges", "Missing sequence ranges older than the grace period, at "
                "the last gap check", s["gaps"]["ranges"])
    yield gauge(P + "gap_reports", "Reports in those ranges (lost unless the edge still "
                "publishes them again)", s["gaps"]["reports"])
    yield counter(P + "dead_letters_dropped", "Dead letters dropped over a device's budget",
                  n.dead_letters_dropped)
    yield counter(P + "result_publish_errors", "Result-topic publishes that failed (skipped)",
                  n.result_publish_errors)


def _gauges(s: dict[str, Any]) -> Iterator[Metric]:
    yield gauge(P + "unacked_messages", "Messages received and not yet acknowledged",
                s["unacked_messages"])
    yield gauge(P + "oldest_unacked_age_seconds", "Age of the oldest unacknowledged message",
                max(0.0, s["oldest_unacked_age_s"]))
    yield gauge(P + "in_flight_reports", "Reports between acceptance and commit",
                s["in_flight_reports"])
    ifb = s["in_flight_bytes"]
    yield gauge(P + "in_flight_bytes", "Raw bytes of the reports between acceptance and "
                "commit (parsing stops at consumer.max_in_flight_bytes)", ifb["held"])
    yield gauge(P + "in_flight_bytes_peak", "Highest in-flight report bytes since start",
                ifb["peak"])
    yield gauge(P + "in_flight_bytes_limit", "consumer.max_in_flight_bytes", ifb["limit"])
    yield counter(P + "in_flight_full_waits", "Times parsing waited for the in-flight byte "
                  "budget", ifb["waits"])
    yield gauge(P + "batcher_open_reports", "Reports waiting in an open batch",
                s["batcher_open_items"])
    q = s["commit_queue"]
    yield gauge(P + "commit_queue_jobs", "Jobs waiting for the writer", q["depth"])
    yield gauge(P + "commit_queue_capacity_jobs", "Capacity of the writer's queue", q["capacity"])
    yield gauge(P + "unacked_bytes", "Payload bytes received and not yet acknowledged "
                "(reading stops at consumer.max_unacked_bytes)", s["unacked_bytes"])
    yield gauge(P + "endpoint_calls_running", "Endpoint calls running now",
                s["invocations_running"])
    yield gauge(P + "alarm_channels", "Pump channels the alarm tracker follows",
                s["alarms"]["channels"])


def _breaker(b: dict[str, Any]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        P + "breaker_state", "Endpoint circuit breaker: 1 for the current state",
        labels=["state"],
    )
    for name in BREAKER_STATES:
        state.add_metric([name], 1.0 if b["state"] == name else 0.0)
    yield state
    yield gauge(P + "breaker_limit", "Endpoint calls allowed at once now", b["limit"])
    yield counter(P + "breaker_opened", "Times the breaker opened", b["opened"])
    yield counter(P + "breaker_probes", "Probe calls in half-open state", b["probes"])
    yield counter(P + "breaker_open_seconds", "Time spent open (closed-again intervals)",
                  b["open_s_total"])


def _queue_and_link(s: dict[str, Any]) -> Iterator[Metric]:
    h = s.get("handoff")
    if h is not None:
        yield gauge(P + "backlog_messages",
                    "Messages handed over by the MQTT thread, not yet parsed", h["depth"])
        yield gauge(P + "backlog_capacity_messages", "Capacity of that handoff queue",
                    h["capacity"])
        yield counter(P + "backlog_blocked_seconds",
                      "Time the MQTT thread waited for room (backpressure)", h["blocked_s"])
    m = s.get("mqtt")
    if m is not None:
        yield gauge(P + "mqtt_connected", "1 while connected to the broker",
                    1.0 if m["connected"] else 0.0)
        yield counter(P + "mqtt_connects", "Connections to the broker", m["connects"])
        yield counter(P + "mqtt_disconnects", "Disconnections from the broker",
                      m["disconnects"])


__all__ = ["ConsumerCollector", "ConsumerMetrics"]
