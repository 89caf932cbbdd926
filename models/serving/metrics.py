"""The model server's Prometheus series (``GET /metrics``; see docs/metrics.md).

A registry per :class:`~.server.ModelServer` (not the process-global one). Requests,
latency and errors are recorded by :meth:`ServerMetrics.middleware` around every
route; reports scored are counted per model version as responses go out; what is
loaded (default, cached target and multi-model bundles, loads, evictions, bytes)
is read from the :class:`~.server.BundleStore` at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .server import BundleStore

P = "pumpwatch_server_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServerMetrics:
    def __init__(self, store: BundleStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            P + "requests", "HTTP requests, by route and status code", ["route", "code"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            P + "request_seconds", "Time to answer a request, by route", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.errors = Counter(
            P + "errors", "Error responses, by SageMaker error type (x-amzn-ErrorType)",
            ["type"], registry=self.registry,
        )
        self.reports = Counter(
            P + "reports", "Reports scored, by the model version that scored them",
            ["model_version"], registry=self.registry,
        )
        self.rollbacks = Counter(
            P + "rollbacks", "Candidates this server rolled back by itself (a limit crossed), "
            "by the candidate's model version", ["model_version"], registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))

    def scored(self, model_version: str, reports: int) -> None:
        self.reports.labels(model_version).inc(reports)

    def rolled_back(self, model_version: str) -> None:
        self.rollbacks.labels(model_version).inc()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        t0 = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            etype = response.headers.get("x-amzn-ErrorType")
            if etype:
                self.errors.labels(etype).inc()
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            self.requests.labels(name, str(code)).inc()
            self.seconds.labels(name).observe(time.perf_counter() - t0)

    async def handle(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


class _StoreCollector(Collector):
    def __init__(self, store: BundleStore) -> None:
        self._s = store

    def collect(self) -> Iterator[Metric]:
        s = self._s
        d = s.describe()
        targets = d["targets"]
        assert isinstance(targets, dict)
        loaded = GaugeMetricFamily(
            P + "bundle_loaded", "1 per bundle in memory, by role, bundle name and model version",
            labels=["role", "bundle", "model_version"],
        )
        if s.default is not None:
            loaded.add_metric(["default", "", s.default.model_version], 1.0)
        if s.candidate is not None and s.rollout is not None:
            loaded.add_metric([s.rollout.mode, "", s.candidate.model_version], 1.0)
        for target, version in targets.items():
            loaded.add_metric(["target", str(target), str(version)], 1.0)
        for name, (_url, bundle) in list(s.mme.items()):
            loaded.add_metric(["multi_model", name, bundle.model_version], 1.0)
        yield loaded
        yield GaugeMetricFamily(P + "bundles_loading", "Target bundles loading now",
                                value=len(d["loading"]))  # type: ignore[arg-type]
        yield CounterMetricFamily(P + "bundle_loads", "Target bundles loaded", value=s.loads)
        yield CounterMetricFamily(P + "bundle_evictions",
                                  "Target bundles evicted from the cache", value=s.evictions)
        yield GaugeMetricFamily(P + "cache_bytes", "Bytes of cached target bundles",
                                value=s.cached_bytes)
        yield GaugeMetricFamily(P + "cache_budget_bytes", "Memory budget of that cache",
                                value=s.cfg.cache_bytes)


__all__ = ["ServerMetrics"]
