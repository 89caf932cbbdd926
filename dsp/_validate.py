"""Argument checks shared by the dsp functions: each names the offending value."""

from __future__ import annotations

import math


def check_fs(fs: float) -> float:
    if not (isinstance(fs, int | float) and math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a positive finite sample rate in Hz, got {fs=}")
    return float(fs)


def check_nfft(nfft: int) -> int:
    if not isinstance(nfft, int) or nfft < 64 or nfft & (nfft - 1):
        raise ValueError(f"nfft must be a power of two >= 64, got {nfft=}")
    return nfft


def check_hop(hop: int, nfft: int) -> int:
    if not isinstance(hop, int) or hop < 1 or hop > nfft:
        raise ValueError(f"hop must be an integer in 1..nfft ({nfft}), got {hop=}")
    return hop


def check_band(band: tuple[float, float], fs: float, *, name: str = "band") -> tuple[float, float]:
    try:
        lo, hi = (float(band[0]), float(band[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"{name} must be a (low, high) pair in Hz, got {band!r}") from None
    nyq = fs / 2.0
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
        raise ValueError(f"{name} must satisfy 0 <= low < high, got {name}={band!r}")
    if hi > nyq:
        raise ValueError(f"{name} upper edge {hi} Hz is above Nyquist ({nyq} Hz for fs={fs})")
    return lo, hi
