"""Per-channel sample ring: the bounded hand-off between acquisition and DSP.

Theory of operation
-------------------
One preallocated ``(channels, capacity)`` float32 array; samples are addressed
by their absolute index since start (``i % capacity`` in the array). Each
write that does not continue the previous one in time (a gap, a rate change)
starts a new *run* ``(first index, t0_ns, fs)``. :meth:`SampleRing.read`
never returns samples of two runs at once, and gives the time of its first
sample, so the framer downstream sees exactly the gaps the source had.

When the ring is full the writer either waits (``overflow="block"``: replays
and benchmarks, where the source can be paused) or overwrites the oldest
unread samples (``overflow="drop"``: a live sensor cannot be paused). Dropped
samples are counted; the reader then sees a jump in time and the framer
restarts cleanly instead of splicing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray


@dataclass(slots=True)
class RingStats:
    capacity: int  # samples per channel
    depth: int = 0  # unread samples per channel
    peak: int = 0
    written: int = 0
    read: int = 0
    dropped: int = 0  # samples per channel overwritten before they were read
    blocked_s: float = 0.0  # time the writer waited for space ("block")
    runs: int = 0  # continuous runs started (1 + gaps/rate changes)


@dataclass(frozen=True, slots=True)
class Chunk:
    samples: NDArray[np.float32]  # (channels, n), owned by the caller
    t0_ns: int
    fs: float
    rpm: NDArray[np.float64] | None  # latest measured speed per channel, if any


class SampleRing:
    """Bounded multi-channel sample FIFO; one writer thread, one reader thread."""

    def __init__(
        self, channels: int, capacity: int, *, overflow: Literal["block", "drop"] = "drop"
    ) -> None:
        if channels < 1 or capacity < 1:
            raise ValueError(f"need channels >= 1 and capacity >= 1, got {channels=}, {capacity=}")
        self.channels = channels
        self.capacity = capacity
        self.overflow = overflow
        self._buf = np.zeros((channels, capacity), dtype=np.float32)
        self._w = 0  # absolute index of the next sample written
        self._r = 0  # absolute index of the next sample read
        self._runs: deque[tuple[int, int, float]] = deque()  # (first index, t0_ns, fs)
        self._rpm: NDArray[np.float64] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.stats = RingStats(capacity=capacity)

    def _expected_ns(self) -> float | None:
        if not self._runs:
            return None
        first, t0, fs = self._runs[-1]
        return t0 + (self._w - first) * 1e9 / fs

    def write(
        self,
        samples: NDArray[np.floating],
        t0_ns: int,
        fs: float,
        rpm: NDArray[np.float64] | None = None,
    ) -> None:
        """Append ``(channels, n)`` samples whose first is at ``t0_ns``."""
        x = np.asarray(samples)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n) samples, got shape {x.shape}")
        n = x.shape[1]
        pos = 0
        with self._cond:
            if rpm is not None:
                self._rpm = np.asarray(rpm, dtype=np.float64)
            exp = self._expected_ns()
            if exp is None or self._runs[-1][2] != fs or abs(t0_ns - exp) > 0.5e9 / fs:
                self._runs.append((self._w, int(t0_ns), float(fs)))
                self.stats.runs += 1
            while pos < n:
                if self._closed:
                    return
                free = self.capacity - (self._w - self._r)
                if free == 0:
                    if self.overflow == "block":
                        t = time.monotonic()
                        self._cond.wait(0.5)
                        self.stats.blocked_s += time.monotonic() - t
                        continue
                    # drop the oldest unread samples to make room for this piece
                    need = min(n - pos, self.capacity)
                    self._r += need
                    self.stats.dropped += need
                    free = need
                k = min(free, n - pos)
                i = self._w % self.capacity
                k = min(k, self.capacity - i)  # up to the physical end; wrap on the next turn
                self._buf[:, i : i + k] = x[:, pos : pos + k]
                self._w += k
                pos += k
                self.stats.written += k
                self.stats.depth = self._w - self._r
                self.stats.peak = max(self.stats.peak, self.stats.depth)
                self._cond.notify_all()

    def read(self, max_samples: int, timeout: float | None = None) -> Chunk | None:
        """Up to ``max_samples`` of one run; waits for data. None: closed and empty,
        or nothing arrived within ``timeout``."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._w == self._r:
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            while len(self._runs) > 1 and self._runs[1][0] <= self._r:
                self._runs.popleft()
            first, t0, fs = self._runs[0]
            end = self._w
            if len(self._runs) > 1:
                end = min(end, self._runs[1][0])
            n = min(end - self._r, max_samples)
            i = self._r % self.capacity
            out = np.empty((self.channels, n), dtype=np.float32)
            k = min(n, self.capacity - i)
            out[:, :k] = self._buf[:, i : i + k]
            if k < n:
                out[:, k:] = self._buf[:, : n - k]
            t = t0 + round((self._r - first) * 1e9 / fs)
            self._r += n
            self.stats.read += n
            self.stats.depth = self._w - self._r
            rpm = None if self._rpm is None else self._rpm.copy()
            self._cond.notify_all()
            return Chunk(out, t, fs, rpm)

    def close(self) -> None:
        """No more writes; readers drain what is left, then get None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
