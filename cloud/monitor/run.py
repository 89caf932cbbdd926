"""One monitoring run: a live window of one model version against its references.

Theory of operation
-------------------
:func:`evaluate` is pure (cells in, :class:`MonitorReport` out); :func:`monitor`
reads the cells through the store's read interface. References, each tested
when it has the data:

* ``training``: the bundle's training statistics (``statistics.json``, passed in
  by the ``pumpwatch`` command, which reads the bundle through the registry: cloud
  never imports models), fleet-wide, on the features the classifier consumes;
* ``live``: a reference window of this version's own live data (by default the
  first day it has histograms for: "chosen at deployment"), fleet-wide and per
  regime, on every monitored feature, plus the multivariate spectrum test and the
  prediction drift.

**Unexplained drift** is tested on the health partitions the model calls healthy
or cannot name (:data:`~.histograms.UNEXPLAINED`), fleet-wide and per regime: a
fault developing on one pump moves that pump's results to the ``fault``
partition, which explains it. Every feature test of the run enters one
Benjamini-Hochberg correction. The status is ``drift`` when any unexplained test
drifted, ``ok`` when tests ran and none did, ``insufficient_data`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from ..store.base import Store
from ..store.records import HistCell, MonitorRun
from .drift import (
    FeatureDrift,
    PredictionDrift,
    SpectrumDrift,
    Thresholds,
    Window,
    compare_categories,
    compare_spectrum,
    compare_windows,
    decide,
    reference_from_statistics,
    window,
)
from .histograms import BUCKET_NS, BY_NAME, HEALTH, UNEXPLAINED
from .retention import REFERENCE_WINDOW_NS

Status = Literal["ok", "drift", "insufficient_data"]
DAY_NS = 86_400 * 1_000_000_000
DEFAULT_THRESHOLDS = Thresholds()


class Plot(msgspec.Struct, kw_only=True):
    """A feature's live and reference histograms (shares per bin) for the report."""

    feature: str
    scope: str
    lo: float
    hi: float
    live: list[float]
    reference: list[float]


class MonitorReport(msgspec.Struct, kw_only=True):
    model_version: str
    since_ns: int
    until_ns: int
    reference_since_ns: int | None
    reference_until_ns: int | None
    training_reference: bool
    status: Status
    unexplained: list[str]  # drifted features, worst first
    features: list[FeatureDrift]
    spectrum: list[SpectrumDrift]
    prediction: PredictionDrift | None
    usage: dict[str, Any]
    thresholds: Thresholds
    plots: list[Plot] = []

    @property
    def drifted(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]


def _plot(live: Window, ref: Window, t: FeatureDrift) -> Plot:
    f = BY_NAME[t.feature]
    lc, rc = live.counts[t.feature], ref.counts[t.feature]
    return Plot(feature=t.feature, scope=t.scope, lo=f.lo, hi=f.hi,
                live=(lc / lc.sum()).round(6).tolist(), reference=(rc / rc.sum()).round(6).tolist())


def _usage(cells: Sequence[HistCell]) -> dict[str, Any]:
    by: dict[str, dict[str, float]] = {"health": {}, "regime": {}, "target": {}}
    buckets: set[int] = set()
    for _v, t, r, b_ns, h, feature, _b, value in cells:
        if feature != "n":
            continue
        buckets.add(b_ns)
        for k, key in (("health", h), ("regime", r), ("target", t)):
            by[k][key] = by[k].get(key, 0.0) + value
    return {"reports": int(sum(by["health"].values())), "buckets": len(buckets),
            **{k: {x: int(n) for x, n in sorted(v.items())} for k, v in by.items()}}


