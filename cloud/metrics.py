"""Prometheus text exposition for the cloud services (consumer, dashboard).

Each service instance owns one :class:`prometheus_client.CollectorRegistry`
(never the process-global default), so two services in one process (tests,
``pumpwatch demo``) never collide. Collectors read a service's existing
statistics at scrape time; only what has no statistics object of its own
(latency histograms) is recorded as it happens. ``docs/metrics.md`` lists
every series.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

#: Buckets for request and commit durations, in seconds (1 ms .. 30 s).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)


def new_registry() -> CollectorRegistry:
    """A registry of one service instance, with the standard ``process_*`` series."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """An unlabelled counter family (``name`` without ``_total``; the client adds it)."""
    return CounterMetricFamily(name, doc, value=value)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def metrics_handler(
    registry: CollectorRegistry,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler answering ``GET /metrics`` from ``registry``."""

    async def handle(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    return handle


class MetricsListener:
    """A small HTTP listener serving only ``/metrics`` (the consumer has no other server).

    ``async with MetricsListener(registry, host, port) as m``: ``m.port`` is the bound
    port (``port=0`` picks a free one)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> MetricsListener:
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler(self.registry))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                exc.errno, f"metrics listener cannot bind {self.host}:{self.port}: {exc}"
            ) from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._runner = runner
        return self

    async def __aexit__(self, *exc: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


__all__ = ["DURATION_BUCKETS", "MetricsListener", "counter", "gauge", "metrics_handler",
           "new_registry"]
