from __future__ import annotations

from typing import TypedDict

import numpy as np
import pytest
import scipy.signal
import scipy.stats

import dsp
from dsp.spectra import WindowName

FS = 25600.0


@pytest.mark.parametrize("window", ["hann", "flattop"])
@pytest.mark.parametrize(("nfft", "hop"), [(4096, 2048), (1024, 256), (256, 256)])
def test_welch_psd_equals_scipy_for_float64(window: WindowName, nfft: int, hop: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 25600)) + 3.0 * np.sin(2 * np.pi * 123.4 * np.arange(25600) / FS)
    f, p = dsp.welch_psd(x, FS, nfft=nfft, hop=hop, window=window)
    f2, p2 = scipy.signal.welch(
        x, FS, window=window, nperseg=nfft, noverlap=nfft - hop, detrend=False,
        scaling="density", axis=-1,
    )
    np.testing.assert_allclose(f, f2, rtol=1e-12)
    np.testing.assert_allclose(p, p2, rtol=1e-6)


def test_float32_path_within_005_db_on_lines_within_60_db_of_peak() -> None:
    rng = np.random.default_rng(11)
    t = np.arange(25600) / FS
    x = (
        5 * np.sin(2 * np.pi * 49.2 * t)
        + 0.7 * np.sin(2 * np.pi * 295 * t)
        + 0.05 * rng.standard_normal((8, t.size))
    )
    _, p64 = dsp.welch_psd(x, FS, nfft=4096, hop=2048)
    _, p32 = dsp.welch_psd(x.astype(np.float32), FS, nfft=4096, hop=2048)
    assert p32.dtype == np.float32
    near = p64 >= p64.max(axis=-1, keepdims=True) * 1e-6
    err = np.abs(10 * np.log10(p32[near] / p64[near]))
    assert err.max() <= 0.05


def test_welch_psd_along_another_axis() -> None:
    x = np.random.default_rng(0).standard_normal((8192, 2))
    _, p = dsp.welch_psd(x, FS, nfft=1024, hop=512, axis=0)
    _, q = dsp.welch_psd(x.T, FS, nfft=1024, hop=512)
    np.testing.assert_allclose(p, q.T)


class _Settings(TypedDict):
    nfft: int
    hop: int


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nfft": 1000, "hop": 500}, "nfft must be a power of two"),
        ({"nfft": 1024, "hop": 2048}, "hop must be"),
        ({"nfft": 32, "hop": 16}, "nfft must be a power of two >= 64"),
    ],
)
def test_bad_spectral_settings_name_the_value(kwargs: _Settings, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dsp.welch_psd(np.zeros(8192), FS, **kwargs)


def test_moments_match_numpy_and_scipy() -> None:
    rng = np.random.default_rng(5)
    x = np.vstack([rng.standard_normal(25600), rng.exponential(size=25600) + 2.0])
    m = dsp.moments(x.astype(np.float32))
    np.testing.assert_allclose(m["rms"], np.sqrt(np.mean(x**2, axis=-1)), rtol=1e-5)
    np.testing.assert_allclose(m["peak"], np.abs(x).max(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(
        m["kurtosis"], scipy.stats.kurtosis(x, axis=-1, fisher=False), rtol=1e-4
    )
    np.testing.assert_allclose(m["skewness"], scipy.stats.skew(x, axis=-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["crest"], m["peak"] / m["rms"])
