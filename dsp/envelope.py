"""Envelope analysis for bearing diagnostics.

Theory of operation
-------------------
Bearing defects excite structural resonances with a train of impacts; the
impacts repeat at a defect frequency (BPFO, BPFI, BSF, FTF), so the *envelope*
of the resonance band carries those frequencies while the plain spectrum
shows little. Because every pump rings at its own resonances, the band is not
fixed: it is the band whose complex envelope is most impulsive (spectral
kurtosis over a dyadic tree of bands with half-band shifts, a fast-kurtogram
variant computed in the frequency domain), judged over many reports rather
than one: :mod:`dsp.bandtrack` keeps each channel's band across the reports
of a stream and re-selects it when the evidence changes, so the full search
runs on few report intervals. The kurtosis that drives the choice leaves out
the taper's ramps at the record's ends (see ``_inner``).

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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from ._validate import check_band, check_fs
from .bandtrack import BandState, BandTracking
from .features import as_channels

F64 = NDArray[np.float64]
DEFAULT_TRACKING = BandTracking()


@dataclass(frozen=True, slots=True)
class EnvelopeResult:
    freqs: F64  # (lines,) Hz, resolution fs/n
    spectrum: F64  # (channels, lines) squared-envelope spectrum / mean, dimensionless
    band: F64  # (channels, 2) demodulation band used, Hz
    kurtosis: F64  # (channels,) spectral kurtosis of the band used (whole record)
    # per channel, for the next report's call (None: the band was fixed by the caller)
    state: tuple[BandState, ...] | None = None
    searched: NDArray[np.bool_] | None = None  # (channels,) the candidate search ran


@lru_cache(maxsize=32)
def _candidate_bands(
    fs: float, n: int, min_bw: float, f_floor: float
) -> tuple[tuple[int, int], ...]:
    """Dyadic bands with half-band shifts, as rFFT bin ranges [k0, k1).

    Everything is in Hz through ``fs / n``, so the tree covers the same
    frequencies at any sample rate: up to Fmax = fs / 2.56 (the flat part of a
    sensor's anti-alias filter), from ``f_floor`` up, no band narrower than
    ``min_bw``; a higher rate only adds levels of wider bands at the top.
    """
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
    return tuple(bands)


def envelope_spectrum(
    x: NDArray[np.floating],
    fs: float,
    *,
    band: tuple[float, float] | None = None,
    fmax: float = 500.0,
    remove_lines: bool = True,
    min_bandwidth: float | None = None,
    f_floor: float = 10.0,
    state: Sequence[BandState | None] | None = None,
    tracking: BandTracking = DEFAULT_TRACKING,
) -> EnvelopeResult:
    """Squared-envelope spectrum up to ``fmax`` Hz at the record's full resolution.

    ``band=None`` chooses the demodulation band per channel by spectral
    kurtosis, tracked across reports (:mod:`dsp.bandtrack`): ``state`` holds
    each channel's :class:`~dsp.bandtrack.BandState` from the previous report
    of its stream (``None`` for all or some channels: a fresh start, which
    searches every candidate and takes the most impulsive), and the result's
    ``state`` is what to pass with the next report. A ``(low, high)`` pair in
    Hz fixes the band for every channel (no state).
    """
    a = as_channels(x)
    fs = check_fs(fs)
    n = a.shape[-1]
    if not 0 < fmax < fs / 2:
        raise ValueError(f"fmax must be in (0, fs/2 = {fs / 2}) Hz, got {fmax=}")
    ch = a.shape[0]
    centered = a - a.mean(axis=-1, keepdims=True, dtype=np.float64).astype(a.dtype)
    # A short taper keeps the record's wrap-around step from posing as an impact.
    spec = scipy.fft.rfft(centered * _taper(n, a.dtype.str), axis=-1)
    if remove_lines:
        spec = _clip_lines(spec, overwrite=True)  # our own rFFT output
    n_lines = int(fmax * n / fs) + 1
    freqs = np.arange(n_lines) * fs / n
    if band is not None:
        lo, hi = check_band(band, fs)
        k0, k1 = max(1, int(np.ceil(lo * n / fs))), int(np.floor(hi * n / fs)) + 1
        env = _Envelopes(spec, [(k0, k1)] * ch, n_lines, fs, n)
        return EnvelopeResult(freqs, env.spectrum, env.band, env.kurtosis)

    # A band narrower than 2*fmax cannot carry envelope content (both sidebands) up to fmax.
    min_bw = min_bandwidth if min_bandwidth is not None else 2.0 * fmax
    key = (fs, n, float(min_bw), float(f_floor))
    cands = _candidate_bands(*key)
    prev: list[BandState | None] = [None] * ch if state is None else list(state)
    if len(prev) != ch:
        raise ValueError(f"state must hold one entry per channel ({ch}), got {len(prev)}")
    for c, s in enumerate(prev):
        if s is not None and s.key != key:
            raise ValueError(
                f"state[{c}] was tracked for (fs, n, min_bw, f_floor) = {s.key}, this record "
                f"is {key}: pass None after a rate or interval change"
            )
    # fresh channels search now (rule 1); the others start from their band in use
    cur: list[BandState] = []
    searched = np.zeros(ch, dtype=bool)
    fresh = [c for c, s in enumerate(prev) if s is None]
    started = dict(zip(fresh, _search(spec[fresh], cands, n), strict=True)) if fresh else {}
    for c, s in enumerate(prev):
        cur.append(BandState.start(key, started[c]) if s is None else s)
    searched[fresh] = True
    env = _Envelopes(spec, [cands[s.band] for s in cur], n_lines, fs, n)
    due = [
        c for c, s in enumerate(prev)
        if s is not None and s.wants_search(float(env.sk_inner[c]), tracking)
    ]
    if due:
        moved = []
        for c, sk in zip(due, _search(spec[due], cands, n), strict=True):
            s = cur[c].searched(sk, tracking)
            if s.band != cur[c].band:
                moved.append(c)
            cur[c] = s
        searched[due] = True
        if moved:  # the band switched: this report is demodulated in the new band
            env.redo(spec, moved, [cands[cur[c].band] for c in moved])
    states = tuple(s if searched[c] else s.quiet() for c, s in enumerate(cur))
    return EnvelopeResult(freqs, env.spectrum, env.band, env.kurtosis, states, searched)


def _search(
    spec: NDArray[np.complexfloating], cands: tuple[tuple[int, int], ...], n: int
) -> F64:
    """Spectral kurtosis of every candidate band for each row: ``(rows, candidates)``.

    Each band's complex envelope is critically sampled (one point per bin), the
    cheapest form that still shows impacts; the taper's ramps are left out. One
    band at a time: batching a whole tree level measured no faster here and holds
    several times the memory.
    """
    out = np.empty((spec.shape[0], len(cands)))
    for j, (k0, k1) in enumerate(cands):
        z = scipy.fft.ifft(spec[:, k0:k1], axis=-1)
        out[:, j] = _sk(_inner(z.real**2 + z.imag**2, n))
    return out


class _Envelopes:
    """Squared-envelope spectra of each channel's band, batched by band width."""

    def __init__(
        self,
        spec: NDArray[np.complexfloating],
        bands: list[tuple[int, int]],
        n_lines: int,
        fs: float,
        n: int,
    ) -> None:
        ch = spec.shape[0]
        self.fs, self.n, self.n_lines = fs, n, n_lines
        self.spectrum = np.zeros((ch, n_lines))
        self.band = np.zeros((ch, 2))
        self.kurtosis = np.zeros(ch)
        self.sk_inner = np.zeros(ch)  # the tracker's statistic: SK without the taper's ramps
        self.redo(spec, list(range(ch)), bands)

    def redo(
        self, spec: NDArray[np.complexfloating], rows: list[int], bands: list[tuple[int, int]]
    ) -> None:
        # Bands of one width share their transform sizes: one batched FFT per width, each
        # row's bins gathered from its own band (tracked channels rarely share a band).
        groups: dict[int, list[tuple[int, int]]] = {}
        for r, (k0, k1) in zip(rows, bands, strict=True):
            groups.setdefault(k1 - k0, []).append((r, k0))
        for w, members in groups.items():
            idx = np.array([r for r, _ in members], dtype=np.intp)
            k0s = np.array([k for _, k in members], dtype=np.intp)
            bins = spec[idx[:, None], k0s[:, None] + np.arange(w)]
            m = scipy.fft.next_fast_len(max(2 * w, 2 * self.n_lines + 2))
            z = scipy.fft.ifft(bins, n=m, axis=-1)  # zero-padded: the oversampled baseband
            # in the record's precision (float32 for the agent): no float64 copy, and the
            # rFFT below runs at single precision
            e = z.real * z.real
            e += z.imag * z.imag
            mean = e.mean(axis=-1, keepdims=True, dtype=np.float64)
            e -= mean.astype(e.dtype)
            se = scipy.fft.rfft(e, axis=-1)[:, : self.n_lines]
            self.spectrum[idx] = 2.0 * np.abs(se) / (m * np.maximum(mean, 1e-300))
            self.band[idx, 0] = k0s * self.fs / self.n
            self.band[idx, 1] = (k0s + w) * self.fs / self.n
            # SK from the critically sampled envelope, the estimator the search uses: the
            # oversampled one above sees more of each impact's peak and reads ~10 % higher
            zc = scipy.fft.ifft(bins, axis=-1)
            ec = zc.real**2 + zc.imag**2
            self.kurtosis[idx] = _sk(ec)
            self.sk_inner[idx] = _sk(_inner(ec, self.n))


def _inner(e: NDArray[np.floating], n: int) -> NDArray[np.floating]:
    """``e`` (m points spanning the record) without the taper's ramps at both ends.

    The ramps modulate every band's envelope (a +0.11 SK bias on Gaussian noise)
    and, in the lowest bands, turn the leakage skirts of strong shaft lines into
    a burst at each end of the record that would pose as the most impulsive band.
    """
    m = e.shape[-1]
    cut = int(np.ceil(_ramp(n) / n * m)) + 2
    return e[..., cut : m - cut] if m > 4 * cut else e


def _ramp(n: int) -> int:
    return max(1, int(0.05 * n))


@lru_cache(maxsize=8)
def _taper(n: int, dtype: str) -> NDArray[np.floating]:
    # Tukey (tapered cosine), 5 % raised-cosine ramps at each end.
    ramp = _ramp(n)
    w = np.ones(n)
    edge = 0.5 * (1.0 - np.cos(np.pi * np.arange(ramp) / ramp))
    w[:ramp] = edge
    w[n - ramp :] = edge[::-1]
    w = w.astype(dtype)
    w.setflags(write=False)
    return w


def _clip_lines(
    spec: NDArray[np.complexfloating], *, span: int = 64, factor: float = 2.0,
    overwrite: bool = False,
) -> NDArray[np.complexfloating]:
    """Pull discrete lines down to ``factor`` x the local median magnitude, keeping phase.

    Shaft harmonics, blade pass and other deterministic lines dominate a band's
    envelope; bearing impacts (with their natural jitter) form a continuous
    spectrum and pass untouched. The local median is taken over blocks of
    ``span`` bins, which narrow lines cannot move.

    Computed on the power ``|X|^2`` in the spectrum's precision (float32 for the
    agent's records): one partial selection per block finds the lower middle
    value and the upper one is the minimum above it, so the median of the
    magnitudes is exact (``sqrt`` is monotonic) without ``np.median``'s two-pivot
    selection, magnitudes of every bin, or a repeated per-bin floor array.
    ``overwrite``: scale ``spec`` itself (the caller's own temporary).
    """
    ch, nb = spec.shape
    power = spec.real * spec.real
    power += spec.imag * spec.imag
    out = spec if overwrite else spec.copy()
    full = nb // span
    # row slices of C-ordered arrays reshape as views: the scaling lands in ``out``
    _clip_blocks(power[:, : full * span].reshape(ch, full, span),
                 out[:, : full * span].reshape(ch, full, span), factor)
    if nb > full * span:  # the short last block gets its own median
        _clip_blocks(power[:, full * span :], out[:, full * span :], factor)
    return out


def _clip_blocks(
    power: NDArray[np.floating], out: NDArray[np.complexfloating], factor: float
) -> None:
    """Scale ``out`` (last axis: one block) where ``power`` exceeds ``(factor*median)^2``."""
    m = power.shape[-1]
    h = (m - 1) // 2
    part = np.partition(power, h, axis=-1)
    med = np.sqrt(part[..., h])
    if m % 2 == 0:
        med += np.sqrt(part[..., h + 1 :].min(axis=-1))
        med *= 0.5
    lim2 = med * med
    lim2 *= factor * factor
    # dense: about 6 % of a noise floor's bins exceed twice the median (Rayleigh), too
    # many for gathering them to beat one pass over the block
    s = lim2[..., None] / np.maximum(power, np.finfo(power.dtype).tiny)
    np.minimum(s, 1.0, out=s)
    np.sqrt(s, out=s)
    out *= s


def _sk(e: NDArray[np.floating]) -> F64:
    """Spectral kurtosis of a complex envelope from its squared magnitude ``e = |z|^2``
    (last axis): E|z|^4 / (E|z|^2)^2 - 2, zero for stationary Gaussian noise, large for
    impacts.

    In ``e``'s precision, no float64 copy: the sums are BLAS dot products (blocked
    accumulation keeps float32 within ~1e-6 relative over a record's bins, far inside
    the band tracker's 20 % margin), the ratio in float64."""
    n = e.shape[-1]
    ones = np.ones(n, dtype=e.dtype)
    m1 = np.vecdot(e, ones).astype(np.float64) / n
    m2 = np.vecdot(e, e).astype(np.float64) / n
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
