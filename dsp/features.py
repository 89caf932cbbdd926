"""Scalar vibration features per channel.

All functions take ``x`` shaped ``(channels, samples)`` in m/s^2 and return
arrays shaped ``(channels,)``. Velocity figures are RMS in mm/s.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from ._validate import check_band, check_fs

F64 = NDArray[np.float64]


def as_channels(x: NDArray[np.floating]) -> NDArray[np.floating]:
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[np.newaxis, :]
    if a.ndim != 2:
        raise ValueError(f"x must have shape (channels, samples), got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def moments(x: NDArray[np.floating]) -> dict[str, F64]:
    """RMS, peak, crest factor, kurtosis (Pearson: 3 for Gaussian) and skewness.

    Central moments are accumulated in float64 from a float32-or-better copy,
    one pass per power; constant channels give kurtosis 3, skewness 0, crest 0.
    """
    a = as_channels(x)
    n = a.shape[-1]
    mean = a.mean(axis=-1, dtype=np.float64)
    d = a - mean.astype(a.dtype)[:, None]
    d2 = d * d
    m2 = np.einsum("ij,ij->i", d, d, dtype=np.float64) / n
    m3 = np.einsum("ij,ij->i", d2, d, dtype=np.float64) / n
    m4 = np.einsum("ij,ij->i", d2, d2, dtype=np.float64) / n
    rms = np.sqrt(m2 + mean * mean)
    peak = np.abs(a).max(axis=-1).astype(np.float64)
    live = m2 > 0
    safe = np.where(live, m2, 1.0)
    kurt = np.where(live, m4 / (safe * safe), 3.0)
    skew = np.where(live, m3 / safe**1.5, 0.0)
    crest = np.where(rms > 0, peak / np.where(rms > 0, rms, 1.0), 0.0)
    return {"rms": rms, "peak": peak, "crest": crest, "kurtosis": kurt, "skewness": skew}


@lru_cache(maxsize=16)
def _hann(n: int, dtype: str) -> NDArray[np.floating]:
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(dtype)
    w.setflags(write=False)
    return w


class LineSpectrum:
    """Hann-windowed spectrum of a whole interval: fine resolution (1/T Hz).

    Used for velocity (frequency-domain integration needs bins much narrower
    than the 1x line at low speeds), running speed and order amplitudes.
    ``power[k]`` is the one-sided mean-square contribution of bin k, so
    ``power.sum(-1)`` is the (windowed) mean square of the signal.
    """

    def __init__(self, x: NDArray[np.floating], fs: float) -> None:
        a = as_channels(x)
        self.fs = check_fs(fs)
        self.n = a.shape[-1]
        w = _hann(self.n, a.dtype.str)
        centered = a - a.mean(axis=-1, keepdims=True, dtype=np.float64).astype(a.dtype)
        spec = scipy.fft.rfft(centered * w, axis=-1)
        re_im = spec.view(a.dtype).reshape(*spec.shape, 2)
        p = np.einsum("...k,...k->...", re_im, re_im).astype(np.float64)
        p *= 2.0 / (self.n * float(np.dot(w.astype(np.float64), w)))
        p[..., 0] *= 0.5
        self.power = p  # (channels, n//2+1), (m/s^2)^2 per bin
        self.df = self.fs / self.n
        self.freqs = np.arange(p.shape[-1]) * self.df

    def velocity_power(self) -> F64:
        """Mean-square velocity per bin in (mm/s)^2 (bin 0 zeroed)."""
        w = 2.0 * np.pi * self.freqs
        w[0] = np.inf
        return self.power * (1e6 / (w * w))

    def band_rms(self, band: tuple[float, float], *, velocity: bool) -> F64:
        lo, hi = check_band(band, self.fs)
        sel = (self.freqs >= lo) & (self.freqs <= hi)
        p = self.velocity_power() if velocity else self.power
        return np.sqrt(p[:, sel].sum(axis=-1))

    def peak_in(self, f_lo: F64, f_hi: F64) -> F64:
        """Interpolated frequency (Hz) of the largest bin in [f_lo, f_hi] per channel."""
        lo = np.clip(np.ceil(f_lo / self.df).astype(int), 1, self.power.shape[-1] - 2)
        hi = np.clip(np.floor(f_hi / self.df).astype(int), 1, self.power.shape[-1] - 2)
        out = np.full(self.power.shape[0], np.nan)
        for c in range(self.power.shape[0]):
            if hi[c] < lo[c]:
                continue
            seg = self.power[c, lo[c] : hi[c] + 1]
            k = lo[c] + int(np.argmax(seg))
            # Parabolic interpolation on log power: near exact for a Hann main lobe.
            a, b, g = np.log(self.power[c, k - 1 : k + 2] + 1e-300)
            den = a - 2 * b + g
            delta = 0.5 * (a - g) / den if den < 0 else 0.0
            out[c] = (k + float(np.clip(delta, -0.5, 0.5))) * self.df
        return out

    def line_rms(self, f: F64, *, velocity: bool, half_width_bins: int = 2) -> F64:
        """RMS of the line at frequency ``f`` (per channel; NaN where f is NaN)."""
        p = self.velocity_power() if velocity else self.power
        out = np.full(p.shape[0], np.nan)
        nb = p.shape[-1]
        for c in range(p.shape[0]):
            if not np.isfinite(f[c]) or f[c] <= 0 or f[c] >= self.fs / 2:
                continue
            k = round(f[c] / self.df)
            lo, hi = max(k - half_width_bins, 1), min(k + half_width_bins + 1, nb)
            out[c] = float(np.sqrt(p[c, lo:hi].sum()))
        return out


def velocity_rms(
    x: NDArray[np.floating], fs: float, *, band: tuple[float, float] = (10.0, 1000.0)
) -> F64:
    """ISO 20816 broadband velocity RMS (mm/s) in ``band`` (Hz), per channel.

    Frequency-domain integration of the Hann-windowed spectrum of the whole
    record: each bin's mean-square acceleration divided by (2 pi f)^2.
    """
    fs = check_fs(fs)
    check_band(band, fs)
    return LineSpectrum(x, fs).band_rms(band, velocity=True)


def psd_band_rms(
    freqs: F64, psd: NDArray[np.floating], bands: list[tuple[float, float]], fs: float
) -> F64:
    """RMS in each band from a PSD: ``(channels, len(bands))``, unit of the signal."""
    df = float(freqs[1] - freqs[0])
    out = np.empty((psd.shape[0], len(bands)))
    for j, band in enumerate(bands):
        lo, hi = check_band(band, fs, name=f"bands[{j}]")
        sel = (freqs >= lo) & (freqs < hi)
        out[:, j] = np.sqrt(psd[:, sel].sum(axis=-1, dtype=np.float64) * df)
    return out


ISO_ZONE_LIMITS: dict[tuple[int, str], tuple[float, float, float]] = {
    # ISO 20816-3 (10816-3) A/B, B/C, C/D boundaries in mm/s RMS, 10-1000 Hz.
    (1, "rigid"): (2.3, 4.5, 7.1),
    (1, "flexible"): (3.5, 7.1, 11.0),
    (2, "rigid"): (1.4, 2.8, 4.5),
    (2, "flexible"): (2.3, 4.5, 7.1),
}


def iso_zone(velocity_mm_s: float, limits: tuple[float, float, float]) -> str:
    """ISO 20816 evaluation zone A..D for a velocity RMS and (A/B, B/C, C/D) limits."""
    if not np.isfinite(velocity_mm_s):
        return "?"
    ab, bc, cd = limits
    if velocity_mm_s < ab:
        return "A"
    if velocity_mm_s < bc:
        return "B"
    if velocity_mm_s < cd:
        return "C"
    return "D"


def bearing_orders(
    n_balls: int, ball_d: float, pitch_d: float, contact_deg: float = 0.0
) -> dict[str, float]:
    """Bearing defect frequencies as multiples of shaft speed (orders).

    FTF = 1/2 (1 - d/D cos phi); BPFO = n/2 (1 - d/D cos phi);
    BPFI = n/2 (1 + d/D cos phi); BSF = D/(2d) (1 - (d/D cos phi)^2).
    """
    if n_balls < 3 or not (0 < ball_d < pitch_d):
        raise ValueError(
            f"bearing geometry needs n_balls >= 3 and 0 < ball_d < pitch_d, got "
            f"{n_balls=}, {ball_d=}, {pitch_d=}"
        )
    r = ball_d / pitch_d * float(np.cos(np.radians(contact_deg)))
    return {
        "bpfo": n_balls / 2 * (1 - r),
        "bpfi": n_balls / 2 * (1 + r),
        "bsf": pitch_d / (2 * ball_d) * (1 - r * r),
        "ftf": 0.5 * (1 - r),
    }