def evaluate(
    model_version: str,
    live_cells: Sequence[HistCell],
    *,
    since_ns: int,
    until_ns: int,
    reference_cells: Sequence[HistCell] = (),
    reference_since_ns: int | None = None,
    reference_until_ns: int | None = None,
    statistics: Mapping[str, Any] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    plots: int = 6,
) -> MonitorReport:
    """The run's tests (see the module docstring); pure."""
    th = thresholds
    tests: list[FeatureDrift] = []
    pairs: dict[str, tuple[Window, Window]] = {}
    spectrum: list[SpectrumDrift] = []
    live = window(live_cells, model_version=model_version, health=UNEXPLAINED)
    if statistics is not None:
        ref = reference_from_statistics(statistics)
        got = compare_windows(live, ref, th, "training:fleet", features=sorted(ref.counts))
        tests += got
        pairs["training:fleet"] = (live, ref)
    if reference_cells:
        ref = window(reference_cells, model_version=model_version, health=UNEXPLAINED)
        tests += compare_windows(live, ref, th, "live:fleet")
        pairs["live:fleet"] = (live, ref)
        if (s := compare_spectrum(live, ref, th, "live:fleet")) is not None:
            spectrum.append(s)
        regimes = sorted({c[2] for c in live_cells} & {c[2] for c in reference_cells})
        for rg in regimes:
            lw = window(live_cells, model_version=model_version, regime=rg, health=UNEXPLAINED)
            rw = window(reference_cells, model_version=model_version, regime=rg,
                        health=UNEXPLAINED)
            scope = f"live:regime:{rg}"
            tests += compare_windows(lw, rw, th, scope)
            pairs[scope] = (lw, rw)
            if (s := compare_spectrum(lw, rw, th, scope)) is not None:
                spectrum.append(s)
    tests = decide(tests, th)
    prediction = None
    if reference_cells:
        prediction = compare_categories(
            window(live_cells, model_version=model_version, health=HEALTH),
            window(reference_cells, model_version=model_version, health=HEALTH), th)
    elif statistics is not None:
        prediction = compare_categories(
            window(live_cells, model_version=model_version, health=HEALTH),
            reference_from_statistics(statistics), th)
    drifted = [t for t in tests if t.drifted]
    names: list[str] = []
    for t in drifted:
        if t.feature not in names:
            names.append(t.feature)
    spectral = [s for s in spectrum if s.drifted]
    if spectral and "spectrum" not in names:
        names.append("spectrum")
    status: Status = ("drift" if names else "ok" if tests or spectrum
                      else "insufficient_data")
    worst = (drifted or tests)[:plots]
    return MonitorReport(
        model_version=model_version, since_ns=since_ns, until_ns=until_ns,
        reference_since_ns=reference_since_ns, reference_until_ns=reference_until_ns,
        training_reference=statistics is not None, status=status, unexplained=names,
        features=tests, spectrum=spectrum, prediction=prediction,
        usage=_usage([c for c in live_cells if c[0] == model_version]), thresholds=th,
        plots=[_plot(*pairs[t.scope], t) for t in worst],
    )


async def model_versions(store: Store, *, since_ns: int, until_ns: int) -> list[str]:
    """Model versions with histograms in the range."""
    return sorted({c[0] for c in await store.histograms(since_ns=since_ns, until_ns=until_ns)
                   if c[5] == "n"})


async def monitor(
    store: Store,
    model_version: str,
    *,
    since_ns: int,
    until_ns: int,
    reference: tuple[int, int] | None = None,
    statistics: Mapping[str, Any] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> MonitorReport:
    """Read the live window (and the reference: ``reference`` = (since, until), else the
    version's first day of histograms, if that ends before ``since_ns``) and evaluate."""
    live = await store.histograms(since_ns=since_ns, until_ns=until_ns,
                                  model_version=model_version)
    if reference is None:
        first = await store.histogram_start(model_version)
        if first is not None and first + REFERENCE_WINDOW_NS <= since_ns:
            reference = (first, first + REFERENCE_WINDOW_NS)  # kept by retention
    ref: list[HistCell] = []
    if reference is not None:
        ref = await store.histograms(since_ns=reference[0], until_ns=reference[1],
                                     model_version=model_version)
    return evaluate(model_version, live, since_ns=since_ns, until_ns=until_ns,
                    reference_cells=ref,
                    reference_since_ns=reference[0] if reference else None,
                    reference_until_ns=reference[1] if reference else None,
                    statistics=statistics, thresholds=thresholds)


def bucket_floor(t_ns: int) -> int:
    return t_ns - t_ns % BUCKET_NS


def summary(report: MonitorReport, *, checked_ns: int, report_path: str = "") -> MonitorRun:
    """What the store keeps of a run for the dashboard and ``/metrics``: per feature its
    worst scope (largest JS distance), the prediction shares and the usage."""
    worst: dict[str, FeatureDrift] = {}
    for t in report.features:
        if t.feature not in worst or (t.drifted, t.js) > (worst[t.feature].drifted,
                                                          worst[t.feature].js):
            worst[t.feature] = t
    body = {
        "status": report.status, "unexplained": report.unexplained,
        "since_ns": report.since_ns, "until_ns": report.until_ns, "report": report_path,
        "features": [{"feature": t.feature, "scope": t.scope, "js": round(t.js, 4),
                      "psi": round(t.psi, 4), "wasserstein": round(t.wasserstein, 4),
                      "drifted": t.drifted} for t in sorted(
                          worst.values(), key=lambda t: (not t.drifted, -t.js))],
        "spectrum": [msgspec.to_builtins(s) for s in report.spectrum],
        "prediction": (None if report.prediction is None
                       else msgspec.to_builtins(report.prediction)),
        "usage": report.usage,
    }
    return MonitorRun(model_version=report.model_version, checked_ns=checked_ns,
                      status=report.status, summary=msgspec.json.encode(body).decode())
