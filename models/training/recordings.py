"""Read a vibration recording for baseline fitting: CWRU-style ``.mat``, WAV, CSV/TSV, NPY.

A small reader on the model side (numpy/scipy only) so that ``pumpwatch
baseline fit --from FILE...`` and the benchmarks turn files into reports
through the edge's dsp. Samples come back in m/s^2.

- ``.mat`` (CWRU layout): the variable ending in ``_DE_time`` (or the one
  named by ``channel``); sample rate from ``fs`` or the file name (``12k_``
  / ``48k_``; CWRU's ``normal_*`` files are 48 kHz); running speed from the
  ``*RPM`` variable; CWRU stores acceleration in g.
- ``.wav``: rate from the header; ``channel`` selects a column.
- ``.csv`` / ``.tsv`` / ``.txt``: numeric columns (comma, tab or spaces), no
  header; ``channel`` selects a column; ``fs`` required.
- ``.npy``: 1-D, or 2-D as (channels, samples); ``fs`` required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
import scipy.io.wavfile
from numpy.typing import NDArray

G = 9.80665
Unit = Literal["m/s^2", "g"]


class RecordingError(ValueError):
    """A file that cannot be read as a recording; the message names the file."""


@dataclass(frozen=True, slots=True)
class Recording:
    x: NDArray[np.float64]  # m/s^2
    fs: float
    rpm: float | None
    name: str


def _column(a: NDArray[np.floating], channel: str | int | None, path: Path) -> NDArray[np.floating]:
    if a.ndim == 1:
        return a
    if a.ndim != 2:
        raise RecordingError(f"{path}: expected 1-D or 2-D samples, got shape {a.shape}")
    col = int(channel) if channel is not None else 0
    # csv/wav: (samples, channels); npy: (channels, samples)
    by_rows = path.suffix.lower() == ".npy"
    width = a.shape[0] if by_rows else a.shape[1]
    if not 0 <= col < width:
        raise RecordingError(f"{path}: channel {col} out of range (0..{width - 1})")
    return a[col] if by_rows else a[:, col]


def read_recording(
    path: str | Path,
    *,
    fs: float | None = None,
    channel: str | int | None = None,
    unit: Unit | None = None,
) -> Recording:
    p = Path(path)
    suffix = p.suffix.lower()
    rpm: float | None = None
    try:
        if suffix == ".mat":
            m = scipy.io.loadmat(p)
            keys = [k for k in m if not k.startswith("__")]
            want = str(channel) if channel is not None else "_DE_time"
            data = [k for k in keys if k.endswith(want) or k == want]
            if not data:
                raise RecordingError(f"{p}: no variable matching {want!r} (have {keys})")
            x = np.asarray(m[data[0]], dtype=np.float64).ravel()
            rpms = [k for k in keys if k.endswith("RPM")]
            if rpms:
                rpm = float(np.ravel(m[rpms[0]])[0])
            if fs is None:
                hit = re.match(r"(\d+)k_", p.name)
                fs = float(hit.group(1)) * 1000.0 if hit else (
                    48000.0 if p.name.startswith("normal_") else None
                )
            unit = unit or "g"
        elif suffix == ".wav":
            rate, data_arr = scipy.io.wavfile.read(p)
            a = np.asarray(data_arr)
            if a.dtype.kind in "iu":
                a = a.astype(np.float64) / float(np.iinfo(a.dtype).max)
            x = np.asarray(_column(a, channel, p), dtype=np.float64)
            fs = fs or float(rate)
        elif suffix in (".csv", ".tsv", ".txt"):
            delim = "," if suffix == ".csv" else None
            a = np.loadtxt(p, delimiter=delim, ndmin=1)
            x = np.asarray(_column(a, channel, p), dtype=np.float64)
        elif suffix == ".npy":
            a = np.load(p, allow_pickle=False)
            x = np.asarray(_column(a, channel, p), dtype=np.float64)
        else:
            raise RecordingError(
                f"{p}: unknown recording type {suffix!r} (.mat .wav .csv .tsv .npy)"
            )
    except OSError as exc:
        raise RecordingError(f"{p}: cannot read: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{p}: {exc}") from None
    if fs is None or not fs > 0:
        raise RecordingError(f"{p}: sample rate unknown: give fs")
    if (unit or "m/s^2") == "g":
        x = x * G
    return Recording(x=x, fs=float(fs), rpm=rpm, name=p.name)
