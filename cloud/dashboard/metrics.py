"""The dashboard's Prometheus series (``GET /metrics``; see docs/metrics.md).

HTTP requests and their latency are recorded by :meth:`DashboardMetrics.middleware`
(the live stream's requests are counted but not timed: a stream lasts as long as
its client); the stream hub's own :class:`~.stream.HubStats` and its subscriber
count are read at scrape time. ``/metrics`` is outside ``/api/`` and so outside
the bearer token, as Prometheus scrapes expect; bind the dashboard to a network
the monitoring can reach and nothing else can.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.metrics import DURATION_BUCKETS, counter, gauge, new_registry

from .publish import AlarmPublisher
from .stream import StreamHub

P = "pumpwatch_dashboard_"
STREAM_ROUTE = "/api/stream"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardMetrics:
    """One dashboard's registry; ``hub`` returns the running stream hub (or None),
    ``publisher`` the alarm-change publisher (None: not configured)."""

    def __init__(self, hub: Callable[[], StreamHub | None],
                 publisher: Callable[[], AlarmPublisher | None] = lambda: None) -> None:
        self.registry = new_registry()
        self.requests = Counter(
            P + "requests", "HTTP requests, by route and status code", ["route", "code"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            P + "request_seconds", "Time to answer a request, by route (not the live stream)",
            ["route"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.registry.register(_HubCollector(hub))
        self.registry.register(_PublisherCollector(publisher))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        t0 = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            self.requests.labels(route, str(code)).inc()
            if route != STREAM_ROUTE:
                self.seconds.labels(route).observe(time.perf_counter() - t0)


class _HubCollector(Collector):
    def __init__(self, hub: Callable[[], StreamHub | None]) -> None:
        self._hub = hub

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the hub exists only once the app runs: nothing to collect early

    def collect(self) -> Iterator[Metric]:
        hub = self._hub()
        if hub is None:
            return
        s = hub.stats
        yield gauge(P + "stream_subscribers", "Open live-stream (SSE) connections",
                    hub.subscribers)
        yield counter(P + "stream_polls", "Store polls by the stream hub", s.polls)
        yield counter(P + "stream_results_sent", "Result events fanned out (once per event)",
                      s.results_sent)
        yield counter(P + "stream_alarms_sent", "Alarm events fanned out", s.alarms_sent)
        yield counter(P + "stream_subscribers_dropped",
                      "Subscribers dropped for falling behind (they reconnect and resume)",
                      s.subscribers_dropped)
        yield counter(P + "stream_poll_errors", "Store polls that failed", s.errors)


class _PublisherCollector(Collector):
    def __init__(self, publisher: Callable[[], AlarmPublisher | None]) -> None:
        self._publisher = publisher

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        p = self._publisher()
        s = p.stats if p is not None else None
        yield counter(P + "alarm_changes_published", "Operators' alarm changes the broker "
                      "acknowledged (PUBACK) on the alarm topics (0 when no [mqtt] is "
                      "configured)", s.published if s else 0)
        yield counter(P + "alarm_changes_refused", "Alarm changes the broker refused (PUBACK "
                      "reason >= 0x80) or with a site/pump outside the name rule: not retried",
                      s.refused if s else 0)
        dropped = CounterMetricFamily(P + "alarm_changes_dropped", "Alarm changes dropped "
                                      "unpublished from the outbox, by reason (age: pending "
                                      "longer than its bound; over_bound: beyond its size)",
                                      labels=["reason"])
        for reason in ("age", "over_bound"):
            dropped.add_metric([reason], float(s.dropped.get(reason, 0) if s else 0))
        yield dropped
        yield gauge(P + "alarm_outbox_depth", "Alarm changes stored and not yet acknowledged "
                    "by the broker (the outbox, in the store)", s.depth if s else 0)
        yield gauge(P + "alarm_outbox_in_flight", "Alarm changes handed to the broker "
                    "connection, not yet acknowledged", s.in_flight if s else 0)
        yield counter(P + "alarm_outbox_errors", "Outbox rounds that failed (store "
                      "unreachable, ...): retried", p.errors if p is not None else 0)
        oldest = (time.time_ns() - s.oldest_ns) / 1e9 if s and s.oldest_ns else 0.0
        yield gauge(P + "alarm_outbox_oldest_seconds", "Age of the oldest pending alarm "
                    "change (0: none)", max(oldest, 0.0))


__all__ = ["DashboardMetrics"]
