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
from .features import as_channels, ones_vector, record_ramp, tapered_rfft

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
    mean: NDArray[np.floating] | None = None,
    spectrum: NDArray[np.complexfloating] | None = None,
) -> EnvelopeResult:
    """Squared-envelope spectrum up to ``fmax`` Hz at the record's full resolution.

    ``band=None`` chooses the demodulation band per channel by spectral
    kurtosis, tracked across reports (:mod:`dsp.bandtrack`): ``state`` holds
    each channel's :class:`~dsp.bandtrack.BandState` from the previous report
    of its stream (``None`` for all or some channels: a fresh start, which
    searches every candidate and takes the most impulsive), and the result's
    ``state`` is what to pass with the next report. A ``(low, high)`` pair in
    Hz fixes the band for every channel (no state). ``mean``: each channel's mean
    (``(channels,)``), when the caller has it already (as :func:`dsp.analyze` does).
    ``spectrum``: :func:`dsp.features.tapered_rfft` of ``x``, when the caller has it
    (:func:`dsp.analyze` shares it with the line spectrum); it is taken over (its
    lines are clipped in place).
    """
    a = as_channels(x)
    fs = check_fs(fs)
    n = a.shape[-1]
    if not 0 < fmax < fs / 2:
        raise ValueError(f"fmax must be in (0, fs/2 = {fs / 2}) Hz, got {fmax=}")
    ch = a.shape[0]
    if spectrum is None:
        # A short taper keeps the record's wrap-around step from posing as an impact.
        spec = tapered_rfft(a, mean)
    elif spectrum.shape != (ch, n // 2 + 1):
        raise ValueError(
            f"spectrum must be the rFFT of x, shape {(ch, n // 2 + 1)}, got {spectrum.shape}"
        )
    else:
        spec = spectrum
    n_lines = int(fmax * n / fs) + 1
    freqs = np.arange(n_lines) * fs / n
    if band is not None:
        lo, hi = check_band(band, fs)
        k0, k1 = max(1, int(np.ceil(lo * n / fs))), int(np.floor(hi * n / fs)) + 1
        if remove_lines:
            _clip_lines(spec, overwrite=True, upto=k1)  # our own rFFT output
        env = _Envelopes(spec, [(k0, k1)] * ch, n_lines, fs, n)
        return EnvelopeResult(freqs, env.spectrum, env.band, env.kurtosis)

    # A band narrower than 2*fmax cannot carry envelope content (both sidebands) up to fmax.
    min_bw = min_bandwidth if min_bandwidth is not None else 2.0 * fmax
    key = (fs, n, float(min_bw), float(f_floor))
    cands = _candidate_bands(*key)
    if remove_lines:  # only the candidates' bins are ever read
        _clip_lines(spec, overwrite=True, upto=max(k1 for _, k1 in cands))
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
    started = dict(zip(fresh, _search(spec, fresh, cands, n), strict=True)) if fresh else {}
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
        for c, sk in zip(due, _search(spec, due, cands, n), strict=True):
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
    spec: NDArray[np.complexfloating],
    rows: Sequence[int],
    cands: tuple[tuple[int, int], ...],
    n: int,
) -> F64:
    """Spectral kurtosis of every candidate band for each of ``rows``: ``(rows, candidates)``.

    Each band's complex envelope is critically sampled (one point per bin), the
    cheapest form that still shows impacts; the taper's ramps are left out. The
    bands of one width (a tree level, less its floor band) go through one batched
    inverse FFT, gathered straight from ``spec`` (no copy of the searched rows'
    spectra). The envelope is complex (a band's analytic signal shifted to
    baseband), so a real-input transform does not apply.
    """
    out = np.empty((len(rows), len(cands)))
    r = np.asarray(rows, dtype=np.intp)[:, None]
    for w, js in _widths(cands).items():
        k0s = np.array([cands[j][0] for j in js], dtype=np.intp)
        bins = np.lib.stride_tricks.sliding_window_view(spec, w, axis=-1)[r, k0s]
        z = scipy.fft.ifft(bins, axis=-1, overwrite_x=True)  # (rows, bands, w), our copy
        out[:, js] = _sk(_inner(_power(z), n))
    return out


@lru_cache(maxsize=32)
def _widths(cands: tuple[tuple[int, int], ...]) -> dict[int, list[int]]:
    """Candidate indices grouped by band width (bins), in order."""
    groups: dict[int, list[int]] = {}
    for j, (k0, k1) in enumerate(cands):
        groups.setdefault(k1 - k0, []).append(j)
    return groups


