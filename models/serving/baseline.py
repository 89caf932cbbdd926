"""Per-pump anomaly baselines: a z-score model over log features.

Theory of operation. A baseline is, per pump, the mean and spread of a
feature vector (default: log velocity RMS, log acceleration RMS, log crest,
log kurtosis, log band energies, log envelope-line prominences) over that
pump's healthy period. The score of a report is the RMS z-score over the
features it has, ``sqrt(mean(((x - mean) / scale)^2))`` -- 1 is "typical",
and the threshold is the ``1 - false_alarm_rate`` quantile of the fitting
reports' own scores times ``margin`` (in-sample; a held-out calibration is
the models issue's job). A row named ``*`` is a fleet baseline, used for
pumps without their own (results then say ``baseline="fleet"``).

With ``whiten`` (optional, fitted by :mod:`models.training.anomaly`), the score
is a Mahalanobis distance instead: ``sqrt(|L^-1 z|^2 / k)`` where ``L L^T`` is
the pump's shrunk correlation matrix of ``z``, so features that move together
(band energies and broadband RMS under a load change) count once, not once
each. Without it (or for a row whose ``whiten`` is the identity), the RMS
z-score above.

Artifact: one ``.npz`` (``pumps``, ``feature_names``, ``mean``, ``scale``,
``threshold``, ``n_fit``, optionally ``whiten``) -- small, numpy-only, no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from dsp import ReportConfig
from dsp.report import Report

from .errors import BundleError
from .features import BatchFeatures, band_name, check_feature_names, extract

F64 = NDArray[np.float64]
FLEET = "*"

DEFAULT_FEATURES: tuple[str, ...] = (
    "log:velocity_rms",
    "log:rms",
    "log:crest",
    "log:kurtosis",
    *(f"log:{band_name(b)}" for b in ReportConfig().bands),
    "log:env_bpfo",
    "log:env_bpfi",
    "log:env_bsf",
)
SCALE_FLOOR = 0.02  # log10 units (~5 %): a feature never varies less than this


@dataclass(frozen=True, slots=True)
class BaselineScores:
    score: F64  # (n,) NaN where no baseline (pump or fleet) applies
    threshold: F64  # (n,)
    own: NDArray[np.bool_]  # the pump's own baseline was used
    top_feature: NDArray[np.int64]  # index into feature_names of the largest |z|
    top_z: F64


@dataclass(frozen=True)
class Baselines:
    feature_names: tuple[str, ...]
    pumps: tuple[str, ...]
    mean: F64  # (P, F)
    scale: F64  # (P, F)
    threshold: F64  # (P,)
    n_fit: NDArray[np.int64]  # (P,)
    whiten: F64 | None = None  # (P, F, F): inverse Cholesky factor of the shrunk correlation
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_feature_names(self.feature_names)
        p, f = len(self.pumps), len(self.feature_names)
        for name, arr, shape in (
            ("mean", self.mean, (p, f)),
            ("scale", self.scale, (p, f)),
            ("threshold", self.threshold, (p,)),
            ("n_fit", self.n_fit, (p,)),
        ):
            if arr.shape != shape:
                raise BundleError(f"baselines {name} has shape {arr.shape}, expected {shape}")
        if self.whiten is not None and self.whiten.shape != (p, f, f):
            raise BundleError(
                f"baselines whiten has shape {self.whiten.shape}, expected {(p, f, f)}"
            )
        object.__setattr__(self, "index", {pump: i for i, pump in enumerate(self.pumps)})

    @property
    def nbytes(self) -> int:
        names = sum(len(p) + 50 for p in self.pumps)
        w = 0 if self.whiten is None else self.whiten.nbytes
        return int(self.mean.nbytes + self.scale.nbytes + self.threshold.nbytes + w) + names

    def has(self, pump: str) -> bool:
        return pump in self.index

    def score(self, f: BatchFeatures) -> BaselineScores:
        fleet = self.index.get(FLEET, -1)
        idx = np.fromiter((self.index.get(p, -1) for p in f.pumps), dtype=np.int64, count=f.n)
        own = idx >= 0
        if fleet >= 0:
            idx = np.where(own, idx, fleet)
        have = idx >= 0
        safe = np.where(have, idx, 0)
        x = f.matrix(self.feature_names)
        if len(self.pumps) == 0:
            z = np.full_like(x, np.nan)
            thr = np.full(f.n, np.nan)
        else:
            z = (x - self.mean[safe]) / self.scale[safe]
            thr = np.where(have, self.threshold[safe], np.nan)
        z2 = z * z
        count = np.sum(np.isfinite(z2), axis=1)
        if self.whiten is not None and len(self.pumps):
            u = np.einsum("nij,nj->ni", self.whiten[safe], np.nan_to_num(z, nan=0.0))
            z2 = u * u
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.sqrt(np.nansum(z2, axis=1) / count)
        s = np.where(have & (count > 0), s, np.nan)
        az = np.abs(z)
        az = np.where(np.isnan(az), -1.0, az)
        top = az.argmax(axis=1) if az.shape[1] else np.zeros(f.n, dtype=np.int64)
        top_z = z[np.arange(f.n), top] if az.shape[1] else np.zeros(f.n)
        return BaselineScores(s, thr, own, top.astype(np.int64), top_z)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "feature_names": np.array(self.feature_names, dtype=str),
            "pumps": np.array(self.pumps, dtype=str),
            "mean": self.mean,
            "scale": self.scale,
            "threshold": self.threshold,
            "n_fit": self.n_fit,
        }
        if self.whiten is not None:
            arrays["whiten"] = self.whiten
        with path.open("wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> Baselines:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    feature_names=tuple(str(s) for s in z["feature_names"]),
                    pumps=tuple(str(s) for s in z["pumps"]),
                    mean=z["mean"].astype(np.float64).reshape(len(z["pumps"]), -1),
                    scale=z["scale"].astype(np.float64).reshape(len(z["pumps"]), -1),
                    threshold=z["threshold"].astype(np.float64),
                    n_fit=z["n_fit"].astype(np.int64),
                    whiten=z["whiten"].astype(np.float64) if "whiten" in z.files else None,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise BundleError(f"cannot load baselines {path}: {exc}") from None

    def merged(self, other: Baselines) -> Baselines:
        """These baselines with ``other``'s rows added (``other`` wins on the same pump)."""
        if other.feature_names != self.feature_names:
            raise BundleError("cannot merge baselines over different features")
        keep = [i for i, p in enumerate(self.pumps) if p not in other.index]
        whiten = None
        if self.whiten is not None or other.whiten is not None:
            whiten = np.concatenate([self._whiten_or_eye()[keep], other._whiten_or_eye()])
        return Baselines(
            feature_names=self.feature_names,
            pumps=tuple(self.pumps[i] for i in keep) + other.pumps,
            mean=np.concatenate([self.mean[keep], other.mean]),
            scale=np.concatenate([self.scale[keep], other.scale]),
            threshold=np.concatenate([self.threshold[keep], other.threshold]),
            n_fit=np.concatenate([self.n_fit[keep], other.n_fit]),
            whiten=whiten,
        )

    def _whiten_or_eye(self) -> F64:
        if self.whiten is not None:
            return self.whiten
        return np.broadcast_to(np.eye(len(self.feature_names)),
                               (len(self.pumps), *(len(self.feature_names),) * 2)).copy()


