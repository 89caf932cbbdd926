"""The dashboard's models API and series: each model version's latest monitoring run, its
usage and its label-based quality.

``GET /api/monitoring`` answers every model version the store has a run or a manifest
for: its drift status, when it was checked, the unexplained features, the worst
features, the prediction shares, the histograms' report counts of the run's window and
the report's path (``pumpwatch monitor run`` writes them; see docs/monitoring.md); its
``usage`` over the last 24 h (calls, reports, errors, dead letters, latency quantiles
per version, bundle and pump: :mod:`cloud.monitor.usage`, merged across every
consumer of the store); and its label-based ``quality`` (closed asset
alarms: :mod:`cloud.monitor.quality`). ``/metrics`` gains the drift and usage series
(``pumpwatch_feature_drift{feature,model_version}``,
``pumpwatch_model_invocations{model_version,target}``, ...), read from a cache that a
background task refreshes from the store every ``refresh_s`` (a scrape never waits on
the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cloud.monitor.quality import store_quality
from cloud.monitor.usage import QUANTILES, usage_json
from cloud.store import MonitorRun, StoreError

from ._store import StoreHandle

log = logging.getLogger(__name__)
STATUS_VALUE = {"ok": 0.0, "drift": 1.0, "insufficient_data": -1.0}
def models_json(runs: list[MonitorRun], manifests: list[str]) -> dict[str, Any]:
    by: dict[str, dict[str, Any]] = {}
    for r in runs:
        by[r.model_version] = {"model_version": r.model_version, "status": r.status,
                               "checked_ns": r.checked_ns, **json.loads(r.summary)}
    for v in manifests:
        by.setdefault(v, {"model_version": v, "status": "never_run", "checked_ns": None})
    return {"models": [by[v] for v in sorted(by)]}


class _Cache:
    def __init__(self) -> None:
        self.runs: list[MonitorRun] = []
        self.usage: dict[str, dict[str, Any]] = {}


class _DriftCollector(Collector):
    def __init__(self, cache: _Cache) -> None:
        self._cache = cache

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        runs = self._cache.runs
        drift = GaugeMetricFamily(
            "pumpwatch_feature_drift", "Jensen-Shannon distance of a feature from its baseline "
            "in the latest monitoring run (worst scope; CloudWatch feature_baseline_drift_*)",
            labels=["feature", "model_version"])
        violation = GaugeMetricFamily(
            "pumpwatch_feature_drift_violation", "1 when the feature drifted (unexplained) in "
            "the latest monitoring run", labels=["feature", "model_version"])
        status = GaugeMetricFamily(
            "pumpwatch_model_drift_status", "Latest monitoring run: 1 drift, 0 ok, -1 "
            "insufficient data", labels=["model_version"])
        checked = GaugeMetricFamily(
            "pumpwatch_model_drift_checked_timestamp_seconds", "When the latest monitoring "
            "run of the version was computed", labels=["model_version"])
        share = GaugeMetricFamily(
            "pumpwatch_prediction_share", "Share of the run window's results per class and "
            "per decided_by rule", labels=["name", "model_version"])
        reports = GaugeMetricFamily(
            "pumpwatch_model_reports", "Reports in the latest run's window, by health "
            "partition", labels=["health", "model_version"])
        for r in runs:
            body = json.loads(r.summary)
            v = r.model_version
            status.add_metric([v], STATUS_VALUE.get(r.status, -1.0))
            checked.add_metric([v], r.checked_ns / 1e9)
            for f in body.get("features", []):
                drift.add_metric([f["feature"], v], float(f["js"]))
                violation.add_metric([f["feature"], v], float(bool(f["drifted"])))
            for name, x in ((body.get("prediction") or {}).get("live_shares") or {}).items():
                share.add_metric([name, v], float(x))
            for h, n in (body.get("usage") or {}).get("health", {}).items():
                reports.add_metric([h, v], float(n))
        yield from (drift, violation, status, checked, share, reports)
        yield from self._usage()

    def _usage(self) -> Iterator[Metric]:
        lv = ["model_version", "target"]
        calls = GaugeMetricFamily(
            "pumpwatch_model_invocations", "Endpoint calls answered with results in the last "
            "24 h (hour buckets), every consumer of the store", labels=lv)
        scored = GaugeMetricFamily(
            "pumpwatch_model_scored_reports", "Reports scored in the last 24 h", labels=lv)
        errors = GaugeMetricFamily(
            "pumpwatch_model_invocation_errors", "Endpoint calls that failed in the last 24 h, "
            "by outcome (unavailable, rejected)", labels=[*lv, "outcome"])
        dead = GaugeMetricFamily(
            "pumpwatch_model_dead_letters", "Reports the model refused (dead-lettered) in the "
            "last 24 h; model_version=\"pre-model\", target=\"\": those dead-lettered before "
            "any model saw them (validation)", labels=lv)
        latency = GaugeMetricFamily(
            "pumpwatch_model_latency_seconds", "Endpoint call latency quantile over the last "
            "24 h, read from the merged fixed-edge histogram", labels=[*lv, "quantile"])
        for v, u in self._cache.usage.items():
            for t, s in u.get("targets", {}).items():
                calls.add_metric([v, t], float(s["invocations"]))
                scored.add_metric([v, t], float(s["reports"]))
                dead.add_metric([v, t], float(s["dead_letters"]))
                for outcome, n in s["errors"].items():
                    errors.add_metric([v, t, outcome], float(n))
                for q in QUANTILES:
                    x = s["latency_ms"].get(f"p{round(100 * q)}")
                    if x is not None:
                        latency.add_metric([v, t, str(q)], x / 1e3)
        yield from (calls, scored, errors, dead, latency)


def install(app: web.Application, registry: CollectorRegistry,
            store: Callable[[], StoreHandle], *, refresh_s: float = 15.0) -> None:
    """Add ``GET /api/monitoring`` and the drift series to a dashboard app."""
    cache = _Cache()
    registry.register(_DriftCollector(cache))

    async def refresh() -> None:
        while True:
            try:
                s = await store().get()
                cache.runs = await s.monitor_runs()
                cache.usage = (await usage_json(s))["versions"]
            except StoreError as exc:
                log.debug("models: store not readable yet: %s", exc)
            await asyncio.sleep(refresh_s)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(refresh(), name="dashboard-models-refresh")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def get_models(request: web.Request) -> web.Response:
        for name in request.query:
            if name != "access_token":
                raise web.HTTPBadRequest(text=json.dumps({
                    "error": f"unknown query parameter {name!r}", "parameter": name}),
                    content_type="application/json")
        s = await store().get()
        runs = await s.monitor_runs()
        cache.runs = runs
        versions = sorted({m.model_version for m in await s.manifests()})
        body = models_json(runs, versions)
        usage = await usage_json(s)
        cache.usage = usage["versions"]
        body["usage"] = usage
        body["quality"] = await store_quality(s)  # label-based, from closed asset alarms
        return web.json_response(body)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/monitoring", get_models)


__all__ = ["install", "models_json"]
