"""Envelope analysis for bearing diagnostics.

Theory of operation
-------------------
Bearing defects excite structural resonances with a train of impacts; the
impacts repeat at a defect frequency (BPFO, BPFI, BSF, FTF), so the *envelope*
of the resonance band carries those frequencies while the plain spectrum
shows little. Because every pump rings at its own resonances, the band is not
fixed: it is chosen per record as the band whose complex envelope is most
impulsive (spectral kurtosis over a dyadic tree of bands with half-band
shifts, a fast-kurtogram variant computed in the frequency domain).

Before that, discrete lines (shaft harmonics, blade pass) are pulled down to
the local spectral floor, keeping their phase: they would otherwise dominate
both the band choice and the envelope. Unlike full cepstral pre-whitening
(``X / |X|``), this keeps the resonance standing above the noise floor, so
the band search still sees where the impacts ring. The envelope
spectrum returned is that of the squared envelope, normalised by its mean,
so it is dimensionless (modulation depth) and comparable across machines.

Everything is vectorized across channels: one rFFT of the record per channel,
then per candidate band a small inverse FFT over the band's bins only
(critically sampled complex baseband), so cost grows with the number of
tree levels, not with the number of bands.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from ._validate import check_band, check_fs
from .features import as_channels

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class EnvelopeResult:
    freqs: F64  # (lines,) Hz, resolution fs/n
    spectrum: F64  # (channels, lines) squared-envelope spectrum / mean, dimensionless
    band: F64  # (channels, 2) demodulation band used, Hz
    kurtosis: F64  # (channels,) spectral kurtosis of the chosen band


def _candidate_bands(fs: float, n: int, min_bw: float, f_floor: float) -> list[tuple[int, int]]:
    """Dyadic bands with half-band shifts, as rFFT bin ranges [k0, k1)."""
    # Search up to Fmax = fs / 2.56, the flat part of a sensor's anti-alias filter.
    top = int(n / 2.56)
    floor_bin = max(1, int(np.ceil(f_floor * n / fs)))
    bands: list[tuple[int, int]] = []
    width = top // 2
    while width * fs / n >= min_bw and width >= 8:
        start = 0
        while start + width <= top:
            k0 = max(start, floor_bin)
            if start + width - k0 >= width // 2:
                bands.append((k0, start + width))
            start += width // 2
        width //= 2
    if not bands:
        bands.append((floor_bin, top))
    return bands


def _band_signal(
    spec: NDArray[np.complexfloating], k0: int, k1: int, m: int
) -> NDArray[np.complexfloating]:
    """Complex baseband of rFFT bins [k0, k1), sampled with ``m`` points per record."""
    xb = np.zeros((spec.shape[0], m), dtype=spec.dtype)
    xb[:, : k1 - k0] = spec[:, k0:k1]
    return scipy.fft.ifft(xb, axis=-1)


def envelope_spectrum(
    x: NDArray[np.floating],
    fs: float,
    *,
    band: tuple[float, float] | None = None,
    fmax: float = 500.0,
    remove_lines: bool = True,
    min_bandwidth: float | None = None,
    f_floor: float = 10.0,
) -> EnvelopeResult:
    """Squared-envelope spectrum up to ``fmax`` Hz at the record's full resolution.

    ``band=None`` selects the demodulation band per channel by spectral
    kurtosis; a ``(low, high)`` pair in Hz fixes it for every channel.
    """
    a = as_channels(x)
    fs = check_fs(fs)
    n = a.shape[-1]
    if not 0 < fmax < fs / 2:
        raise ValueError(f"fmax must be in (0, fs/2 = {fs / 2}) Hz, got {fmax=}")
    centered = a - a.mean(axis=-1, keepdims=True, dtype=np.float64).astype(a.dtype)
    # A short taper keeps the record's wrap-around step from posing as an impact.
    spec = scipy.fft.rfft(centered * _taper(n, a.dtype.str), axis=-1)
    if remove_lines:
        spec = _clip_lines(spec)
    ch = a.shape[0]
    bands_used = np.zeros((ch, 2))
    kurt = np.zeros(ch)
    if band is not None:
        lo, hi = check_band(band, fs)
        k0, k1 = max(1, int(np.ceil(lo * n / fs))), int(np.floor(hi * n / fs)) + 1
        choice = [(k0, k1)] * ch
        z = _band_signal(spec, k0, k1, k1 - k0)
        e = np.abs(z) ** 2
        kurt[:] = _sk(e)
    else:
        # A band narrower than 2*fmax cannot carry envelope content (both sidebands) up to fmax.
        min_bw = min_bandwidth if min_bandwidth is not None else 2.0 * fmax
        best = np.full(ch, -np.inf)
        choice = [(0, 0)] * ch
        for k0, k1 in _candidate_bands(fs, n, min_bw, f_floor):
            z = _band_signal(spec, k0, k1, k1 - k0)
            sk = _sk(np.abs(z) ** 2)
            better = sk > best
            best = np.where(better, sk, best)
            for c in np.flatnonzero(better):
                choice[c] = (k0, k1)
        kurt[:] = best
    n_lines = int(fmax * n / fs) + 1
    out = np.zeros((ch, n_lines))
    for k0, k1 in set(choice):
        rows = [c for c in range(ch) if choice[c] == (k0, k1)]
        m = scipy.fft.next_fast_len(max(2 * (k1 - k0), 2 * n_lines + 2))
        z = _band_signal(spec[rows], k0, k1, m)
        e = (z.real**2 + z.imag**2).astype(np.float64)
        mean = e.mean(axis=-1, keepdims=True)
        se = scipy.fft.rfft(e - mean, axis=-1)[:, :n_lines]
        out[rows] = 2.0 * np.abs(se) / (m * np.maximum(mean, 1e-300))
        bands_used[rows] = (k0 * fs / n, k1 * fs / n)
    freqs = np.arange(n_lines) * fs / n
    return EnvelopeResult(freqs, out, bands_used, kurt)


@lru_cache(maxsize=8)
def _taper(n: int, dtype: str) -> NDArray[np.floating]:
    # Tukey (tapered cosine), 5 % raised-cosine ramps at each end.
    ramp = max(1, int(0.05 * n))
    w = np.ones(n)
    edge = 0.5 * (1.0 - np.cos(np.pi * np.arange(ramp) / ramp))
    w[:ramp] = edge
    w[n - ramp :] = edge[::-1]
    w = w.astype(dtype)
    w.setflags(write=False)
    return w


def _clip_lines(
    spec: NDArray[np.complexfloating], *, span: int = 64, factor: float = 2.0
) -> NDArray[np.complexfloating]:
    """Pull discrete lines down to ``factor`` x the local median magnitude, keeping phase.

    Shaft harmonics, blade pass and other deterministic lines dominate a band's
    envelope; bearing impacts (with their natural jitter) form a continuous
    spectrum and pass untouched. The local median is taken over blocks of
    ``span`` bins, which narrow lines cannot move.
    """
    mag = np.abs(spec)
    ch, nb = mag.shape
    full = nb // span
    med = np.median(mag[:, : full * span].reshape(ch, full, span), axis=-1)
    if nb > full * span:  # the short last block gets its own median
        med = np.concatenate([med, np.median(mag[:, full * span :], axis=-1)[:, None]], axis=1)
    floor = np.repeat(med, span, axis=-1)[:, :nb]
    limit = factor * floor
    scale = np.where(mag > limit, limit / np.maximum(mag, np.finfo(mag.dtype).tiny), 1.0)
    return spec * scale.astype(mag.dtype)


def _sk(e: NDArray[np.floating]) -> F64:
    """Spectral kurtosis of a complex envelope from its squared magnitude ``e = |z|^2``.

    E|z|^4 / (E|z|^2)^2 - 2: zero for stationary Gaussian noise, large for impacts.
    """
    e64 = e.astype(np.float64)
    m1 = e64.mean(axis=-1)
    m2 = np.einsum("ij,ij->i", e64, e64) / e64.shape[-1]
    return np.where(m1 > 0, m2 / np.maximum(m1 * m1, 1e-300) - 2.0, 0.0)


def line_prominence(
    freqs: F64, spectrum: F64, f: F64, *, tol: float = 0.01, span: float = 0.15
) -> F64:
    """Envelope line height at ``f`` over the median level around it (per channel).

    The height is the maximum within ``max(1 bin, tol*f)`` of ``f`` (speed is
    never known exactly); the reference is the median over ``f +- max(10 bins,
    span*f)``. About 1 where there is no line; NaN where ``f`` is unknown or
    out of range.
    """
    df = float(freqs[1] - freqs[0])
    nl = spectrum.shape[-1]
    fc = np.asarray(f, dtype=np.float64)
    ok = np.isfinite(fc) & (fc > 0)
    fc = np.where(ok, fc, 1.0)
    w = np.maximum(df, tol * fc)
    ref = np.maximum(10 * df, span * fc)
    ok &= fc + w <= freqs[-1]
    k0 = np.floor((fc - w) / df).astype(np.intp)
    k1 = np.ceil((fc + w) / df).astype(np.intp) + 1
    r0 = np.maximum(1, ((fc - ref) / df).astype(np.intp))
    r1 = np.minimum(nl, ((fc + ref) / df).astype(np.intp) + 1)
    rows = np.arange(spectrum.shape[0])[:, None]
    # Heights: max over [k0, k1); references: median over [r0, r1), both vectorized by
    # padding each row's window (NaN sorts last, so the median index stays exact).
    hl = int(max(1, (k1 - k0)[ok].max(initial=1)))
    hidx = k0[:, None] + np.arange(hl)
    hvals = np.where(hidx < k1[:, None], spectrum[rows, np.clip(hidx, 0, nl - 1)], -np.inf)
    height = hvals.max(axis=-1)
    rl = int(max(1, (r1 - r0)[ok].max(initial=1)))
    ridx = r0[:, None] + np.arange(rl)
    rvals = np.where(ridx < r1[:, None], spectrum[rows, np.clip(ridx, 0, nl - 1)], np.nan)
    rvals.sort(axis=-1)
    count = np.maximum(1, r1 - r0)
    lo_mid = rvals[rows[:, 0], np.clip((count - 1) // 2, 0, rl - 1)]
    hi_mid = rvals[rows[:, 0], np.clip(count // 2, 0, rl - 1)]
    med = 0.5 * (lo_mid + hi_mid)
    good = ok & (med > 0)
    return np.where(good, height / np.where(good, med, 1.0), np.nan)
