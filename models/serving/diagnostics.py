"""Physics evidence for bearing faults, read from a report's envelope spectrum.

Theory of operation. The edge demodulates a band chosen by spectral
kurtosis, after pulling discrete shaft and blade-pass lines down to the local
floor (:func:`dsp.envelope_spectrum`), and sends the squared-envelope spectrum
(dB, ~2 Hz lines to 500 Hz). A localised defect makes impacts at its defect
rate, so its envelope spectrum shows a *family*: harmonics, and sidebands at
the modulation rate where the defect moves through the load zone.
:func:`diagnose_bearing` names the defect whose family is clear, searched as
a comb whose width follows the uncertainty of the speed and of the bearing's
kinematics; the rules, thresholds and shaft-order handling are in
:mod:`models.serving._diagnose_batch` (the serving path runs it for a whole
batch; this is the one-report view of the same code). Geometry comes from the
report's asset descriptor (first bearing), speed from
:mod:`models.serving.speed`.

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

from ._diagnose_batch import DEFECTS, diagnose_bearings

F64 = NDArray[np.float64]

__all__ = ["DEFECTS", "BearingDiagnosis", "diagnose_bearing", "fixed_band_diagnosis"]


@dataclass(frozen=True, slots=True)
class BearingDiagnosis:
    label: str | None  # one of DEFECTS, or None: no clear bearing-defect family
    scores: dict[str, float]  # family score per defect (mean log10 prominence)
    fundamentals: dict[str, float]  # strongest principal line per defect (x floor)
    frequencies_hz: dict[str, float]  # defect rate where the family was found
    evidence: list[Evidence] = field(default_factory=list)


def diagnose_bearing(report: dsp.Report) -> BearingDiagnosis:
    """Name the bearing defect whose envelope family is clear (or none), with evidence."""
    (call,) = diagnose_bearings([report])
    return BearingDiagnosis(call.label, call.scores, call.anchors, call.frequencies_hz,
                            call.evidence)


def _prominence(freqs: F64, power: F64, f: float) -> float:
    if not (0 < f < freqs[-1]):
        return float("nan")
    return float(dsp.line_prominence(freqs, power[np.newaxis, :], np.array([f]))[0])


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
