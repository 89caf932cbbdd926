"""Stateful framer: continuous multi-channel blocks in, overlapping windows out.

Theory of operation
-------------------
Blocks arrive with the time of their first sample (ns) and their sample rate.
The framer keeps at most ``size - 1`` unconsumed samples per channel between
calls. A window of ``size`` samples is emitted as soon as it is complete; the
next window starts ``hop`` samples later. Windows therefore straddle block
boundaries freely, and the output depends only on the sample stream, never on
how it was cut into blocks.

A block whose first sample is not where the previous block ended (a gap or an
overlap of more than half a sample period), whose sample rate differs, or
whose channel count differs, *restarts* framing: the partial window is
discarded (counted in ``restarts`` and ``discarded``) rather than spliced onto
unrelated samples. The next emitted window is marked ``after_restart``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._validate import check_fs


@dataclass(frozen=True, slots=True)
class Window:
    """One window of ``size`` samples for every channel."""

    samples: NDArray[np.floating]  # (channels, size), a copy owned by the caller
    t0_ns: int  # time of the first sample
    fs: float
    after_restart: bool  # the first window after a gap / rate change / start


@dataclass(slots=True)
class FramerStats:
    windows: int = 0
    samples_in: int = 0
    restarts: int = 0
    discarded: int = 0  # samples dropped by restarts (partial windows)


class Framer:
    """Cut continuous blocks into windows of ``size`` samples, one every ``hop``."""

    def __init__(self, *, size: int, hop: int, dtype: type[np.floating] = np.float32) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size=}")
        if not isinstance(hop, int) or not 1 <= hop <= size:
            raise ValueError(f"hop must be an integer in 1..size ({size}), got {hop=}")
        self.size = size
        self.hop = hop
        self.dtype = np.dtype(dtype)
        self.stats = FramerStats()
        self._buf: NDArray[np.floating] | None = None
        self._fill = 0  # valid samples in _buf
        self._fs: float | None = None
        self._origin_ns = 0  # time of sample index 0 of the current continuous run
        self._taken = 0  # samples of the current run consumed so far
        self._buf_start = 0  # run index of _buf[:, 0]
        self._fresh = True

    def reset(self) -> None:
        """Drop any partial window; the next window will be marked ``after_restart``."""
        self.stats.discarded += self._fill
        self._fill = 0
        self._fs = None
        self._fresh = True

    def _expected_ns(self) -> float:
        assert self._fs is not None
        return self._origin_ns + self._taken * 1e9 / self._fs

    def push(self, block: NDArray[np.floating], t0_ns: int, fs: float) -> list[Window]:
        """Feed one block ``(channels, n)`` starting at ``t0_ns``; return completed windows."""
        fs = check_fs(fs)
        x = np.asarray(block)
        if x.ndim == 1:
            x = x[np.newaxis, :]
        if x.ndim != 2:
            raise ValueError(f"block must have shape (channels, samples), got shape {x.shape}")
        n = x.shape[1]
        self.stats.samples_in += n
        if self._buf is None or self._buf.shape[0] != x.shape[0]:
            if self._buf is not None:
                self.stats.restarts += 1
                self.reset()
            self._buf = np.empty((x.shape[0], self.size), dtype=self.dtype)
        elif self._fs is not None and (
            self._fs != fs or abs(t0_ns - self._expected_ns()) > 0.5e9 / fs
        ):
            self.stats.restarts += 1
            self.reset()
        if self._fs is None:
            self._fs = fs
            self._origin_ns = int(t0_ns)
            self._taken = 0
            self._buf_start = 0
        out: list[Window] = []
        pos = 0
        buf = self._buf
        while pos < n:
            k = min(self.size - self._fill, n - pos)
            buf[:, self._fill : self._fill + k] = x[:, pos : pos + k]
            self._fill += k
            pos += k
            if self._fill == self.size:
                t0 = self._origin_ns + round(self._buf_start * 1e9 / fs)
                keep = self.size - self.hop
                if keep:
                    out.append(Window(buf.copy(), t0, fs, after_restart=self._fresh))
                    buf[:, :keep] = buf[:, self.hop :]
                else:  # no overlap: hand the buffer over and start a fresh one, no copy
                    out.append(Window(buf, t0, fs, after_restart=self._fresh))
                    buf = self._buf = np.empty_like(buf)
                self._fresh = False
                self.stats.windows += 1
                self._fill = keep
                self._buf_start += self.hop
        self._taken += n
        return out
