"""Gather a batch of reports into feature columns, once per batch.

This is the only per-report Python loop on the scoring path: one tuple of
scalars per report, turned into a ``(n, k)`` float64 array in one numpy call
(``None`` -> NaN). Everything after it is numpy across the batch.

Feature names are the model side's vocabulary, shared by the physics model,
baselines and trained classifiers (a bundle stores the names it was fitted
on): the scalar report features (``velocity_rms``, ``env_bpfo``, ...),
``rpm``, ``band_rms[LO-HI]`` for a band in Hz, a ratio ``A/B`` of two of
those (``band_rms[2500-5000]/rms``: a band's share of the total, ``v2x/v1x``;
level-free, so a louder or quieter machine or sensor gain does not move it;
NaN where either is missing or B is not positive), and any of them behind
``log:`` for its base-10 logarithm (floored at 1e-9; missing stays missing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from dsp import ISO_ZONE_LIMITS, Report

F64 = NDArray[np.float64]

SCALARS: tuple[str, ...] = (
    "velocity_rms",
    "rms",
    "peak",
    "crest",
    "kurtosis",
    "skewness",
    "v1x",
    "v2x",
    "v3x",
    "vbpf",
    "env_bpfo",
    "env_bpfi",
    "env_bsf",
    "env_ftf",
    "env_kurtosis",
    "rpm",
)
_COL = {name: i for i, name in enumerate(SCALARS)}
LOG_FLOOR = 1e-9


def band_name(band: tuple[float, float]) -> str:
    return f"band_rms[{band[0]:g}-{band[1]:g}]"


@dataclass(slots=True)
class BatchFeatures:
    """Feature columns of one batch; ``n`` reports, request order."""

    n: int
    pumps: list[str]
    scalars: F64  # (n, len(SCALARS))
    zone_limits: F64  # (n, 3): A/B, B/C, C/D in mm/s
    bands: dict[str, F64]  # band name -> (n,) acceleration RMS, NaN where a report lacks it
    quality_flags: NDArray[np.int64]
    _cache: dict[str, F64] = field(default_factory=dict)
    memo: dict[object, object] = field(default_factory=dict)  # per-batch results of models

    def column(self, name: str) -> F64:
        """One named feature as an ``(n,)`` array (NaN where the report has none)."""
        hit = self._cache.get(name)
        if hit is not None:
            return hit
        if name.startswith("log:"):
            # np.maximum, not np.fmax: a missing feature (NaN) stays missing under log:
            out = np.log10(np.maximum(self.column(name[4:]), LOG_FLOOR))
        elif "/" in name:
            num, den = name.split("/", 1)
            b = self.column(den)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(b > 0, self.column(num) / np.where(b > 0, b, 1.0), np.nan)
        elif name in _COL:
            out = self.scalars[:, _COL[name]]
        elif name in self.bands:
            out = self.bands[name]
        elif name.startswith("band_rms["):
            out = np.full(self.n, np.nan)
        else:
            raise KeyError(f"unknown feature name {name!r}")
        self._cache[name] = out
        return out

    def matrix(self, names: Sequence[str]) -> F64:
        """``(n, len(names))`` feature matrix."""
        if not names:
            return np.empty((self.n, 0))
        return np.stack([self.column(nm) for nm in names], axis=1)


def check_feature_names(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first feature name this module cannot compute."""
    for name in names:
        base = name[4:] if name.startswith("log:") else name
        parts = base.split("/", 1)
        if not all(p in _COL or (p.startswith("band_rms[") and p.endswith("]")) for p in parts):
            raise ValueError(f"unknown feature name {name!r}")


def extract(reports: Sequence[Report]) -> BatchFeatures:
    """Feature columns for a batch of decoded reports."""
    rows = [
        (
            f.velocity_rms, f.rms, f.peak, f.crest, f.kurtosis, f.skewness,
            f.v1x, f.v2x, f.v3x, f.vbpf,
            f.env_bpfo, f.env_bpfi, f.env_bsf, f.env_ftf, f.env_kurtosis,
            r.speed.rpm or None,
        )
        for r in reports
        for f in (r.features,)
    ]
    n = len(reports)
    scalars = np.array(rows, dtype=np.float64).reshape(n, len(SCALARS))
    # +-inf (a broken sensor chain) carries no information: treat it as missing.
    scalars[np.isinf(scalars)] = np.nan
    limits = np.array(
        [
            r.asset.zone_limits or ISO_ZONE_LIMITS[(r.asset.iso_group, r.asset.foundation)]
            for r in reports
        ],
        dtype=np.float64,
    ).reshape(n, 3)
    # Reports of one batch almost always share one band layout: group by it.
    layouts: dict[tuple[tuple[float, float], ...], list[int]] = {}
    for i, r in enumerate(reports):
        layouts.setdefault(tuple(r.features.bands), []).append(i)
    bands: dict[str, F64] = {}
    for layout, idx in layouts.items():
        vals = np.array([reports[i].features.band_rms for i in idx], dtype=np.float64)
        vals[np.isinf(vals)] = np.nan
        if vals.ndim != 2 or vals.shape[1] != len(layout):
            continue  # malformed: band_rms and bands disagree; leave NaN
        rows_idx = np.asarray(idx)
        for k, band in enumerate(layout):
            col = bands.setdefault(band_name(band), np.full(n, np.nan))
            col[rows_idx] = vals[:, k]
    flags = np.fromiter((r.quality.flags for r in reports), dtype=np.int64, count=n)
    return BatchFeatures(
        n=n, pumps=[r.pump for r in reports], scalars=scalars, zone_limits=limits,
        bands=bands, quality_flags=flags,
    )
