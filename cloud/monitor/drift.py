"""Drift tests over monitoring histograms: pure array code, no I/O.

Theory of operation
-------------------
A :class:`Window` is the sum of histogram cells over some time buckets and a
selection of (regime, health partition): per numeric feature a count vector on
its fixed edges, categorical counts, and the reduced spectrum's moments. A
live window is compared with a reference window (live data chosen at
deployment) or with the bundle's training statistics turned into a window
(:func:`reference_from_statistics`).

Per numeric feature (:func:`compare_feature`): the fine bins are grouped so
that each group holds about ``1 / groups`` of the reference mass (equal-mass
grouping keeps the sampling noise of the distances small and even); on the
groups the **Jensen-Shannon distance** (base 2, in [0, 1]), the **PSI**
(population stability index, ``sum (l - r) ln(l / r)``, shares floored at
1e-4) and a chi-squared homogeneity p-value; on the fine bins the
**normalized Wasserstein** distance (W1 over bin centres divided by the
reference's standard deviation). A feature drifts when its p-value survives
the **Benjamini-Hochberg** correction across every test of the run at
``alpha`` *and* an effect size passes its threshold (JS >= ``js`` or
normalized W1 >= ``wasserstein``): with thousands of reports any difference is
significant, and reports of one pump are correlated, so significance alone
would alarm on noise.

Multivariate (:func:`compare_spectrum`): the reference's principal subspace of
the reduced spectrum (components holding ``pca_variance`` of its variance);
from the live window's moments, the expected **PCA reconstruction error**
``tr((I - P) S_live) / tr((I - P) S_ref)`` (1 in distribution; energy in
directions the reference never varied in) and the live mean's Mahalanobis
distance within the subspace. Both come from the mergeable sums alone.

Prediction drift (:func:`compare_categories`): the class mix's JS distance and
chi-squared p-value against the reference, and the shares of ``unknown``,
``sensor_fault`` and each ``decided_by`` rule beside the reference's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from ..store.records import HistCell
from .histograms import BY_NAME, FEATURES, SPECTRUM_BANDS, Feature

F64 = NDArray[np.float64]
_NB = len(SPECTRUM_BANDS)
_EPS = 1e-4


class Thresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a test says drift (see the module docstring); configurable per model."""

    alpha: float = 0.01  # Benjamini-Hochberg false discovery rate across the run's tests
    js: float = 0.1  # Jensen-Shannon distance (Model Monitor's default comparison threshold)
    wasserstein: float = 0.5  # W1 in reference standard deviations
    psi: float = 0.25  # reported; the customary "significant shift" level
    min_count: int = 200  # fewer live or reference reports in a window: not tested
    groups: int = 10  # equal-reference-mass groups of a feature's bins
    pca_variance: float = 0.95
    reconstruction: float = 3.0  # PCA reconstruction error ratio
    mahalanobis: float = 3.0  # live mean's distance in reference standard deviations
    class_js: float = 0.1


@dataclass
class Window:
    """Histogram sums of one selection (see the module docstring)."""

    counts: dict[str, F64] = field(default_factory=dict)  # feature -> (bins + 2,)
    missing: dict[str, float] = field(default_factory=dict)
    categories: dict[str, float] = field(default_factory=dict)  # "class:x", "decided_by:y"
    n: float = 0.0
    spec_n: float = 0.0
    spec_sum: F64 = field(default_factory=lambda: np.zeros(_NB))
    spec_cross: F64 = field(default_factory=lambda: np.zeros((_NB, _NB)))

    def add(self, feature: str, b: int, value: float) -> None:
        f = BY_NAME.get(feature)
        if f is not None:
            if b < 0:
                self.missing[feature] = self.missing.get(feature, 0.0) + value
                return
            c = self.counts.get(feature)
            if c is None:
                c = self.counts[feature] = np.zeros(f.bins + 2)
            c[min(b, f.bins + 1)] += value
        elif feature == "n":
            self.n += value
        elif feature == "spec_n":
            self.spec_n += value
        elif feature == "spec_sum" and 0 <= b < _NB:
            self.spec_sum[b] += value
        elif feature == "spec_cross" and 0 <= b < _NB * _NB:
            i, j = divmod(b, _NB)
            self.spec_cross[i, j] += value
            if i != j:
                self.spec_cross[j, i] += value
        elif ":" in feature:
            self.categories[feature] = self.categories.get(feature, 0.0) + value


def window(cells: Iterable[HistCell], *, model_version: str | None = None,
           regime: str | None = None, health: Sequence[str] | None = None,
           since_ns: int | None = None, until_ns: int | None = None) -> Window:
    """The sum of ``cells`` matching the selection (None: any)."""
    w = Window()
    hs = None if health is None else set(health)
    for v, _t, r, b_ns, h, feature, b, value in cells:
        if ((model_version is not None and v != model_version)
                or (regime is not None and r != regime) or (hs is not None and h not in hs)
                or (since_ns is not None and b_ns < since_ns)
                or (until_ns is not None and b_ns >= until_ns)):
            continue
        w.add(feature, b, value)
    return w


