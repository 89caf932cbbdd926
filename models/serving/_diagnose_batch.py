"""Batch form of :func:`models.serving.diagnostics.diagnose_bearing`, for the serving path.

``diagnose_bearing`` is the reference (one report at a time, readable); this
module gives the same evidence for many reports with numpy across the batch:
the envelopes of all reports are decoded into one ``(m, lines)`` array, the
13 target lines of every report (3 harmonics of BPFO, BPFI and 2xBSF, and
the first-order sidebands of BPFI +- fr and 2xBSF +- FTF) become one
``(m, 13)`` frequency matrix, and every target's peak (max over
``+-max(1 bin, tol*f)``) and floor (median over ``+-max(10 bins, span*f)``)
are taken at once over padded index windows. ``tests/test_model_handler.py``
checks it against the reference on faulty and healthy reports; change both
together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

import dsp
from dsp.results import Evidence

from .diagnostics import _NAMES, DEFECTS

F64 = NDArray[np.float64]
HARMONICS = 3
LINE_THRESHOLD = 3.0
TOL = 0.01  # dsp.line_prominence defaults
SPAN = 0.15

_ORDERS_CACHE: dict[dsp.Bearing, dict[str, float] | None] = {}


def _orders(b: dsp.Bearing) -> dict[str, float] | None:
    if b not in _ORDERS_CACHE:
        try:
            _ORDERS_CACHE[b] = dsp.bearing_orders(b.n_balls, b.ball_d_mm, b.pitch_d_mm,
                                                  b.contact_deg)
        except ValueError:
            _ORDERS_CACHE[b] = None
    return _ORDERS_CACHE[b]


def _targets(fd: F64, harmonics: int) -> F64:
    """(m, 3*harmonics + 4) target frequencies from (m, 5) [fr, ftf, outer, inner, ball]."""
    fr, ftf, outer, inner, ball = (fd[:, i] for i in range(5))
    cols = [k * f0 for f0 in (outer, inner, ball) for k in range(1, harmonics + 1)]
    cols += [inner - fr, inner + fr, ball - ftf, ball + ftf]
    return np.stack(cols, axis=1)


def _prominences(freqs: F64, power: F64, f: F64) -> F64:
    """``dsp.line_prominence`` (as ``diagnostics._prominence`` calls it), all rows at once.

    ``power`` is ``(m, L)``, ``f`` is ``(m, T)``; returns ``(m, T)``.
    """
    m, t = f.shape
    n = freqs.shape[0]
    df = float(freqs[1] - freqs[0])
    top = float(freqs[-1])
    ok = np.isfinite(f) & (f > 0) & (f < top)
    fc = np.where(ok, f, 1.0)
    w = np.fmax(df, TOL * fc)
    ref = np.fmax(10 * df, SPAN * fc)
    ok &= ~(fc + w > top)
    k0 = np.floor((fc - w) / df).astype(np.int64)
    k1 = np.ceil((fc + w) / df).astype(np.int64) + 1
    r0 = np.maximum(1, ((fc - ref) / df).astype(np.int64))
    r1 = np.minimum(n, ((fc + ref) / df).astype(np.int64) + 1)
    k0 = np.clip(k0, 0, n)
    k1 = np.clip(k1, 0, n)
    rows = np.broadcast_to(np.arange(m)[:, None], (m, t))

    def window(a: NDArray[np.int64], b: NDArray[np.int64], fn: str) -> F64:
        """Max or median of ``power[row, a:b]`` for every target (padded, no Python loop)."""
        width = int(max(1, (b - a).max(initial=1)))
        idx = a[..., None] + np.arange(width)
        valid = idx < b[..., None]
        count = valid.sum(axis=-1)
        vals = power[rows[..., None], np.clip(idx, 0, n - 1)]
        if fn == "max":
            out: F64 = np.where(valid, vals, -np.inf).max(axis=-1)
        else:  # padding sorts last; the median sits at the middle of the valid prefix
            srt = np.sort(np.where(valid, vals, np.inf), axis=-1)
            lo = np.take_along_axis(srt, np.maximum(count - 1, 0)[..., None] // 2, -1)[..., 0]
            hi = np.take_along_axis(srt, (count // 2)[..., None], -1)[..., 0]
            out = (lo + hi) / 2
        return np.where(count > 0, out, np.nan)

    peak = window(k0, k1, "max")
    med = window(r0, r1, "median")
    with np.errstate(all="ignore"):
        prom = np.where(med > 0, peak / med, np.nan)
    return np.where(ok, prom, np.nan)


def diagnose_bearings(
    reports: Sequence[dsp.Report], *, line_threshold: float = LINE_THRESHOLD,
    harmonics: int = HARMONICS,
) -> list[list[Evidence]]:
    """The ``evidence`` of ``diagnose_bearing(r)`` for each report, computed batch-wise."""
    out: list[list[Evidence]] = [[] for _ in reports]
    groups: dict[tuple[int, float, float], list[tuple[int, list[float]]]] = {}
    for i, r in enumerate(reports):
        env = r.envelope
        if not r.asset.bearings or not r.speed.rpm or env is None or env.n < 16:
            continue
        o = _orders(r.asset.bearings[0])
        if o is None:
            continue
        fr = r.speed.rpm / 60.0
        hz = [fr, o["ftf"] * fr, o["bpfo"] * fr, o["bpfi"] * fr, 2 * o["bsf"] * fr]
        if not all(np.isfinite(hz)):
            continue
        groups.setdefault((env.n, env.df, env.f0), []).append((i, hz))
    for members in groups.values():
        idx = [i for i, _ in members]
        fd = np.array([f for _, f in members], dtype=np.float64)
        env0 = reports[idx[0]].envelope
        assert env0 is not None
        freqs = env0.freqs()
        db = np.stack([reports[i].envelope.db() for i in idx])  # type: ignore[union-attr]
        power = np.power(10.0, db / 10.0)
        prom = _prominences(freqs, power, _targets(fd, harmonics))
        _evidence(reports, idx, fd, prom, harmonics, line_threshold, out)
    return out


def _evidence(
    reports: Sequence[dsp.Report], idx: list[int], fd: F64, prom: F64, harmonics: int,
    line_threshold: float, out: list[list[Evidence]],
) -> None:
    h = harmonics
    fam = prom[:, : 3 * h].reshape(len(idx), 3, h)  # (m, defect, harmonic)
    sb = prom[:, 3 * h :].reshape(len(idx), 2, 2)  # (m, inner|ball, -/+)
    finite = np.isfinite(fam)
    with np.errstate(all="ignore"):
        logs = np.where(finite, np.fmax(np.log10(np.where(finite, fam, 1.0)), 0.0), 0.0)
        cnt = finite.sum(axis=-1)
        score = np.where(cnt > 0, logs.sum(axis=-1) / np.maximum(cnt, 1), 0.0)
        sb_fin = np.isfinite(sb)
        sb_logs = np.where(sb_fin, np.fmax(np.log10(np.where(sb_fin, sb, 1.0)), 0.0), 0.0)
        sb_cnt = sb_fin.sum(axis=-1)
        sb_mean = sb_logs.sum(axis=-1) / np.maximum(sb_cnt, 1)
    score[:, 1:] = np.where(sb_cnt > 0, 0.75 * score[:, 1:] + 0.25 * sb_mean, score[:, 1:])
    # fundamental = first finite harmonic (as the reference does)
    first = np.argmax(finite, axis=-1)
    fund = np.where(cnt > 0, np.take_along_axis(fam, first[..., None], -1)[..., 0], np.nan)
    lit = (np.where(finite, fam, 0.0) >= 3.0).sum(axis=-1)
    names = DEFECTS
    fcol = {names[0]: 2, names[1]: 3, names[2]: 4}
    score_l, fund_l, lit_l, fd_l = score.tolist(), fund.tolist(), lit.tolist(), fd.tolist()
    for j, i in enumerate(idx):
        s = dict(zip(names, score_l[j], strict=True))
        ev: list[Evidence] = []
        for d in sorted(names, key=lambda d: -s[d]):
            p = fund_l[j][names.index(d)]
            if p == p and p >= line_threshold:
                ev.append(
                    Evidence(
                        f"env_family:{d}", round(s[d], 3),
                        f"{_NAMES[d]} {fd_l[j][fcol[d]]:.1f} Hz: line {p:.1f}x floor, "
                        f"{lit_l[j][names.index(d)]}/{harmonics} harmonics lit "
                        f"(band {reports[i].envelope_band})",
                    )
                )
        out[i] = ev