def _fit_rows(
    x: F64, false_alarm_rate: float, margin: float
) -> tuple[F64, F64, float]:
    mean = np.nanmean(x, axis=0)
    scale = np.fmax(np.where(np.isnan(sd := np.nanstd(x, axis=0)), SCALE_FLOOR, sd), SCALE_FLOOR)
    mean = np.nan_to_num(mean, nan=0.0)
    z = (x - mean) / scale
    z2 = z * z
    count = np.maximum(np.sum(np.isfinite(z2), axis=1), 1)
    s = np.sqrt(np.nansum(z2, axis=1) / count)
    thr = float(np.quantile(s, 1.0 - false_alarm_rate)) * margin
    return mean, scale, max(thr, 1.5)


def fit_baselines(
    reports: Sequence[Report],
    *,
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    false_alarm_rate: float = 0.005,
    margin: float = 1.25,
    min_reports: int = 10,
    fleet: bool = False,
) -> Baselines:
    """Fit one baseline per pump (pumps with fewer than ``min_reports`` are skipped).

    ``fleet=True`` adds a ``*`` row over all reports (a fleet-generic baseline).
    """
    if not 0 < false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate=}")
    names = tuple(feature_names)
    check_feature_names(names)
    f = extract(reports)
    x = f.matrix(names)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(f.pumps):
        groups.setdefault(p, []).append(i)
    if fleet:
        groups[FLEET] = list(range(f.n))
    pumps: list[str] = []
    means: list[F64] = []
    scales: list[F64] = []
    thrs: list[float] = []
    ns: list[int] = []
    for pump, idx in groups.items():
        if len(idx) < min_reports:
            continue
        m, s, t = _fit_rows(x[idx], false_alarm_rate, margin)
        pumps.append(pump)
        means.append(m)
        scales.append(s)
        thrs.append(t)
        ns.append(len(idx))
    k = len(names)
    return Baselines(
        feature_names=names,
        pumps=tuple(pumps),
        mean=np.array(means).reshape(len(pumps), k),
        scale=np.array(scales).reshape(len(pumps), k),
        threshold=np.array(thrs, dtype=np.float64),
        n_fit=np.array(ns, dtype=np.int64),
    )