def _power(z: NDArray[np.complexfloating]) -> NDArray[np.floating]:
    """``|z|^2`` in ``z``'s precision: ``abs`` (one vectorized pass over the complex
    array) then an in-place square, several times faster than ``re^2 + im^2`` through
    the strided ``.real``/``.imag`` views."""
    e = np.abs(z)
    e *= e
    return e


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
            bins = np.lib.stride_tricks.sliding_window_view(spec, w, axis=-1)[idx, k0s]
            # zero-padded: the oversampled baseband, m >= 2w points so that the squared
            # envelope (content up to w bins) is sampled without aliasing
            m = scipy.fft.next_fast_len(max(2 * w, 2 * self.n_lines + 2))
            # in the record's precision (float32 for the agent): no float64 copy, and the
            # rFFT below runs at single precision
            e = _power(scipy.fft.ifft(bins, n=m, axis=-1))
            # SK from the critically sampled envelope (one point per bin), the estimator
            # the search uses: the oversampled one above sees more of each impact's peak
            # and reads ~10 % higher. When m is a multiple of w the critical samples are
            # every (m/w)-th point of ``e`` (scaled by (w/m)^2, which SK does not see), so
            # no second inverse FFT; the bands at the floor have other widths.
            if m % w == 0:
                ec = np.ascontiguousarray(e[:, :: m // w])
            else:
                ec = _power(scipy.fft.ifft(bins, axis=-1, overwrite_x=True))
            self.kurtosis[idx] = _sk(ec)
            self.sk_inner[idx] = _sk(_inner(ec, self.n))
            mean = e.mean(axis=-1, keepdims=True, dtype=np.float64)
            e -= mean.astype(e.dtype)
            se = scipy.fft.rfft(e, axis=-1, overwrite_x=True)[:, : self.n_lines]
            self.spectrum[idx] = 2.0 * np.abs(se) / (m * np.maximum(mean, 1e-300))
            self.band[idx, 0] = k0s * self.fs / self.n
            self.band[idx, 1] = (k0s + w) * self.fs / self.n


def _inner(e: NDArray[np.floating], n: int) -> NDArray[np.floating]:
    """``e`` (m points spanning the record) without the taper's ramps at both ends.

    The ramps modulate every band's envelope (a +0.11 SK bias on Gaussian noise)
    and, in the lowest bands, turn the leakage skirts of strong shaft lines into
    a burst at each end of the record that would pose as the most impulsive band.
    """
    m = e.shape[-1]
    cut = int(np.ceil(record_ramp(n) / n * m)) + 2
    return e[..., cut : m - cut] if m > 4 * cut else e


def _clip_lines(
    spec: NDArray[np.complexfloating], *, span: int = 64, factor: float = 2.0,
    overwrite: bool = False, upto: int | None = None,
) -> NDArray[np.complexfloating]:
    """Pull discrete lines down to ``factor`` x the local median magnitude, keeping phase.

    Shaft harmonics, blade pass and other deterministic lines dominate a band's
    envelope; bearing impacts (with their natural jitter) form a continuous
    spectrum and pass untouched. The local median is taken over blocks of
    ``span`` bins, which narrow lines cannot move.

    Computed on the magnitudes in the spectrum's precision (float32 for the
    agent's records, one vectorized ``abs`` pass). The median is exact: the
    blocks are sorted (numpy's SIMD sort of short rows is faster than a partial
    selection of them) and the middle one or two values read. Only the bins above
    the limit change (about 6 % of a noise floor's bins exceed twice the median:
    Rayleigh); the others are multiplied by exactly 1. ``upto``: only the blocks holding bins
    ``[0, upto)`` are clipped (the rest are left as they are: the caller never
    reads them; the blocks, so the medians, are the same either way).
    ``overwrite``: scale ``spec`` itself (the caller's own temporary).
    """
    nb = spec.shape[-1]
    out = spec if overwrite else spec.copy()
    full = nb // span
    blocks = full if upto is None else min(full, -(-upto // span))
    _clip_blocks(out, 0, blocks, span, factor)
    if nb > full * span and (upto is None or upto > full * span):
        _clip_blocks(out, full * span, 1, nb - full * span, factor)  # the short last block
    return out


def _clip_blocks(
    out: NDArray[np.complexfloating], start: int, blocks: int, span: int, factor: float
) -> None:
    """Clip ``blocks`` blocks of ``span`` bins of each row of ``out`` from bin ``start``.

    Every bin is scaled by ``lim / max(|X|, lim)``: exactly 1 at or below its block's
    limit (a float divided by itself), ``lim / |X|`` above it. Dense passes over the
    magnitudes and one multiply of the spectrum cost less than finding the ~6 % of
    bins above the limit and gathering and scattering them by index (measured at 64
    channels, 157 blocks each: 2.7 -> 1.8 ms for the whole clip; the same values).
    """
    ch = out.shape[0]
    part = out[:, start : start + blocks * span]
    mag = np.abs(part).reshape(ch, blocks, span)
    srt = np.sort(mag, axis=-1)
    h = (span - 1) // 2
    lim = srt[..., h] if span % 2 else srt[..., h] + srt[..., h + 1]
    lim *= factor if span % 2 else 0.5 * factor
    # a block whose median is 0 (mostly exact zeros): its nonzero bins go to ~0, not NaN
    np.maximum(lim, np.finfo(lim.dtype).tiny, out=lim)
    np.maximum(mag, lim[..., None], out=mag)
    np.divide(lim[..., None], mag, out=mag)
    part *= mag.reshape(ch, blocks * span)


def _sk(e: NDArray[np.floating]) -> F64:
    """Spectral kurtosis of a complex envelope from its squared magnitude ``e = |z|^2``
    (last axis): E|z|^4 / (E|z|^2)^2 - 2, zero for stationary Gaussian noise, large for
    impacts.

    In ``e``'s precision, no float64 copy: the sums are BLAS dot products (blocked
    accumulation keeps float32 within ~1e-6 relative over a record's bins, far inside
    the band tracker's 20 % margin), the ratio in float64."""
    n = e.shape[-1]
    ones = ones_vector(n, e.dtype.str)
    m1 = np.vecdot(e, ones).astype(np.float64) / n
    m2 = np.vecdot(e, e).astype(np.float64) / n
    return np.where(m1 > 0, m2 / np.maximum(m1 * m1, 1e-300) - 2.0, 0.0)


def line_prominence(
    freqs: F64, spectrum: F64, f: F64, *, tol: float = 0.01, span: float = 0.15
) -> F64:
    """Envelope line height at ``f`` over the median level around it (per channel).

    ``f`` is ``(channels,)`` or ``(channels, k)`` (``k`` lines per channel, all in one
    pass); the result has its shape. The height is the maximum within ``max(1 bin,
    tol*f)`` of ``f`` (speed is never known exactly); the reference is the median
    over ``f +- max(10 bins, span*f)``. About 1 where there is no line; NaN where
    ``f`` is unknown or out of range.
    """
    df = float(freqs[1] - freqs[0])
    nl = spectrum.shape[-1]
    fa = np.asarray(f, dtype=np.float64)
    shape = fa.shape
    if fa.ndim not in (1, 2) or shape[0] != spectrum.shape[0]:
        raise ValueError(
            f"f must be (channels,) or (channels, k) with channels={spectrum.shape[0]}, "
            f"got shape {shape}"
        )
    per = 1 if fa.ndim == 1 else shape[1]
    fc = fa.reshape(-1)
    rows = np.repeat(np.arange(spectrum.shape[0]), per)[:, None]
    ok = np.isfinite(fc) & (fc > 0)
    fc = np.where(ok, fc, 1.0)
    w = np.maximum(df, tol * fc)
    ref = np.maximum(10 * df, span * fc)
    ok &= fc + w <= freqs[-1]
    k0 = np.floor((fc - w) / df).astype(np.intp)
    k1 = np.ceil((fc + w) / df).astype(np.intp) + 1
    r0 = np.maximum(1, ((fc - ref) / df).astype(np.intp))
    r1 = np.minimum(nl, ((fc + ref) / df).astype(np.intp) + 1)
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
    at = np.arange(fc.shape[0])
    lo_mid = rvals[at, np.clip((count - 1) // 2, 0, rl - 1)]
    hi_mid = rvals[at, np.clip(count // 2, 0, rl - 1)]
    med = 0.5 * (lo_mid + hi_mid)
    good = ok & (med > 0)
    return np.where(good, height / np.where(good, med, 1.0), np.nan).reshape(shape)
