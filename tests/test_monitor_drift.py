"""The drift tests over histogram cells (pure): false alarms on in-distribution windows,
detection of a constructed shift naming the feature, explained shifts, the multivariate
spectrum test, the training-statistics reference, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cloud.monitor.drift import Thresholds, benjamini_hochberg
from cloud.monitor.histograms import FEATURES, SPECTRUM_BANDS, aggregate, bin_index
from cloud.monitor.report import write_reports
from cloud.monitor.run import evaluate
from cloud.store import HistCell

NB = len(SPECTRUM_BANDS)
MIX = np.random.default_rng(99).normal(size=(NB, 4))  # 4 latent spectral factors


def values(rng: np.random.Generator, n: int, *, shift: dict[str, float] | None = None,
           new_band: bool = False) -> np.ndarray:
    """Synthetic monitored values: each feature around its range's middle (sd 1/12 of it),
    the spectrum a 4-factor mixture."""
    out = np.empty((n, len(FEATURES)))
    for j, f in enumerate(FEATURES):
        mid, sd = (f.lo + f.hi) / 2, (f.hi - f.lo) / 12
        out[:, j] = rng.normal(mid + (shift or {}).get(f.name, 0.0) * sd, sd, n)
    spec = -60.0 + rng.normal(size=(n, 4)) @ MIX.T * 3 + rng.normal(0, 0.3, (n, NB))
    if new_band:
        spec[:, 5] += rng.normal(0, 6.0, n)  # variance where the reference had none
    start = next(j for j, f in enumerate(FEATURES) if f.name.startswith("spec["))
    out[:, start:start + NB] = spec
    return out


def cells(v: np.ndarray, *, health: str = "healthy", regime: str = "1500-2100rpm",
          bucket: int = 0, cond: str = "healthy") -> list[HistCell]:
    start = next(j for j, f in enumerate(FEATURES) if f.name.startswith("spec["))
    return aggregate(("m1", "ep", regime, bucket, health), bin_index(v),
                     v[:, start:start + NB], [(f"class:{cond}", "decided_by:classifier")] * len(v))


def test_in_distribution_windows_rarely_drift_and_a_shift_is_named() -> None:
    rng = np.random.default_rng(1)
    ref = cells(values(rng, 6000))
    alarms = 0
    for _ in range(40):
        rep = evaluate("m1", cells(values(rng, 600)), since_ns=0, until_ns=1,
                       reference_cells=ref)
        assert rep.status in ("ok", "drift")
        alarms += rep.status == "drift"
    assert alarms <= 1, alarms
    shifted = evaluate("m1", cells(values(rng, 600, shift={"log:v1x": 1.5})), since_ns=0,
                       until_ns=1, reference_cells=ref)
    assert shifted.status == "drift" and shifted.unexplained == ["log:v1x"]
    assert shifted.plots[0].feature == "log:v1x"


def test_a_shift_the_model_explains_is_not_unexplained_drift() -> None:
    rng = np.random.default_rng(2)
    ref = cells(values(rng, 4000))
    live = cells(values(rng, 600)) + cells(values(rng, 300, shift={"log:env_bpfo": 4.0}),
                                           health="fault", cond="outer_race")
    rep = evaluate("m1", live, since_ns=0, until_ns=1, reference_cells=ref)
    assert rep.status == "ok", rep.unexplained
    assert rep.prediction is not None and rep.prediction.drifted  # the class mix moved
    assert rep.usage["health"] == {"fault": 300, "healthy": 600}


def test_the_multivariate_test_sees_variance_in_a_new_direction() -> None:
    rng = np.random.default_rng(3)
    ref = cells(values(rng, 4000))
    ok = evaluate("m1", cells(values(rng, 600)), since_ns=0, until_ns=1, reference_cells=ref)
    assert ok.spectrum and ok.spectrum[0].reconstruction_ratio < 2.0
    new = evaluate("m1", cells(values(rng, 600, new_band=True)), since_ns=0, until_ns=1,
                   reference_cells=ref)
    assert new.spectrum[0].drifted and new.spectrum[0].reconstruction_ratio > 3.0
    assert "spectrum" in new.unexplained


def statistics_json(v: np.ndarray, names: list[str]) -> dict[str, object]:
    qs = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    feats: list[dict[str, object]] = []
    for name in names:
        col = v[:, [f.name for f in FEATURES].index(name)]
        feats.append({"name": name, "inferred_type": "Fractional", "numerical_statistics": {
            "common": {"num_present": len(col), "num_missing": 0}, "min": col.min(),
            "max": col.max(), "quantiles": [{"quantile": q, "value": float(np.quantile(col, q))}
                                            for q in qs]}})
    feats.append({"name": "condition", "inferred_type": "String", "string_statistics": {
        "distribution": {"categorical": {"buckets": [{"value": "healthy",
                                                       "count": len(v)}]}}}})
    return {"version": 0.0, "dataset": {"item_count": len(v)}, "features": feats}


def test_training_statistics_reference_and_the_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    stats = statistics_json(values(rng, 5000), ["log:velocity_rms", "log:v1x", "log:kurtosis"])
    ok = evaluate("m1", cells(values(rng, 800)), since_ns=0, until_ns=1, statistics=stats)
    assert ok.status == "ok" and {f.scope for f in ok.features} == {"training:fleet"}
    bad = evaluate("m1", cells(values(rng, 800, shift={"log:kurtosis": -3.0})), since_ns=0,
                   until_ns=1, statistics=stats, thresholds=Thresholds(js=0.2))
    assert bad.unexplained == ["log:kurtosis"]
    paths = write_reports(bad, tmp_path)
    violations = json.loads(paths["constraint_violations"].read_text())["violations"]
    assert [v["feature_name"] for v in violations] == ["log:kurtosis"]
    assert violations[0]["constraint_check_type"] == "baseline_drift_check"
    html = paths["html"].read_text()
    assert "log:kurtosis" in html and "<svg" in html and "http" not in html.split("<body")[1]
    assert json.loads(paths["json"].read_text())["status"] == "drift"


def test_benjamini_hochberg() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert np.allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.5])
