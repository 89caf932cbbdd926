"""Physics evidence for bearing faults, read from a report's envelope spectrum.

Theory of operation. The edge demodulates a band chosen per record by
spectral kurtosis, after pulling discrete shaft and blade-pass lines down to
the local floor (:func:`dsp.envelope_spectrum`), and sends the squared-
envelope spectrum (dB, ~2 Hz lines to 500 Hz). A localised defect makes
impacts at its defect frequency, so its envelope spectrum shows a *family*:
harmonics k x f_d, and for a defect that moves through the load zone,
sidebands at the modulation rate (inner race: shaft rate fr; rolling
element: cage rate FTF). For each candidate defect the evidence is the
mean log prominence (line height over the local median, as
:func:`dsp.line_prominence`) over its first ``harmonics`` harmonics, plus
for the inner race and ball the mean log prominence of the first-order
sidebands, each counted only where it stands above the floor. The defect
with the most evidence is named if its fundamental stands
``line_threshold`` x above the floor (a stated rule of thumb, not fitted);
otherwise no bearing defect is named. Geometry comes from the report's
asset descriptor (first bearing), speed from the report.

:func:`fixed_band_diagnosis` is the textbook reference the project must not
fall below: band-pass 2-5.4 kHz, Hilbert envelope, no line removal, the
single strongest fundamental wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.signal
from numpy.typing import NDArray

import dsp
from dsp.results import Evidence

F64 = NDArray[np.float64]

DEFECTS: tuple[str, ...] = ("bearing_outer", "bearing_inner", "bearing_ball")
_NAMES = {
    "bearing_outer": "outer race (BPFO)",
    "bearing_inner": "inner race (BPFI)",
    "bearing_ball": "rolling element (2xBSF)",
}


@dataclass(frozen=True, slots=True)
class BearingDiagnosis:
    label: str | None  # one of DEFECTS, or None: no bearing defect line
    scores: dict[str, float]  # evidence per defect (mean log10 prominence over the family)
    fundamentals: dict[str, float]  # prominence of each defect's fundamental
    frequencies_hz: dict[str, float]
    evidence: list[Evidence] = field(default_factory=list)


def defect_frequencies(report: dsp.Report) -> dict[str, float] | None:
    """Defect frequencies (Hz) of the report's first bearing at the report's speed."""
    if not report.asset.bearings or not report.speed.rpm:
        return None
    b = report.asset.bearings[0]
    try:
        o = dsp.bearing_orders(b.n_balls, b.ball_d_mm, b.pitch_d_mm, b.contact_deg)
    except ValueError:  # impossible geometry from a device: no bearing evidence, no crash
        return None
    fr = report.speed.rpm / 60.0
    return {
        "fr": fr,
        "ftf": o["ftf"] * fr,
        "bearing_outer": o["bpfo"] * fr,
        "bearing_inner": o["bpfi"] * fr,
        "bearing_ball": 2 * o["bsf"] * fr,
    }


def _prominence(freqs: F64, power: F64, f: float) -> float:
    if not (0 < f < freqs[-1]):
        return float("nan")
    return float(dsp.line_prominence(freqs, power[np.newaxis, :], np.array([f]))[0])


def family_scores(
    freqs: F64, power: F64, fd: dict[str, float], *, harmonics: int = 3
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """(evidence score, fundamental prominence, lit harmonics) per defect."""
    scores: dict[str, float] = {}
    fund: dict[str, float] = {}
    lit: dict[str, int] = {}
    mod = {"bearing_inner": fd["fr"], "bearing_ball": fd["ftf"]}
    for d in DEFECTS:
        f0 = fd[d]
        proms = [_prominence(freqs, power, k * f0) for k in range(1, harmonics + 1)]
        proms = [p for p in proms if np.isfinite(p)]
        fund[d] = proms[0] if proms else float("nan")
        logs = [max(np.log10(p), 0.0) for p in proms]
        s = float(np.mean(logs)) if logs else 0.0
        if d in mod:
            sb = [_prominence(freqs, power, f0 + sgn * mod[d]) for sgn in (-1.0, 1.0)]
            sb_logs = [max(np.log10(p), 0.0) for p in sb if np.isfinite(p)]
            if sb_logs:
                s = 0.75 * s + 0.25 * float(np.mean(sb_logs))
        scores[d] = s
        lit[d] = sum(1 for p in proms if p >= 3.0)
    return scores, fund, lit


def diagnose_bearing(
    report: dsp.Report, *, line_threshold: float = 3.0, harmonics: int = 3
) -> BearingDiagnosis:
    """Name the bearing defect whose envelope family stands out most (or none)."""
    fd = defect_frequencies(report)
    env = report.envelope
    if fd is None or env is None or env.n < 16 or not all(np.isfinite(list(fd.values()))):
        return BearingDiagnosis(None, {}, {}, {})
    freqs = env.freqs()
    power = np.power(10.0, env.db() / 10.0)
    scores, fund, lit = family_scores(freqs, power, fd, harmonics=harmonics)
    best = max(DEFECTS, key=lambda d: scores[d])
    label = best if fund.get(best, 0.0) >= line_threshold else None
    ev: list[Evidence] = []
    for d in sorted(DEFECTS, key=lambda d: -scores[d]):
        p = fund[d]
        if np.isfinite(p) and p >= line_threshold:
            ev.append(
                Evidence(
                    f"env_family:{d}", round(scores[d], 3),
                    f"{_NAMES[d]} {fd[d]:.1f} Hz: line {p:.1f}x floor, {lit[d]}/{harmonics} "
                    f"harmonics lit (band {report.envelope_band})",
                )
            )
    freqs_out = {d: round(fd[d], 2) for d in DEFECTS}
    return BearingDiagnosis(label, scores, fund, freqs_out, ev)


def fixed_band_diagnosis(
    x: NDArray[np.floating],
    fs: float,
    *,
    rpm: float,
    orders: dict[str, float],
    band: tuple[float, float] = (2000.0, 5400.0),
    fmax: float = 500.0,
) -> str:
    """The plain reference method: fixed band-pass, Hilbert envelope, strongest fundamental.

    ``orders`` as from :func:`dsp.bearing_orders`. Returns one of :data:`DEFECTS`.
    """
    a: F64 = np.asarray(x, dtype=np.float64)
    sos = scipy.signal.butter(4, band, btype="bandpass", fs=fs, output="sos")
    y = scipy.signal.sosfiltfilt(sos, a)
    env = np.abs(scipy.signal.hilbert(y))
    env = env - env.mean()
    w = np.hanning(env.size)
    spec = (np.abs(np.fft.rfft(env * w)) ** 2).astype(np.float64)
    freqs = np.fft.rfftfreq(env.size, 1.0 / fs).astype(np.float64)
    keep = freqs <= fmax + 20.0
    freqs, spec = freqs[keep], spec[keep]
    fr = rpm / 60.0
    targets = {
        "bearing_outer": orders["bpfo"] * fr,
        "bearing_inner": orders["bpfi"] * fr,
        "bearing_ball": 2 * orders["bsf"] * fr,
    }
    proms = {d: _prominence(freqs, spec, f) for d, f in targets.items()}
    return max(DEFECTS, key=lambda d: np.nan_to_num(proms[d], nan=0.0))