# -- the training statistics as a reference ---------------------------------------------------


def _cdf_counts(f: Feature, points: Sequence[tuple[float, float]], n: float) -> F64:
    """Counts on ``f``'s bins of a distribution given by (value, cumulative share) points,
    linear between them."""
    xs = np.array([p[0] for p in points])
    ps = np.array([p[1] for p in points])
    order = np.argsort(xs, kind="stable")
    xs, ps = xs[order], np.maximum.accumulate(ps[order])
    cdf = np.interp(f.edges, xs, ps, left=0.0, right=1.0)
    inner = np.diff(cdf)
    return n * np.concatenate(([cdf[0]], inner, [1.0 - cdf[-1]]))


def reference_from_statistics(statistics: Mapping[str, Any]) -> Window:
    """A reference window from a bundle's ``statistics.json`` (Model Monitor's layout):
    each monitored feature the classifier was trained on, from its min, quantiles and max
    (linear between them); the class mix from the label's categorical buckets."""
    w = Window()
    w.n = float(statistics.get("dataset", {}).get("item_count", 0))
    for feat in statistics.get("features", []):
        name = str(feat.get("name"))
        if feat.get("inferred_type") == "String":
            buckets = feat.get("string_statistics", {}).get("distribution", {}).get(
                "categorical", {}).get("buckets", [])
            for b in buckets:
                w.categories[f"class:{b['value']}"] = float(b["count"])
            continue
        f = BY_NAME.get(name)
        s = feat.get("numerical_statistics", {})
        if f is None or "min" not in s:
            continue
        n = float(s["common"]["num_present"])
        pts = [(float(s["min"]), 0.0), (float(s["max"]), 1.0)]
        pts += [(float(q["value"]), float(q["quantile"])) for q in s.get("quantiles", [])]
        w.counts[name] = _cdf_counts(f, pts, n)
        w.missing[name] = float(s["common"].get("num_missing", 0))
    return w


# -- per-feature tests ------------------------------------------------------------------------


class FeatureDrift(msgspec.Struct, kw_only=True):
    feature: str
    scope: str  # "fleet" or "regime:{band}"
    n_live: int
    n_ref: int
    js: float
    psi: float
    wasserstein: float
    p: float
    q: float = 1.0  # Benjamini-Hochberg adjusted
    drifted: bool = False
    live_mean: float = math.nan
    ref_mean: float = math.nan


def _groups(ref: F64, k: int) -> NDArray[np.int64]:
    """Group index per fine bin: about equal reference mass per group."""
    total = ref.sum()
    cum = np.cumsum(ref) / total
    g = np.minimum((cum * k - 1e-9).astype(np.int64), k - 1)
    g = np.maximum(g, 0)
    # bins outside the reference's support are groups of their own (below, above): live
    # mass there must not hide inside the reference's outermost group
    nz = np.flatnonzero(ref)
    g[: nz[0]] = -1
    g[nz[-1] + 1:] = k
    # re-number the groups that exist 0..G-1
    _, g = np.unique(g, return_inverse=True)
    return g.astype(np.int64)


def js_distance(p: F64, q: F64) -> float:
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(math.sqrt(max(0.0, 0.5 * (kl_p + kl_q))))


def psi(live: F64, ref: F64) -> float:
    lp = np.maximum(live / live.sum(), _EPS)
    rp = np.maximum(ref / ref.sum(), _EPS)
    return float(((lp - rp) * np.log(lp / rp)).sum())


def _chi2_p(live: F64, ref: F64) -> float:
    table = np.stack([live, ref])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(sps.chi2.sf(chi2, table.shape[1] - 1))


def compare_feature(name: str, live: F64, ref: F64, th: Thresholds, scope: str) -> FeatureDrift:
    f = BY_NAME[name]
    centers = f.centers()
    nl, nr = float(live.sum()), float(ref.sum())
    g = _groups(ref, th.groups)
    lg = np.bincount(g, weights=live).astype(np.float64)
    rg = np.bincount(g, weights=ref).astype(np.float64)
    lp, rp = live / nl, ref / nr
    w1 = float(np.abs(np.cumsum(lp - rp)[:-1] * np.diff(centers)).sum())
    mean_r = float((rp * centers).sum())
    std_r = float(math.sqrt(max((rp * (centers - mean_r) ** 2).sum(), 0.0)))
    std_r = max(std_r, (f.hi - f.lo) / f.bins)  # at least one bin: a constant reference
    return FeatureDrift(
        feature=name, scope=scope, n_live=round(nl), n_ref=round(nr),
        js=js_distance(lg, rg), psi=psi(lg, rg), wasserstein=w1 / std_r,
        p=_chi2_p(lg, rg), live_mean=float((lp * centers).sum()), ref_mean=mean_r,
    )


