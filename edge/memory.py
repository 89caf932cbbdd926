"""Process-level memory tuning for the DSP loop (glibc malloc).

Every report interval allocates a few large temporaries (windowed frames,
FFT outputs: 5-12 MB each for 64 channels). glibc serves blocks that large
with ``mmap`` and returns them with ``munmap``, so each interval faults tens
of megabytes of fresh pages in again: measured, a quarter of the DSP time.
Raising the mmap threshold and the trim threshold keeps those blocks in the
heap and reuses them; resident memory then stays at the loop's peak instead
of breathing, which is what a daemon with a fixed workload wants.

It also caps glibc at one malloc arena (``M_ARENA_MAX``, as the environment
variable ``MALLOC_ARENA_MAX=1`` would). By default every thread that
allocates gets an arena of its own: the acquisition thread's blocks, the
compute thread's DSP temporaries and the MQTT thread's buffers then each keep
their own free memory, which the others cannot reuse (with the thresholds
above it is never trimmed either). Measured at 256 channels: about 10 MB less
peak RSS, no measurable CPU cost (numpy allocates with the GIL held, so the
threads hardly contend for the arena's lock). Call it before the agent's
threads start. Elsewhere (musl, macOS) this is a no-op.

Buffers that live as long as the process (the sample ring) are kept out of
the heap altogether (:func:`mapped_zeros`): with the thresholds above, any
block under 32 MiB comes from the heap, and such a buffer, freed or not, sits
among the DSP temporaries that churn there every interval. Measured at 256
channels in ``bench.edge``, whose agent first builds a 1.25 s ring (32.8 MB,
in the heap) and then the live-sized one: the freed ring's hole, carved up by
the temporaries, left 10-25 MB of free but resident heap and a peak RSS of
139-147 MB; with both rings mapped, 134-137 MB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import mmap
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper bound for this setting on 64-bit
TRIM_THRESHOLD = 128 * 1024 * 1024
ARENA_MAX = 1


def keep_large_blocks() -> bool:
    """Ask glibc to keep freed DSP-sized blocks for reuse, in one arena; True when it
    took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    )
    log.debug("malloc tuning for the DSP loop: %s", "on" if ok else "not available")
    return ok


_S = TypeVar("_S", bound=np.generic)


def mapped_zeros(shape: tuple[int, ...], dtype: type[_S]) -> NDArray[_S]:
    """A zeroed array in an anonymous memory mapping of its own, never in the malloc
    heap, whatever its size (see the module doc); unmapped when the array is freed.
    Pages become resident as they are first written, as with ``np.zeros``."""
    dt: np.dtype[_S] = np.dtype(dtype)
    count = math.prod(shape)
    size = max(1, count * dt.itemsize)
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dt, count=count).reshape(shape)
