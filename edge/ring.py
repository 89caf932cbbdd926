"""Per-channel sample ring: the bounded hand-off between acquisition and DSP, and the
report framer.

Theory of operation
-------------------
One preallocated ``(channels, capacity)`` float32 array; samples are addressed
by their absolute index since start (``i % capacity`` in the array). Each
write that does not continue the previous one in time (a gap, a rate change)
starts a new *run* ``(first index, t0_ns, fs)``.

The reader takes whole report intervals straight from the array: no second
copy of the samples. :meth:`SampleRing.take` waits until ``n`` unread samples
of one run are there and *leases* them: :meth:`Interval.rows` gives a group of
channels as a view of the array (one copy of that group, into a reused
scratch buffer, only when the interval wraps around the array's end), and the
writer never touches the leased samples until :meth:`SampleRing.release`.
Intervals follow each other within a run; one that cannot continue the
previous one (a new run, or samples dropped in between) starts the framing
afresh (``after_restart``), and the unread rest of a run too short for an
interval is discarded. Both are counted (:class:`RingStats` ``restarts``,
``discarded``): the stream's gaps, as the source had them, never spliced.

When the ring is full the writer either waits (``overflow="block"``: replays
and benchmarks, where the source can be paused) or loses samples
(``overflow="drop"``: a live sensor cannot be paused): the oldest unread ones,
or, while the reader holds its lease on them, the arriving ones. Dropped
samples are counted; the reader then sees a jump in time and restarts the
framing. Size the ring as one interval plus the time DSP may fall behind.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .memory import mapped_zeros


@dataclass(slots=True)
class RingStats:
    capacity: int  # samples per channel
    depth: int = 0  # unread samples per channel (the leased interval included)
    peak: int = 0
    written: int = 0
    read: int = 0
    dropped: int = 0  # samples per channel lost because the ring was full
    blocked_s: float = 0.0  # time the writer waited for space ("block")
    runs: int = 0  # continuous runs started (1 + gaps/rate changes)
    intervals: int = 0  # intervals taken
    restarts: int = 0  # framing restarts after the first interval (gaps, drops)
    discarded: int = 0  # samples per channel of runs too short for an interval


class Interval:
    """One leased report interval of every channel (:meth:`SampleRing.take`)."""

    __slots__ = ("_i", "_ring", "after_restart", "fs", "n", "rpm", "t0_ns")

    def __init__(
        self,
        ring: SampleRing,
        i: int,
        n: int,
        t0_ns: int,
        fs: float,
        after_restart: bool,
        rpm: NDArray[np.float64] | None,
    ) -> None:
        self._ring, self._i, self.n = ring, i, n
        self.t0_ns = t0_ns  # time of the first sample
        self.fs = fs
        self.after_restart = after_restart  # first interval after a start, gap or drop
        self.rpm = rpm  # latest measured speed per channel, if any

    @property
    def wraps(self) -> bool:
        return self._i + self.n > self._ring.capacity

    def rows(self, lo: int, hi: int) -> NDArray[np.float32]:
        """Channels ``lo:hi``, ``(hi - lo, n)``: a view of the ring, valid until
        :meth:`SampleRing.release`; when the interval wraps, a copy into a scratch
        buffer that the next :meth:`rows` call overwrites."""
        ring, i, n = self._ring, self._i, self.n
        buf = ring._buf
        if i + n <= ring.capacity:
            return buf[lo:hi, i : i + n]
        rows = hi - lo
        if ring._scratch is None or ring._scratch.shape[0] < rows or ring._scratch.shape[1] != n:
            ring._scratch = np.empty((rows, n), dtype=np.float32)
        out = ring._scratch[:rows]
        k = ring.capacity - i
        out[:, :k] = buf[lo:hi, i:]
        out[:, k:] = buf[lo:hi, : n - k]
        return out


class SampleRing:
    """Bounded multi-channel sample FIFO and interval framer; one writer thread, one
    reader thread."""

    def __init__(
        self, channels: int, capacity: int, *, overflow: Literal["block", "drop"] = "drop"
    ) -> None:
        if channels < 1 or capacity < 1:
            raise ValueError(f"need channels >= 1 and capacity >= 1, got {channels=}, {capacity=}")
        self.channels = channels
        self.capacity = capacity
        self.overflow = overflow
        # its own mapping: the ring lives as long as the agent, out of the heap the DSP
        # temporaries churn in (edge.memory.mapped_zeros)
        self._buf: NDArray[np.float32] = mapped_zeros((channels, capacity), np.float32)
        self._scratch: NDArray[np.float32] | None = None  # a wrapped interval's group
        self._w = 0  # absolute index of the next sample written
        self._r = 0  # absolute index of the next sample read (the lease's first)
        self._lease = 0  # samples leased from _r (0: none)
        self._end = -1  # absolute index after the last interval taken (-1: none yet)
        self._gap = False  # samples were dropped on arrival: the next write starts a run
        self._runs: deque[tuple[int, int, float]] = deque()  # (first index, t0_ns, fs)
        self._rpm: NDArray[np.float64] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._drained = False
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
            if self._gap or exp is None or self._runs[-1][2] != fs or abs(t0_ns - exp) > 0.5e9 / fs:
                self._runs.append((self._w, int(t0_ns), float(fs)))
                self.stats.runs += 1
                self._gap = False
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
                    if self._lease:  # the oldest are in DSP's hands: lose what arrives
                        self.stats.dropped += n - pos
                        self._gap = True  # the next write starts a run: the reader restarts
                        return
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

    def take(self, n: int, timeout: float | None = None) -> Interval | None:
        """Lease the next ``n`` samples of one run; waits for them. None: nothing
        complete within ``timeout``, or the ring is closed and no whole interval is
        left (then :attr:`drained` is true). :meth:`release` before the next take."""
        if n < 1 or n > self.capacity:
            raise ValueError(f"an interval must be 1..capacity ({self.capacity}) samples, got {n=}")
        with self._cond:
            if self._lease:
                raise RuntimeError("take() while the previous interval is still leased")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                while len(self._runs) > 1 and self._runs[1][0] <= self._r:
                    self._runs.popleft()
                if self._runs:
                    end = self._runs[1][0] if len(self._runs) > 1 else None
                    if end is not None and end - self._r < n:
                        # the rest of this run is too short for an interval: not spliced
                        self.stats.discarded += end - self._r
                        self._r = end
                        self.stats.depth = self._w - self._r
                        self._cond.notify_all()
                        continue
                    if self._w - self._r >= n:
                        break
                if self._closed:
                    self._drained = True
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 0.5)
            first, t0, fs = self._runs[0]
            fresh = self._end != self._r or first == self._r
            if fresh and (self._end >= 0 or self.stats.discarded):
                self.stats.restarts += 1
            self._lease = n
            self.stats.intervals += 1
            rpm = None if self._rpm is None else self._rpm.copy()
            t = t0 + round((self._r - first) * 1e9 / fs)
            return Interval(self, self._r % self.capacity, n, t, fs, fresh, rpm)

    def release(self) -> None:
        """Done with the leased interval: its samples are free for the writer."""
        with self._cond:
            self._r += self._lease
            self._end = self._r
            self.stats.read += self._lease
            self._lease = 0
            self.stats.depth = self._w - self._r
            self._cond.notify_all()

    def close(self) -> None:
        """No more writes; the reader takes the whole intervals left, then gets None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def drained(self) -> bool:
        """Closed, and :meth:`take` found no whole interval left."""
        return self._drained