def benjamini_hochberg(p: Sequence[float]) -> list[float]:
    """Adjusted p-values (q-values) controlling the false discovery rate."""
    n = len(p)
    if n == 0:
        return []
    arr = np.asarray(p, dtype=np.float64)
    order = np.argsort(arr)
    ranked = arr[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out.tolist()


def compare_windows(live: Window, ref: Window, th: Thresholds, scope: str,
                    features: Sequence[str] | None = None) -> list[FeatureDrift]:
    """Per-feature tests of ``live`` against ``ref`` (uncorrected: see :func:`decide`)."""
    out = []
    for name in features or [f.name for f in FEATURES]:
        lc, rc = live.counts.get(name), ref.counts.get(name)
        if lc is None or rc is None or lc.sum() < th.min_count or rc.sum() < th.min_count:
            continue
        out.append(compare_feature(name, lc, rc, th, scope))
    return out


def decide(tests: list[FeatureDrift], th: Thresholds) -> list[FeatureDrift]:
    """Benjamini-Hochberg across ``tests``, then the effect sizes; worst first."""
    for t, q in zip(tests, benjamini_hochberg([t.p for t in tests]), strict=True):
        t.q = q
        t.drifted = q < th.alpha and (t.js >= th.js or t.wasserstein >= th.wasserstein)
    return sorted(tests, key=lambda t: (not t.drifted, -t.js))


# -- multivariate: the reduced spectrum --------------------------------------------------------


class SpectrumDrift(msgspec.Struct, kw_only=True):
    scope: str
    n_live: int
    n_ref: int
    components: int
    reconstruction_ratio: float
    mahalanobis: float
    drifted: bool


def compare_spectrum(live: Window, ref: Window, th: Thresholds, scope: str) -> SpectrumDrift | None:
    if live.spec_n < th.min_count or ref.spec_n < th.min_count:
        return None
    mu = ref.spec_sum / ref.spec_n
    cov = ref.spec_cross / ref.spec_n - np.outer(mu, mu)
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = np.maximum(vals[::-1], 0.0), vecs[:, ::-1]
    share = np.cumsum(vals) / max(vals.sum(), 1e-12)
    k = int(np.searchsorted(share, th.pca_variance) + 1)
    k = min(k, _NB - 1)
    resid = np.eye(_NB) - vecs[:, :k] @ vecs[:, :k].T
    m = live.spec_sum / live.spec_n
    s_live = live.spec_cross / live.spec_n - np.outer(m, mu) - np.outer(mu, m) + np.outer(mu, mu)
    ref_err = max(float(np.trace(resid @ cov)), 1e-9)
    ratio = float(np.trace(resid @ s_live)) / ref_err
    z = vecs[:, :k].T @ (m - mu) / np.sqrt(np.maximum(vals[:k], 1e-9))
    dist = float(np.sqrt((z**2).sum()))
    return SpectrumDrift(scope=scope, n_live=round(live.spec_n), n_ref=round(ref.spec_n),
                         components=k, reconstruction_ratio=ratio, mahalanobis=dist,
                         drifted=ratio >= th.reconstruction or dist >= th.mahalanobis)


# -- prediction drift --------------------------------------------------------------------------


class PredictionDrift(msgspec.Struct, kw_only=True):
    n_live: int
    n_ref: int
    class_js: float
    class_p: float
    drifted: bool
    live_shares: dict[str, float]
    ref_shares: dict[str, float]


def _shares(w: Window, prefix: str) -> dict[str, float]:
    total = sum(v for k, v in w.categories.items() if k.startswith("class:"))
    return {k[len(prefix):]: v / total for k, v in sorted(w.categories.items())
            if k.startswith(prefix) and total > 0}


def compare_categories(live: Window, ref: Window, th: Thresholds) -> PredictionDrift | None:
    classes = sorted({k for w in (live, ref) for k in w.categories if k.startswith("class:")})
    lc = np.array([live.categories.get(k, 0.0) for k in classes])
    rc = np.array([ref.categories.get(k, 0.0) for k in classes])
    if lc.sum() < th.min_count or rc.sum() < th.min_count:
        return None
    js = js_distance(lc, rc)
    p = _chi2_p(lc, rc)
    live_shares = {f"class:{k}": v for k, v in _shares(live, "class:").items()}
    live_shares |= {f"decided_by:{k}": v for k, v in _shares(live, "decided_by:").items()}
    ref_shares = {f"class:{k}": v for k, v in _shares(ref, "class:").items()}
    ref_shares |= {f"decided_by:{k}": v for k, v in _shares(ref, "decided_by:").items()}
    return PredictionDrift(n_live=round(lc.sum()), n_ref=round(rc.sum()), class_js=js,
                           class_p=p, drifted=p < th.alpha and js >= th.class_js,
                           live_shares=live_shares, ref_shares=ref_shares)
