"""The hot path's shortcuts give what the plain computations give (issue 21).

Each shortcut of ``dsp.analyze``/``dsp.envelope_spectrum`` is checked against
the straightforward computation it replaces: line clipping against an
``np.median`` reference, the band in use's SK from decimated points against a
second inverse FFT, the batched band search against one band at a time, the
defect lines in one pass against one call per line, the spectra's delta coding
of all rows against one row at a time, grouped Welch frames and moments
against one pass, the line spectrum's frequency-domain Hann window against the
windowed samples' rFFT, the one tapered rFFT the line spectrum and the envelope
share against one each, the strided dropout scan against every neighbour pair,
and the band RMS slices against boolean masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft

import dsp
from dsp import quantize, spectra
from dsp.analyze import _dead_samples
from dsp.envelope import _candidate_bands, _clip_lines, _Envelopes, _search, _sk
from dsp.features import LineSpectrum, moments, record_taper, tapered_rfft
from dsp.spectra import cosine_window, welch_from_frames

FS = 25600.0
N = 25600


def _record(channels: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N) / FS
    x = rng.standard_normal((channels, N))
    x += 3.0 * np.sin(2 * np.pi * 49.0 * t) + np.sin(2 * np.pi * 294.0 * t)  # lines to clip
    x[:, ::211] += 6.0  # impacts
    return x.astype(np.float32)


def _spectrum(channels: int) -> np.ndarray:
    return scipy.fft.rfft(_record(channels), axis=-1)


def _clip_reference(spec: np.ndarray, span: int = 64, factor: float = 2.0) -> np.ndarray:
    out = spec.copy()
    for start in range(0, spec.shape[-1], span):
        block = out[:, start : start + span]
        mag = np.abs(block)
        lim = factor * np.median(mag, axis=-1, keepdims=True)
        block *= np.minimum(1.0, lim / np.maximum(mag, 1e-30))
    return out


def test_clip_lines_matches_a_median_reference() -> None:
    spec = _spectrum(4)
    got = _clip_lines(spec)
    ref = _clip_reference(spec)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
    assert np.abs(got).max() < 0.2 * np.abs(spec).max()  # the lines were pulled down
    assert np.array_equal(spec, _spectrum(4))  # not overwritten unless asked


def test_clip_lines_upto_clips_exactly_the_blocks_asked_for() -> None:
    spec = _spectrum(3)
    full = _clip_lines(spec)
    part = _clip_lines(spec, upto=1000)  # blocks 0..15 (bins < 1024)
    assert np.array_equal(part[:, :1024], full[:, :1024])
    assert np.array_equal(part[:, 1024:], spec[:, 1024:])


def test_clip_lines_of_a_block_of_mostly_zeros_stays_finite() -> None:
    # a block whose median magnitude is 0: the lines in it go to ~0, never to NaN
    spec = np.zeros((2, 200), dtype=np.complex64)
    spec[:, 10] = 5.0 + 5.0j
    spec[1, 70:140] = 1.0  # the second block of row 1 has a nonzero median
    spec[1, 100] = 40.0
    got = _clip_lines(spec)
    assert np.isfinite(got).all()
    assert np.abs(got[:, 10]).max() < 1e-30
    assert abs(got[1, 100]) == pytest.approx(2.0, rel=1e-6)  # 2 x the block's median
    assert got[1, 80] == 1.0  # at or below the limit: untouched


def test_band_in_use_sk_from_decimated_points_matches_a_second_inverse_fft() -> None:
    spec = _clip_lines(_spectrum(5))
    cands = _candidate_bands(FS, N, 1000.0, 10.0)
    bands = [cands[j] for j in (5, 12, 1, 5, 0)]  # 2500, 1250, 5000 and a floor band (4990)
    env = _Envelopes(spec, bands, 501, FS, N)
    for c, (k0, k1) in enumerate(bands):
        z = scipy.fft.ifft(spec[c, k0:k1])
        assert abs(env.kurtosis[c] - _sk((np.abs(z) ** 2)[None])[0]) < 1e-4


def test_batched_search_matches_one_band_at_a_time() -> None:
    spec = _clip_lines(_spectrum(6))
    cands = _candidate_bands(FS, N, 1000.0, 10.0)
    rows = [4, 1, 5]
    got = _search(spec, rows, cands, N)
    for i, r in enumerate(rows):
        for j, (k0, k1) in enumerate(cands):
            e = np.abs(scipy.fft.ifft(spec[r, k0:k1])) ** 2
            m = e.shape[-1]
            drop = int(np.ceil(int(0.05 * N) / N * m)) + 2
            ref = _sk(e[None, drop : m - drop])[0]
            assert abs(got[i, j] - ref) < 1e-4


def test_defect_lines_in_one_pass_match_one_call_per_line() -> None:
    r = dsp.envelope_spectrum(_record(4), FS)
    f = np.array([[87.0, 130.0, 57.0, 19.5], [90.0, np.nan, 60.0, 20.0],
                  [85.0, 128.0, 600.0, 0.0], [88.0, 133.0, 58.0, 19.0]])
    together = dsp.line_prominence(r.freqs, r.spectrum, f, tol=0.03)
    assert together.shape == f.shape
    for k in range(f.shape[1]):
        one = dsp.line_prominence(r.freqs, r.spectrum, f[:, k], tol=0.03)
        np.testing.assert_array_equal(together[:, k], one)


def test_pack_rows_gives_the_bytes_of_pack_codes() -> None:
    codes = np.random.default_rng(3).integers(0, 256, size=(5, 1600)).astype(np.uint8)
    assert quantize.pack_rows(codes) == [quantize.pack_codes(row) for row in codes]


def test_welch_and_moments_of_many_channels_match_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = _record(40)
    frames = np.lib.stride_tricks.sliding_window_view(x, 4096, axis=-1)[:, ::2048]
    grouped = welch_from_frames(frames, FS, lines=1601)
    monkeypatch.setattr(spectra, "_GROUP_BYTES", 1 << 40)
    one_pass = welch_from_frames(frames, FS, lines=1601)
    np.testing.assert_allclose(grouped, one_pass, rtol=1e-6)
    m = moments(x)
    for i in range(0, 40, 7):
        one = moments(x[i : i + 1])
        for key, v in m.items():
            assert np.array_equal(v[i : i + 1], one[key]), key


def test_welch_lines_are_the_first_lines_of_the_whole_spectrum() -> None:
    # the wire's dB error is judged against welch_psd: the lines kept must be the same
    # numbers, not merely close (a last-bit difference moves a code across a half step)
    frames = np.lib.stride_tricks.sliding_window_view(_record(9), 4096, axis=-1)[:, ::2048]
    assert np.array_equal(welch_from_frames(frames, FS, lines=1601),
                          welch_from_frames(frames, FS)[:, :1601])


@pytest.mark.parametrize("n", [N, 4097, 64, 3, 2])
@pytest.mark.parametrize("fmax", [1000.0, None])
def test_line_spectrum_windows_in_the_frequency_domain_as_in_time(
    n: int, fmax: float | None
) -> None:
    x = _record(5)[:, :n].astype(np.float64) + 0.3  # a mean to remove as well
    got = LineSpectrum(x, FS, fmax=fmax)
    w = cosine_window("hann", n) * record_taper(n, x.dtype.str)
    spec = scipy.fft.rfft((x - x.mean(axis=-1, keepdims=True)) * w, axis=-1)
    ref = np.abs(spec) ** 2 * 2.0 / (n * np.dot(w, w))
    ref[:, 0] *= 0.5
    k = got.power.shape[-1]
    assert k == (ref.shape[-1] if fmax is None or n < 64 else int(np.ceil(fmax * n / FS)) + 3)
    np.testing.assert_allclose(got.power, ref[:, :k], rtol=1e-9, atol=1e-12 * ref.max())


def test_line_spectrum_window_is_hann_but_for_the_taper_ramps() -> None:
    # the record taper changes Hann only where Hann is below 0.025
    w = record_taper(N, "<f8")
    hann = cosine_window("hann", N)
    assert np.abs(hann * w - hann).max() < 0.025
    assert np.array_equal((hann * w)[N // 10 : -N // 10], hann[N // 10 : -N // 10])


def test_one_tapered_rfft_serves_the_line_spectrum_and_the_envelope() -> None:
    x = _record(12)
    mean = x.mean(axis=-1)
    spec = tapered_rfft(x, mean)
    shared = LineSpectrum(x, FS, fmax=1000.0, spectrum=spec)
    own = LineSpectrum(x, FS, fmax=1000.0, mean=mean)
    np.testing.assert_allclose(shared.power, own.power, rtol=1e-5, atol=1e-7 * own.power.max())
    env_shared = dsp.envelope_spectrum(x, FS, mean=mean, spectrum=spec)
    env_own = dsp.envelope_spectrum(x, FS, mean=mean)
    assert np.array_equal(env_shared.band, env_own.band)
    np.testing.assert_allclose(env_shared.spectrum, env_own.spectrum, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="rFFT of x"):
        LineSpectrum(x, FS, spectrum=spec[:, :-1])
    with pytest.raises(ValueError, match="rFFT of x"):
        dsp.envelope_spectrum(x, FS, spectrum=spec[:3])


def test_tapered_rfft_tapers_only_the_ramps_as_the_whole_record_product() -> None:
    # the taper is exactly 1 between its ramps: multiplying only the ramps gives the
    # rFFT of the whole record times the taper, bit for bit
    x = _record(5)
    mean = x.mean(axis=-1)
    whole = (x - mean.astype(x.dtype)[:, None]) * record_taper(N, x.dtype.str)
    assert np.array_equal(tapered_rfft(x, mean), scipy.fft.rfft(whole, axis=-1))


def test_moments_leave_the_centred_record_the_spectra_transform() -> None:
    # dsp.analyze's moments write the centred samples its one whole-record rFFT reads:
    # the same moments, the same centred values as x less its float32 means
    x = _record(20)  # more than one group of 16
    out = np.empty_like(x)
    got = moments(x, centered=out)
    ref = moments(x)
    for key in ref:
        assert np.array_equal(got[key], ref[key]), key
    mean32 = got["mean"].astype(np.float32)[:, None]  # the float32 mean the moments used
    assert np.allclose(mean32, x.mean(axis=-1, keepdims=True), rtol=0, atol=1e-6)
    assert np.array_equal(out, x - mean32)
    with pytest.raises(ValueError, match="centered must have"):
        moments(x, centered=out[:, 1:])


def test_moments_of_a_channel_do_not_depend_on_the_others() -> None:
    # each channel's sums are its own dot products: the same values alone, in another
    # group of 16 or beside other channels (reports do not depend on chunk size)
    x = _record(20)
    whole = moments(x)
    for rows in (slice(3, 4), slice(15, 18), slice(16, 20)):
        part = moments(x[rows])
        for key in whole:
            assert np.array_equal(part[key], whole[key][rows]), (key, rows)


def test_line_spectrum_features_do_not_depend_on_the_envelope() -> None:
    # one tapered rFFT serves the line spectrum with the envelope on or off
    x = _record(3)
    b6205 = dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")
    spec = dsp.ChannelSpec(asset=dsp.Asset(bearings=[b6205], vanes=6))
    on = dsp.analyze(x, dsp.ReportConfig(), [spec] * 3)
    off = dsp.analyze(x, dsp.ReportConfig(envelope=False), [spec] * 3)
    for a, b in zip(on, off, strict=True):
        fa, fb = a.features, b.features
        assert (fa.velocity_rms, fa.v1x, fa.v2x, fa.v3x, fa.vbpf) == (
            fb.velocity_rms, fb.v1x, fb.v2x, fb.v3x, fb.vbpf)
        assert a.speed == b.speed and a.spectrum == b.spectrum


def _dead_reference(a: np.ndarray, fullscale: np.ndarray, min_run: int) -> np.ndarray:
    out = np.zeros(a.shape[0], dtype=np.int64)
    for c, row in enumerate(a):
        run = 1
        for i in range(1, len(row) + 1):
            if i < len(row) and row[i] == row[i - 1] and abs(row[i]) < fullscale[c] * (1 - 1e-6):
                run += 1
                continue
            if run >= min_run:
                out[c] += run
            run = 1
    return out


def test_strided_dropout_scan_finds_what_every_neighbour_pair_finds() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 400))
        a = rng.standard_normal((3, n)).astype(np.float32)
        for c in range(3):
            for _ in range(int(rng.integers(0, 4))):
                s0, length = int(rng.integers(0, n)), int(rng.integers(1, 90))
                a[c, s0 : s0 + length] = a[c, s0] if rng.random() < 0.8 else 5.0
        fullscale = np.array([np.inf, 5.0, 4.0])
        min_run = int(rng.integers(2, 60))
        assert np.array_equal(_dead_samples(a, fullscale, min_run),
                              _dead_reference(a, fullscale, min_run)), (n, min_run)


def test_band_rms_slices_match_boolean_masks() -> None:
    freqs = dsp.spectra.rfft_freqs(4096, FS)
    psd = np.random.default_rng(2).random((4, freqs.size))
    bands = [(10.0, 1000.0), (1000.0, 2500.0), (6.25, 12.5), (2503.0, 12800.0)]
    got = dsp.psd_band_rms(freqs, psd, bands, FS)
    for j, (lo, hi) in enumerate(bands):
        sel = (freqs >= lo) & (freqs < hi)
        np.testing.assert_allclose(got[:, j], np.sqrt(psd[:, sel].sum(axis=-1) * freqs[1]),
                                   rtol=1e-12)


@pytest.mark.parametrize(("n", "lines"), [(501, 250), (1000, 100), (7, 2), (1601, 400), (300, 250)])
def test_reduce_lines_max_pools_as_a_reshaped_max(n: int, lines: int) -> None:
    rng = np.random.default_rng(n)
    v = rng.standard_normal((3, n))
    v[1, 5] = np.nan  # a NaN line keeps its pool NaN, as np.max does
    pool = max(1, n // lines)
    usable = min(n // pool, lines) * pool
    ref = v[:, :usable].reshape(3, usable // pool, pool).max(axis=-1)
    got = quantize.reduce_lines(v, lines)
    assert got.shape == ref.shape and np.array_equal(got, ref, equal_nan=True)
