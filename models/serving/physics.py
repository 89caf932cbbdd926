"""The physics-only model: rules a vibration analyst would apply, vectorized.

Theory of operation. Nothing here is trained; every number is a stated
engineering rule of thumb, so a result can always say why:

- **Severity** is the ISO 20816 zone of the broadband velocity RMS, against
  the asset's own limits (report's ``zone_limits`` or the ISO table for its
  machine group and foundation). ``sev_ab`` / ``sev_bc`` are soft steps
  (logistic in log velocity) at the A/B and B/C boundaries.
- **Bearing defects** show as lines in the envelope spectrum: the report's
  ``env_bpfo`` / ``env_bpfi`` / ``env_bsf`` are line prominences (height
  over local median; ~1 = no line). A prominence of ``env_threshold`` (4x)
  counts as a line (soft step in log prominence); when several are lit they
  share that strength in proportion to prominence^4.
- **Shaft-rate patterns** need a vibration level to matter (``sev_ab``):
  imbalance = 1x dominates velocity; misalignment = strong 2x relative to 1x;
  looseness = strong 3x relative to 1x (a stand-in for "many harmonics").
- **Cavitation** = broadband high-frequency energy: most acceleration above
  2.5 kHz with no dominant shaft line and no envelope line.
- ``healthy`` and ``unknown`` share what no fault pattern explains: healthy
  below B/C, unknown above it (severe vibration without a recognised pattern).

Scores are normalised into class probabilities over :data:`models.serving.classes.CONDITIONS`.
This is a stand-in for the trained classifier, and results say so in their
model version (``physics``) -- it is not calibrated probability.

The fleet-generic anomaly score (used when a pump has no baseline) is the
largest of three ratios, each 1.0 at its alarm level: velocity / B/C limit,
strongest bearing-line prominence / ``env_alarm``, kurtosis / ``kurtosis_alarm``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from .classes import CONDITIONS
from .features import BatchFeatures

F64 = NDArray[np.float64]

_I = {c: i for i, c in enumerate(CONDITIONS)}


@dataclass(frozen=True, kw_only=True)
class PhysicsParams:
    env_threshold: float = 4.0  # envelope line prominence that counts as a defect line
    env_width: float = 0.25  # soft-step width, natural-log units of prominence
    zone_width: float = 0.15  # soft-step width, natural-log units of velocity
    imbalance_share: float = 0.7  # 1x share of broadband velocity RMS
    misalignment_ratio: float = 0.5  # 2x / 1x
    looseness_ratio: float = 0.4  # 3x / 1x
    cavitation_hf_share: float = 0.6  # share of acceleration RMS above 2.5 kHz
    env_alarm: float = 6.0  # fleet score: envelope prominence at alarm level
    kurtosis_alarm: float = 6.0  # fleet score: kurtosis at alarm level
    unsure_below: float = 0.4  # top probability below this -> label "unknown"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _fill(a: F64, value: float) -> F64:
    """``a`` with NaN replaced by ``value`` (cheaper than ``np.nan_to_num``)."""
    out: F64 = np.where(np.isnan(a), value, a)
    return out


def _sig(x: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


def _lnratio(a: F64, b: F64 | float) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F64 = np.log(np.fmax(a, 1e-12) / b)
    return out


def _ratio(a: F64, b: F64) -> F64:
    with np.errstate(divide="ignore", invalid="ignore"):
        r: F64 = np.where(b > 0, a / b, np.nan)
    return _fill(r, 0.0)


def hf_share(f: BatchFeatures) -> F64:
    """Share of acceleration RMS in bands starting at or above 2.5 kHz (0 if no bands)."""
    total = np.zeros(f.n)
    high = np.zeros(f.n)
    for name, col in f.bands.items():
        lo = float(name[len("band_rms[") :].split("-")[0])
        p = _fill(col, 0.0) ** 2
        total += p
        if lo >= 2500.0:
            high += p
    return np.sqrt(_ratio(high, total))


class PhysicsClassifier:
    """Condition probabilities from ISO severity, shaft-rate lines and envelope lines."""

    kind = "physics"
    classes: tuple[str, ...] = CONDITIONS
    nbytes = 0

    def __init__(self, params: PhysicsParams | None = None) -> None:
        self.params = params or PhysicsParams()

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        """No file: the rules' parameters go into ``bundle.json`` itself."""
        return {"kind": self.kind, "params": self.params.to_dict()}

    def strengths(self, f: BatchFeatures) -> dict[str, F64]:
        """Per-pattern strengths in [0, 1] (also used as evidence); memoised per batch."""
        key = ("physics-strengths", self.params)
        hit = f.memo.get(key)
        if hit is None:
            hit = f.memo[key] = self._strengths(f)
        return cast(dict[str, F64], hit)

    def _strengths(self, f: BatchFeatures) -> dict[str, F64]:
        p = self.params
        vel = _fill(f.column("velocity_rms"), 0.0)
        sev_ab = _sig(_lnratio(vel, f.zone_limits[:, 0]) / p.zone_width)
        sev_bc = _sig(_lnratio(vel, f.zone_limits[:, 1]) / p.zone_width)

        # Bearing lines compete: the strongest line's step, shared by relative prominence
        # (several defect lines at once usually means one fault plus its harmonics).
        prom = np.stack(
            [_fill(f.column(k), 1.0) for k in ("env_bpfo", "env_bpfi", "env_bsf")],
            axis=1,
        )
        lit = _sig(_lnratio(prom.max(axis=1), p.env_threshold) / p.env_width)
        w = np.fmax(prom, 1e-6) ** 4
        share = w / w.sum(axis=1, keepdims=True)

        v1 = _fill(f.column("v1x"), 0.0)
        r1 = _ratio(v1, vel)
        r21 = _ratio(_fill(f.column("v2x"), 0.0), v1)
        r31 = _ratio(_fill(f.column("v3x"), 0.0), v1)
        mis = sev_ab * _sig((r21 - p.misalignment_ratio) / 0.08)
        loose = sev_ab * _sig((r31 - p.looseness_ratio) / 0.08)
        imb = sev_ab * _sig((r1 - p.imbalance_share) / 0.06) * (1 - mis) * (1 - loose)
        outer, inner, ball = (lit * share[:, k] for k in range(3))
        bearing_any = lit
        cav = (
            sev_ab
            * _sig((hf_share(f) - p.cavitation_hf_share) / 0.06)
            * (1 - _sig((r1 - 0.3) / 0.06))
            * (1 - bearing_any)
        )
        return {
            "sev_ab": sev_ab,
            "sev_bc": sev_bc,
            "imbalance": imb,
            "misalignment": mis,
            "looseness": loose,
            "bearing_outer": outer,
            "bearing_inner": inner,
            "bearing_ball": ball,
            "cavitation": cav,
        }

    def predict_proba(self, f: BatchFeatures) -> F64:
        s = self.strengths(f)
        raw = np.zeros((f.n, len(CONDITIONS)))
        none = np.ones(f.n)
        for c in (
            "imbalance", "misalignment", "looseness",
            "bearing_outer", "bearing_inner", "bearing_ball", "cavitation",
        ):
            raw[:, _I[c]] = s[c]
            none *= 1 - s[c]
        # Without a velocity figure, "nothing found" is not "healthy".
        known = np.isfinite(f.column("velocity_rms"))
        raw[:, _I["healthy"]] = np.where(known, none * (1 - s["sev_bc"]), 0.0)
        raw[:, _I["unknown"]] = np.where(known, none * s["sev_bc"], none)
        out: F64 = raw / raw.sum(axis=1, keepdims=True)
        return out


def fleet_score(f: BatchFeatures, params: PhysicsParams) -> tuple[F64, F64]:
    """Fleet-generic anomaly score (threshold 1.0) and which term won (0 vel, 1 env, 2 kurt)."""
    vel = _fill(f.column("velocity_rms"), 0.0) / f.zone_limits[:, 1]
    prom = np.fmax(
        np.fmax(
            _fill(f.column("env_bpfo"), 1.0),
            _fill(f.column("env_bpfi"), 1.0),
        ),
        _fill(f.column("env_bsf"), 1.0),
    )
    kurt = _fill(f.column("kurtosis"), 3.0) / params.kurtosis_alarm
    terms = np.stack([vel, prom / params.env_alarm, kurt], axis=1)
    return terms.max(axis=1), terms.argmax(axis=1).astype(np.float64)
