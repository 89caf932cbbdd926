"""Per-pump anomaly baselines with a threshold calibrated on held-out healthy data.

Theory of operation. A pump's baseline is the location and spread of a
feature vector over that pump's own healthy period: log band energies
(acceleration RMS per report band), log broadband and order-line velocities
(1x, 2x, 3x, blade pass), log kurtosis and crest, and log envelope-line
prominences at the bearing defect frequencies. The score of a report is its
Mahalanobis distance from the baseline, divided by sqrt(#features) (about 1
for a typical healthy report): ``z`` = per-feature deviation over spread,
then whitened by the pump's feature *correlation*, shrunk towards the
identity with the Ledoit-Wolf rule (scikit-learn's ``ledoit_wolf`` on the
unit-variance deviations; a healthy period of a few dozen reports
cannot estimate 16x16 correlations; with very few reports the shrinkage
goes to 1 and the score is the plain RMS z-score). The per-feature spread
has a floor (``SCALE_FLOOR``, 0.02 decades ~ 5 %) so that a feature that
happened to be steady in the healthy period cannot turn noise into alarms.
The artifact is :class:`models.serving.baseline.Baselines` (one small ``.npz``
inside the bundle, numpy only, with the whitening matrix), which the model
server scores the same way.

Calibration. The healthy period is split in time: the first
``1 - calibrate_share`` fits location and spread, the rest (never seen by
the fit) is scored, and the threshold is that held-out score distribution's
``1 - false_alarm_rate`` quantile times ``margin``, floored at
``min_threshold``. With few held-out reports the quantile is close to their
maximum, so the stated false-alarm rate is an upper bound estimate only when
the held-out period holds at least ``1 / false_alarm_rate`` reports; the fit
reports how many it had (``n_fit``) and :func:`calibration_report` says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.covariance import ledoit_wolf

import dsp
from models.serving.baseline import FLEET, SCALE_FLOOR, Baselines
from models.serving.features import band_name, extract

from .replay import STANDARD_BANDS

F64 = NDArray[np.float64]

BASELINE_FEATURES: tuple[str, ...] = (
    "log:velocity_rms",
    "log:rms",
    "log:v1x",
    "log:v2x",
    "log:v3x",
    "log:vbpf",
    "log:crest",
    "log:kurtosis",
    *(f"log:{band_name(b)}" for b in STANDARD_BANDS),
    "log:env_bpfo",
    "log:env_bpfi",
    "log:env_bsf",
    "log:env_kurtosis",
)


@dataclass(frozen=True, kw_only=True)
class BaselineConfig:
    features: tuple[str, ...] = BASELINE_FEATURES
    false_alarm_rate: float = 0.005  # per report
    calibrate_share: float = 1 / 3  # the last third of the healthy period, held out
    margin: float = 1.2
    min_threshold: float = 2.0  # RMS z-score
    min_reports: int = 6
    correlation: bool = True  # Mahalanobis with shrunk correlation; False: RMS z-score


def _scores(x: F64, mean: F64, scale: F64, whiten: F64 | None = None) -> F64:
    """What :meth:`Baselines.score` computes, for one pump's rows."""
    z = (x - mean) / scale
    count = np.sum(np.isfinite(z), axis=1)
    u = z if whiten is None else np.nan_to_num(z, nan=0.0) @ whiten.T
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(np.nansum(u * u, axis=1) / count)
    return np.where(count > 0, s, np.nan)


def shrunk_whitener(x: F64, mean: F64, scale: F64) -> tuple[F64, float]:
    """``L^-1`` of the Ledoit-Wolf-shrunk correlation of ``z`` (identity off the valid features).

    The correlation is scikit-learn's :func:`~sklearn.covariance.ledoit_wolf`
    of ``z`` rescaled to unit variance per feature, so its shrinkage target
    ``trace / F`` is the identity. Features without spread in ``x`` (or never
    seen) carry no correlation and keep an identity row. Returns the
    ``(F, F)`` whitening matrix and the shrinkage used (1 = none of the sample
    correlation kept).
    """
    f = x.shape[1]
    out = np.eye(f)
    z = (x - mean) / scale
    rows = np.all(np.isfinite(z[:, np.isfinite(mean)]), axis=1)
    z = z[rows]
    sd = z.std(axis=0) if z.shape[0] else np.zeros(f)
    valid = np.isfinite(mean) & np.isfinite(sd) & (sd > 0)
    n, k = z.shape[0], int(valid.sum())
    if n < 3 or k < 2:
        return out, 1.0
    y = z[:, valid] - z[:, valid].mean(axis=0)
    y /= sd[valid]
    corr, lam = ledoit_wolf(y, assume_centered=True)
    try:
        chol = np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        return out, 1.0
    out[np.ix_(valid, valid)] = np.linalg.solve(chol, np.eye(k))
    return out, float(lam)


