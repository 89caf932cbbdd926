"""Which running speed the bearing-line search uses, and how far it may be off.

Theory of operation. A defect line sits at ``order x fr``; the window the
search may look in is the uncertainty of ``fr`` plus that of the order
(:data:`KINEMATIC_UNCERTAINTY`). The report says where its speed came from
(:class:`dsp.Speed` ``source``); the edge falls back to the asset's rated
speed when it finds no clear 1x line, and says so with
``Q_SPEED_UNCERTAIN`` (source ``given``, rpm = ``rated_rpm``). Relative
uncertainties (stated, textbook, not fitted):

- ``measured`` (a tachometer): 0.5 %.
- ``estimated`` (the edge's own 1x line in its whole-interval spectrum):
  half a line of that spectrum (``0.5 / duration_s`` Hz) over ``fr``, at least 0.5 %.
- ``given`` (a configured speed): 2 %; an induction motor's slip moves its
  speed by 1-3 % between no load and full load.
- ``rated`` (the nameplate speed as a fallback): 6 %; the nameplate is the
  full-load speed, and a lightly loaded or throttled machine runs several
  percent away from it.
- ``shaft line`` (this module's own 1x line in the report's Welch spectrum,
  interpolated on the log spectrum): 0.2 of a spectral line over ``fr``, at
  least 0.5 %.

A clear shaft line (a local peak :data:`SHAFT_CLEAR_DB` above the median of
its neighbourhood, at least :data:`SHAFT_MIN_BINS` lines from DC so the
window's leakage from DC cannot pose as it, within +-:data:`SHAFT_SEARCH`
of the stated speed) is preferred over a ``given`` or ``rated`` speed that
disagrees with it by more than both uncertainties together; a tachometer or
the edge's own estimate is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

import dsp
from dsp.report import Q_SPEED_UNCERTAIN

F64 = NDArray[np.float64]

KINEMATIC_UNCERTAINTY = 0.03  # rolling elements slip: real lines sit 1-3 % off catalog orders
SPEED_UNCERTAINTY = {"measured": 0.005, "given": 0.02, "rated": 0.06}
MIN_UNCERTAINTY = 0.005
SHAFT_SEARCH = 0.10  # look for 1x within +-10 % of the stated speed (never 2x or 0.5x)
SHAFT_CLEAR_DB = 10.0  # a clear line: 10 dB over the local median of the Welch PSD
SHAFT_MIN_BINS = 4  # Hann leakage from DC spans ~2 lines; a 1x line below 4 lines is not used
SHAFT_LINE_ERROR = 0.2  # interpolated line position error, in spectral lines
_NEIGHBOURS = 12  # lines either side for the local median (the peak's own 5 lines excluded)


@dataclass(frozen=True, slots=True)
class SpeedChoice:
    """The speed a report's bearing search uses: Hz, relative uncertainty, and why."""

    fr: float  # Hz; NaN: no speed
    uncertainty: float  # relative (1 sigma-ish half width), speed only
    source: str  # measured | estimated | given | rated | shaft line
    note: str


def _shaft_lines(db: F64, df: float, fr0: F64) -> tuple[F64, F64]:
    """Interpolated 1x line (Hz) near ``fr0`` per row of Welch PSDs ``db``, and its clearness (dB).

    NaN where no local peak is found in the search range.
    """
    m, n = db.shape
    lo = np.maximum(SHAFT_MIN_BINS, np.floor(fr0 * (1 - SHAFT_SEARCH) / df)).astype(np.int64)
    hi = np.minimum(n - _NEIGHBOURS - 3, np.ceil(fr0 * (1 + SHAFT_SEARCH) / df)).astype(np.int64)
    width = int(max(1, (hi - lo + 1).max(initial=1)))
    idx = lo[:, None] + np.arange(width)
    valid = (idx <= hi[:, None]) & np.isfinite(fr0)[:, None]
    rows = np.arange(m)[:, None]
    vals = np.where(valid, db[rows, np.clip(idx, 0, n - 1)], -np.inf)
    kp = lo + vals.argmax(axis=1)
    ok = valid.any(axis=1) & (kp >= 1) & (kp + 1 < n)
    r = np.arange(m)
    kc = np.clip(kp, 1, n - 2)
    yl, y0, yr = db[r, kc - 1], db[r, kc], db[r, kc + 1]
    ok &= (y0 >= yl) & (y0 >= yr)
    den = yl - 2 * y0 + yr
    delta = np.where(den < 0, 0.5 * (yl - yr) / np.where(den < 0, den, -1.0), 0.0)
    nb = np.concatenate([np.arange(-_NEIGHBOURS - 2, -2), np.arange(3, _NEIGHBOURS + 3)])
    nidx = np.clip(kc[:, None] + nb, 1, n - 1)
    med = np.median(db[r[:, None], nidx], axis=1)
    clear = np.where(ok, y0 - med, np.nan)
    f_out = np.where(ok, (kc + np.clip(delta, -0.5, 0.5)) * df, np.nan)
    return f_out, clear


def choose_speeds(reports: Sequence[dsp.Report]) -> list[SpeedChoice]:
    """The speed each report's bearing search uses (see the module docstring)."""
    out: list[SpeedChoice | None] = [None] * len(reports)
    check: dict[tuple[int, float], list[tuple[int, float, str, float]]] = {}
    for i, r in enumerate(reports):
        rpm = r.speed.rpm
        if not rpm or not np.isfinite(rpm):
            out[i] = SpeedChoice(float("nan"), float("nan"), "unknown", "no running speed")
            continue
        fr = rpm / 60.0
        src = r.speed.source
        rated = r.asset.rated_rpm
        if src == "measured":
            out[i] = SpeedChoice(fr, SPEED_UNCERTAINTY["measured"], "measured",
                                 f"{rpm:.0f} rpm measured (tachometer)")
        elif src == "estimated":
            u = max(MIN_UNCERTAINTY, 0.5 / r.duration_s / fr)
            out[i] = SpeedChoice(fr, u, "estimated",
                                 f"{rpm:.0f} rpm from the edge's 1x line")
        else:  # given, or the rated speed the edge fell back to
            kind = "rated" if (r.quality.flags & Q_SPEED_UNCERTAIN and rated
                               and abs(rated - rpm) < 1e-6) else "given"
            sp = r.spectrum
            check.setdefault((sp.n, sp.df), []).append((i, fr, kind, rpm))
    for (_n, df), members in check.items():
        db = np.stack([reports[i].spectrum.db() for i, *_ in members])
        fr0 = np.array([fr for _, fr, _, _ in members])
        f_line, clear = _shaft_lines(db, df, fr0)
        for (i, fr, kind, rpm), fl, cl in zip(members, f_line.tolist(), clear.tolist(),
                                              strict=True):
            u = SPEED_UNCERTAINTY[kind]
            stated = f"{rpm:.0f} rpm {'rated (fallback)' if kind == 'rated' else 'given'}"
            if fl == fl and cl >= SHAFT_CLEAR_DB:
                u_line = max(MIN_UNCERTAINTY, SHAFT_LINE_ERROR * df / fl)
                if abs(fl / fr - 1) > u + u_line or (kind == "rated" and u_line < u):
                    out[i] = SpeedChoice(
                        fl, u_line, "shaft line",
                        f"{fl * 60:.0f} rpm from the shaft line ({cl:.0f} dB clear) "
                        f"over {stated}",
                    )
                    continue
            out[i] = SpeedChoice(fr, u, kind, stated)
    return [c for c in out if c is not None]