def _location_scale(x: F64) -> tuple[F64, F64]:
    """Mean and spread per feature; a feature never seen in the period stays NaN (ignored)."""
    seen = np.sum(np.isfinite(x), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        mean = np.nanmean(x, axis=0)
        sd = np.nanstd(x, axis=0, ddof=1)
    mean = np.where(seen > 0, mean, np.nan)
    scale = np.fmax(np.where(seen > 1, sd, SCALE_FLOOR), SCALE_FLOOR)
    return mean, scale


def _fit_one(x: F64, cfg: BaselineConfig) -> tuple[F64, F64, float, F64]:
    n = x.shape[0]
    n_cal = round(n * cfg.calibrate_share)
    n_cal = min(max(n_cal, 1), n - 2) if n >= 3 else 0
    fit, cal = x[: n - n_cal], x[n - n_cal :]
    mean, scale = _location_scale(fit)
    w = shrunk_whitener(fit, mean, scale)[0] if cfg.correlation else None
    s = _scores(cal if n_cal else fit, mean, scale, w)
    s = s[np.isfinite(s)]
    q = float(np.quantile(s, 1.0 - cfg.false_alarm_rate)) if s.size else 0.0
    # Refit on the whole period: the threshold came from data the fit had not seen.
    mean, scale = _location_scale(x)
    w_all = shrunk_whitener(x, mean, scale)[0] if cfg.correlation else np.eye(x.shape[1])
    return mean, scale, max(q * cfg.margin, cfg.min_threshold), w_all


def fit_pump_baselines(
    reports: Sequence[dsp.Report],
    cfg: BaselineConfig | None = None,
    *,
    fleet: bool = False,
) -> Baselines:
    """One baseline per pump over its reports in time order (``t0_ns``).

    Pumps with fewer than ``cfg.min_reports`` reports are skipped. With
    ``fleet=True`` a ``*`` row over all reports is added: a fleet-generic
    baseline that results flag as ``baseline="fleet"``.
    """
    cfg = cfg or BaselineConfig()
    if not 0 < cfg.false_alarm_rate < 1:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {cfg.false_alarm_rate=}")
    order = sorted(range(len(reports)), key=lambda i: (reports[i].pump, reports[i].t0_ns))
    reps = [reports[i] for i in order]
    x = extract(reps).matrix(cfg.features)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(reps):
        groups.setdefault(r.pump, []).append(i)
    if fleet:
        groups[FLEET] = list(range(len(reps)))
    pumps: list[str] = []
    rows: list[tuple[F64, F64, float, int]] = []
    whiten: list[F64] = []
    for pump, idx in groups.items():
        if len(idx) < cfg.min_reports:
            continue
        m, s, t, w = _fit_one(x[idx], cfg)
        pumps.append(pump)
        rows.append((m, s, t, len(idx)))
        whiten.append(w)
    k = len(cfg.features)
    return Baselines(
        feature_names=cfg.features,
        pumps=tuple(pumps),
        mean=np.array([r[0] for r in rows]).reshape(len(rows), k),
        scale=np.array([r[1] for r in rows]).reshape(len(rows), k),
        threshold=np.array([r[2] for r in rows], dtype=np.float64),
        n_fit=np.array([r[3] for r in rows], dtype=np.int64),
        whiten=np.array(whiten).reshape(len(rows), k, k) if cfg.correlation else None,
    )


def score_reports(baselines: Baselines, reports: Sequence[dsp.Report]) -> tuple[F64, F64]:
    """(score, threshold) per report, as the model server computes them."""
    s = baselines.score(extract(reports))
    return s.score, s.threshold


def calibration_report(baselines: Baselines, cfg: BaselineConfig | None = None) -> str:
    """A line per pump: reports used, threshold, and whether the FAR claim is supported."""
    cfg = cfg or BaselineConfig()
    need = int(np.ceil(1.0 / cfg.false_alarm_rate / cfg.calibrate_share))
    lines = []
    for p, n, t in zip(baselines.pumps, baselines.n_fit.tolist(), baselines.threshold, strict=True):
        note = "" if n >= need else f" (fewer than {need} reports: threshold ~ held-out maximum)"
        lines.append(f"{p}: {n} reports, threshold {t:.2f}{note}")
    return "\n".join(lines)
