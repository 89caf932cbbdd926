"""Vibration recordings: read WAV, CSV/TSV, NPY/NPZ, CWRU .mat and IMS text; write NPZ and WAV.

Every reader returns a :class:`Recording` in m/s^2: file values times a
scale (per file or per channel). CWRU and IMS recordings are in g, so their
default scale is :data:`G_TO_MS2`; everything else defaults to 1 (already
m/s^2, or for integer WAV: m/s^2 at digital full scale).

Sample rates: NPZ and WAV carry theirs; for CSV/TSV a ``# fs = 25600``
comment line or a leading ``time`` column (seconds) may; CWRU .mat files take
it from the mirror's ``12k_``/``48k_`` file-name prefix; IMS text files are
:data:`IMS_FS` (20 kHz, as documented upstream). An ``fs`` argument is
required where none of these applies (NPY, plain CSV, a .mat without prefix
such as CWRU's 48 kHz ``normal_*`` files). Where the file states its rate
(NPZ ``fs`` or ``meta.fs``, the WAV header, a CSV ``# fs`` line or time
column, the CWRU prefix), an ``fs`` that contradicts it is an error naming
both, since every frequency of the diagnosis would then be off by their
ratio; ``force_fs=True`` (``--force-fs``) takes ``fs`` anyway.

Channels: :meth:`Recording.channel_index` is the one channel selection every
command uses (a name, a ``.mat`` variable suffix or a 0-based column index).

A bad file raises :class:`RecordingError` naming the file and the problem
(unknown extension, truncated, missing variables, zero length, non-finite
values, wrong shape).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
import wave
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.io
import scipy.io.wavfile
from numpy.typing import NDArray

__all__ = [
    "G_TO_MS2",
    "IMS_FS",
    "READ_EXTENSIONS",
    "Recording",
    "RecordingError",
    "read_recording",
    "write_npz",
    "write_recording",
    "write_wav",
]

G_TO_MS2 = 9.80665
READ_EXTENSIONS = (".wav", ".csv", ".tsv", ".txt", ".npy", ".npz", ".mat")
#: The IMS bearing rig's sample rate, decided once from the upstream documentation: the
#: readme of the IMS "Bearing Data Set" (NASA Ames Prognostics Data Repository; J. Lee,
#: H. Qiu, G. Yu, J. Lin, Rexnord Technical Services; described in Qiu et al. 2006,
#: "Wavelet filter-based weak signature detection method and its application on rolling
#: element bearing prognostics", J. Sound Vib. 289) says "Each file consists of 20,480
#: points with the sampling rate set at 20 kHz". So 20,000 Hz: a snapshot is 1.024 s.
#: 20,480 Hz (points per "1-second" snapshot) is used by some analyses; it is not fitted
#: here from fault-line positions in the shared files (those are for measuring only).
#: Every IMS reader and benchmark uses this constant; ``--fs`` overrides it per command.
IMS_FS = 20_000.0

Layout = Literal["npz", "npy", "wav", "csv", "cwru", "ims"]
Scale = float | Sequence[float] | None

_IMS_NAME = re.compile(r"(^ims)|(\d{4}\.\d{2}\.\d{2}\.\d{2}\.\d{2}\.\d{2})", re.IGNORECASE)
_CWRU_RATE = re.compile(r"^(\d+)k_", re.IGNORECASE)
_FS_COMMENT = re.compile(r"(?:\bfs|sample[_ ]?rate)\s*[=:]\s*([0-9.eE+]+)", re.IGNORECASE)
_TIME_COLUMNS = ("t", "time", "time_s", "t_s", "seconds")
_CWRU_SUFFIX = {"_DE_time": "DE", "_FE_time": "FE", "_BA_time": "BA"}
# Geometry of the CWRU rig (SKF 6205-2RS JEM drive end, 6203-2RS JEM fan end) and the IMS
# rig (Rexnord ZA-2115, 2000 rpm), as their documentation gives it.
_CWRU_BEARINGS = {"DE": "6205", "FE": "6203"}


class RecordingError(ValueError):
    """A recording that cannot be read or written; names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Recording:
    """Samples ``(channels, n)`` float32 in m/s^2 at ``fs`` Hz, with what the file said."""

    samples: NDArray[np.floating[Any]]  # float32 once read (readers build float64 first)
    fs: float
    channels: tuple[str, ...]
    rpm: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    layout: Layout = "npz"

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def channel_index(self, name: str | int) -> int:
        """The one channel selection every command uses (``--channel``), tried in order:

        a channel name (exact, then case-insensitive); a ``.mat`` variable name
        or suffix (``X097_FE_time``, ``_FE_time``, ``FE_time``); a 0-based
        column index (``2`` or ``"2"``).
        """
        key = str(name)
        if key in self.channels:
            return self.channels.index(key)
        lowered = [c.lower() for c in self.channels]
        if key.lower() in lowered:
            return lowered.index(key.lower())
        variables = self.meta.get("variables")
        if isinstance(variables, dict) and key:
            hits = [c for c, var in variables.items() if str(var).endswith(key)]
            if len(hits) == 1 and hits[0] in self.channels:
                return self.channels.index(hits[0])
        if key.isdigit() and int(key) < len(self.channels):
            return int(key)
        raise RecordingError(
            self.path or "<recording>",
            f"no channel {key!r}; channels are {list(self.channels)} (or a 0-based column "
            f"index 0..{len(self.channels) - 1}"
            + (f", or a .mat variable suffix of {sorted(variables.values())}" if variables else "")
            + ")",
        )

    def select(self, names: Sequence[str | int]) -> Recording:
        idx = [self.channel_index(n) for n in names]
        return replace(
            self, samples=self.samples[idx], channels=tuple(self.channels[i] for i in idx)
        )


# --- reading ---------------------------------------------------------------------------------


def read_recording(
    path: str | Path,
    *,
    fs: float | None = None,
    scale: Scale = None,
    channels: Sequence[str | int] | None = None,
    force_fs: bool = False,
) -> Recording:
    """Read any supported recording; ``fs`` gives the rate of a file that states none (and
    must agree with one that does, unless ``force_fs``), ``scale`` its units, ``channels``
    keeps only those (each as :meth:`Recording.channel_index` selects it)."""
    p = Path(path)
    if fs is not None and not (np.isfinite(fs) and fs > 0):
        raise RecordingError(p, f"sample rate must be > 0 Hz, got fs={fs}")
    if not p.is_file():
        raise RecordingError(p, "no such file")
    ext = p.suffix.lower()
    try:
        # IMS files upstream have no extension: their names are timestamps ("....12.06.24").
        if _IMS_NAME.search(p.name) and (ext in ("", ".tsv", ".txt", ".csv") or ext[1:].isdigit()):
            rec = _read_text(p, fs, ims=True)
        elif ext == ".npz":
            rec = _read_npz(p, fs)
        elif ext == ".npy":
            rec = _read_npy(p, fs)
        elif ext == ".wav":
            rec = _read_wav(p, fs)
        elif ext in (".csv", ".tsv", ".txt"):
            rec = _read_text(p, fs, ims=False)
        elif ext == ".mat":
            rec = _read_cwru(p, fs)
        else:
            raise RecordingError(
                p,
                f"unknown recording type {ext or '(no extension)'!r}; "
                f"supported: {', '.join(READ_EXTENSIONS)} and IMS text files",
            )
    except RecordingError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # library errors on corrupt input: one boundary
        raise RecordingError(p, f"cannot read ({type(exc).__name__}: {exc})") from None
    own, where = rec.meta.pop("_own_fs", (None, ""))
    if fs is not None and own is not None and not force_fs and not _same_rate(fs, own):
        raise RecordingError(
            p, f"--fs {fs:g} Hz contradicts the file's own rate, {own:g} Hz ({where}); "
            f"every frequency would be off by {fs / own:.3g}x. Drop --fs, or give --force-fs "
            f"to analyze it at {fs:g} Hz anyway",
        )
    return _finish(rec, p, scale, channels)


def _same_rate(a: float, b: float) -> bool:
    """Equal within what the file can state: WAV headers hold whole Hz, a time column
    rounded seconds (0.5 %)."""
    return abs(a - b) <= max(0.5, 0.005 * b)


def _own(rate: float | None, where: str) -> dict[str, Any]:
    """The file's own statement of its rate, for :func:`read_recording` to check ``fs``."""
    return {} if rate is None else {"_own_fs": (float(rate), where)}


def _finish(
    rec: Recording, p: Path, scale: Scale, channels: Sequence[str | int] | None
) -> Recording:
    x = rec.samples
    if x.size == 0:
        raise RecordingError(p, f"zero length: the recording has no samples (shape {x.shape})")
    if x.ndim != 2 or x.shape[0] < 1:
        raise RecordingError(p, f"expected samples shaped (channels, n), got shape {x.shape}")
    if x.shape[1] == 0:
        raise RecordingError(p, "zero length: the recording has no samples")
    if len(rec.channels) != x.shape[0]:
        raise RecordingError(p, f"{len(rec.channels)} channel names for {x.shape[0]} channels")
    if not (np.isfinite(rec.fs) and rec.fs > 0):
        raise RecordingError(p, f"sample rate must be > 0 Hz, got {rec.fs}")
    finite = np.isfinite(x)
    if not finite.all():
        bad = int(x.size - np.count_nonzero(finite))
        c, i = np.argwhere(~finite)[0]
        raise RecordingError(
            p, f"{bad} non-finite values (first: channel {rec.channels[c]!r}, sample {i})"
        )
    if scale is None:
        scale = G_TO_MS2 if rec.layout in ("cwru", "ims") else 1.0
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size not in (1, x.shape[0]) or not (np.isfinite(s).all() and (s != 0).all()):
        raise RecordingError(
            p, f"scale must be one non-zero number or one per channel ({x.shape[0]}), got {scale}"
        )
    samples = (x * s[:, None]).astype(np.float32) if (s != 1).any() else x.astype(np.float32)
    meta = {**rec.meta, "scale_to_ms2": s.tolist() if s.size > 1 else float(s[0])}
    out = replace(rec, samples=np.ascontiguousarray(samples), meta=meta, path=p)
    if channels:
        out = out.select(channels)
    return out


def _need_fs(p: Path, fs: float | None, why: str) -> float:
    if fs is None:
        raise RecordingError(p, f"sample rate unknown ({why}); give it with --fs HZ")
    return float(fs)


def _as_channels_first(p: Path, a: NDArray[Any]) -> NDArray[Any]:
    if a.ndim == 1:
        return a[np.newaxis, :]
    if a.ndim != 2:
        raise RecordingError(p, f"expected a 1-D or 2-D array, got shape {a.shape}")
    # (samples, channels) when there are more rows than columns.
    return a.T if a.shape[0] > a.shape[1] else a


def _read_npy(p: Path, fs: float | None) -> Recording:
    a = np.load(p, allow_pickle=False)
    if not np.issubdtype(a.dtype, np.number):
        raise RecordingError(p, f"expected a numeric array, got dtype {a.dtype}")
    x = _as_channels_first(p, a)
    rate = _need_fs(p, fs, ".npy files carry no sample rate")
    names = tuple(f"ch{i + 1}" for i in range(x.shape[0]))
    return Recording(x.astype(np.float64), rate, names, layout="npy")


def _read_npz(p: Path, fs: float | None) -> Recording:
    with np.load(p, allow_pickle=False) as z:
        keys = list(z.keys())
        if "samples" in keys:
            x = _as_channels_first(p, np.asarray(z["samples"]))
        elif len(keys) == 1:
            x = _as_channels_first(p, np.asarray(z[keys[0]]))
        else:
            raise RecordingError(p, f"no 'samples' array (arrays in file: {keys})")
        meta: dict[str, Any] = {}
        if "meta" in keys:
            try:
                meta = json.loads(str(z["meta"]))
            except json.JSONDecodeError as exc:
                raise RecordingError(p, f"'meta' is not valid JSON: {exc}") from None
        own: float | None = float(z["fs"]) if "fs" in keys else None
        where = "its 'fs' array"
        if own is None and isinstance(meta.get("fs"), int | float):
            own, where = float(meta["fs"]), "its metadata's fs"
        rate = fs if fs is not None else own
        rate = _need_fs(p, rate, "no 'fs' in the file")
        if "channels" in keys:
            names = tuple(str(c) for c in np.asarray(z["channels"]).reshape(-1))
        else:
            names = tuple(f"ch{i + 1}" for i in range(x.shape[0]))
    if not np.issubdtype(x.dtype, np.number):
        raise RecordingError(p, f"expected numeric samples, got dtype {x.dtype}")
    rpm = meta.get("rpm")
    return Recording(
        x,
        float(rate),
        names,
        rpm=float(rpm) if isinstance(rpm, int | float) else None,
        meta={**meta, **_own(own, where)},
        layout="npz",
    )


def _riff_chunks(p: Path, data: bytes) -> dict[bytes, tuple[int, int]]:
    """Chunk id -> (offset of its payload, declared size); checks the file is complete."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RecordingError(p, "not a RIFF/WAVE file")
    chunks: dict[bytes, tuple[int, int]] = {}
    off = 12
    while off + 8 <= len(data):
        cid, size = data[off : off + 4], struct.unpack("<I", data[off + 4 : off + 8])[0]
        if off + 8 + size > len(data):
            raise RecordingError(
                p,
                f"truncated: chunk {cid.decode('latin-1')!r} declares {size} bytes, "
                f"{len(data) - off - 8} present",
            )
        chunks.setdefault(cid, (off + 8, size))
        off += 8 + size + (size & 1)
    for need in (b"fmt ", b"data"):
        if need not in chunks:
            raise RecordingError(p, f"no {need.decode().strip()!r} chunk (truncated or not a WAV)")
    return chunks


def _read_wav(p: Path, fs: float | None) -> Recording:
    raw = p.read_bytes()
    chunks = _riff_chunks(p, raw)
    rate, a = scipy.io.wavfile.read(io.BytesIO(raw))
    a = np.asarray(a)
    if a.dtype == np.uint8:
        x = (a.astype(np.float64) - 128.0) / 128.0
    elif a.dtype == np.int16:
        x = a.astype(np.float64) / 32768.0
    elif a.dtype == np.int32:  # 24- and 32-bit PCM, left-justified by scipy
        x = a.astype(np.float64) / 2147483648.0
    elif a.dtype in (np.float32, np.float64):
        x = a.astype(np.float64)
    else:
        raise RecordingError(p, f"unsupported WAV sample type {a.dtype}")
    x = x[:, np.newaxis] if x.ndim == 1 else x
    meta: dict[str, Any] = {}
    scale = 1.0
    names = tuple(f"ch{i + 1}" for i in range(x.shape[1]))
    if b"LIST" in chunks:
        ours = _read_list_meta(raw, *chunks[b"LIST"])
        if ours:
            meta = ours.get("meta", {})
            scale = float(ours.get("full_scale", 1.0))
            got = ours.get("channels")
            if isinstance(got, list) and len(got) == x.shape[1]:
                names = tuple(str(c) for c in got)
    samples = x.T * scale
    rpm = meta.get("rpm")
    return Recording(
        samples,
        float(fs if fs is not None else rate),
        names,
        rpm=float(rpm) if isinstance(rpm, int | float) else None,
        meta={**meta, **_own(float(rate), "the WAV header")},
        layout="wav",
    )


_INFO_KEY = b"ICMT"
_META_TAG = "pumpwatch:"


def _read_list_meta(raw: bytes, off: int, size: int) -> dict[str, Any] | None:
    body = raw[off : off + size]
    if body[:4] != b"INFO":
        return None
    i = 4
    while i + 8 <= len(body):
        cid, n = body[i : i + 4], struct.unpack("<I", body[i + 4 : i + 8])[0]
        if cid == _INFO_KEY:
            text = body[i + 8 : i + 8 + n].rstrip(b"\0").decode("utf-8", "replace")
            if text.startswith(_META_TAG):
                try:
                    out = json.loads(text[len(_META_TAG) :])
                except json.JSONDecodeError:
                    return None
                return out if isinstance(out, dict) else None
        i += 8 + n + (n & 1)
    return None


def _read_text(p: Path, fs: float | None, *, ims: bool) -> Recording:
    text = p.read_text(encoding="utf-8", errors="strict")
    rate: float | None = None
    where = "its '# fs' line"
    lines: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = _FS_COMMENT.search(s)
            if m:
                rate = float(m.group(1))
            continue
        lines.append(s)
    if not lines:
        raise RecordingError(p, "zero length: no data rows")
    first = lines[0]
    delim = "\t" if "\t" in first else "," if "," in first else ";" if ";" in first else None
    head = [f.strip() for f in (first.split(delim) if delim else first.split())]
    names: tuple[str, ...] | None = None
    try:
        [float(v) for v in head]
    except ValueError:
        names = tuple(h or f"ch{i + 1}" for i, h in enumerate(head))
        lines = lines[1:]
        if not lines:
            raise RecordingError(p, "zero length: a header and no data rows") from None
    ncol = len(head)
    body = "\n".join(lines)
    if delim:
        body = body.replace(delim, " ")
    values = np.array(body.split(), dtype=np.float64)
    if values.size % ncol:
        for i, line in enumerate(lines):
            n = len(line.split(delim) if delim else line.split())
            if n != ncol:
                raise RecordingError(
                    p, f"data row {i + 1} has {n} fields, expected {ncol} (truncated?)"
                )
        raise RecordingError(p, f"{values.size} values do not fill {ncol} columns")
    x = values.reshape(-1, ncol).T
    meta: dict[str, Any] = {}
    if ims:
        if ncol != 8:
            raise RecordingError(p, f"IMS layout has 8 tab-separated columns, found {ncol}")
        layout: Layout = "ims"
        rate = fs if fs is not None else IMS_FS
        meta = {"layout": "ims", "bearing": "ZA-2115", "nominal_rpm": 2000.0}
        names = names or tuple(f"ch{i + 1}" for i in range(8))
    else:
        layout = "csv"
        if names and names[0].strip().lower() in _TIME_COLUMNS and ncol > 1:
            # A leading time column (seconds) gives the rate when nothing else does.
            dt = np.diff(x[0])
            if rate is None and dt.size and np.all(dt > 0):
                rate = 1.0 / float(np.median(dt))
                where = "its time column"
            x, names = x[1:], names[1:]
        meta = _own(rate, where)
        rate = _need_fs(p, fs if fs is not None else rate, "no '# fs = ...' line in the file")
        names = names or tuple(f"ch{i + 1}" for i in range(x.shape[0]))
    return Recording(x, float(rate), names, meta=meta, layout=layout)


def _read_cwru(p: Path, fs: float | None) -> Recording:
    try:
        mat = scipy.io.loadmat(p)
    except (ValueError, TypeError, OSError, struct.error, zipfile.BadZipFile) as exc:
        raise RecordingError(p, f"not a readable MATLAB file (truncated?): {exc}") from None
    groups: dict[str, dict[str, NDArray[Any]]] = {}
    rpms: dict[str, float] = {}
    for key, val in mat.items():
        if key.startswith("__"):
            continue
        for suffix, ch in _CWRU_SUFFIX.items():
            if key.endswith(suffix):
                groups.setdefault(key[: -len(suffix)], {})[ch] = np.asarray(val, np.float64)
        if key.endswith("RPM"):
            with contextlib.suppress(IndexError, TypeError, ValueError):
                rpms[key[:-3]] = float(np.asarray(val).reshape(-1)[0])
    if not groups:
        names = [k for k in mat if not k.startswith("__")]
        raise RecordingError(
            p, f"no *_DE_time, *_FE_time or *_BA_time variables (variables: {names})"
        )
    prefix = _pick_group(p, sorted(groups))
    chans = groups[prefix]
    order = [c for c in ("DE", "FE", "BA") if c in chans]
    lengths = {c: chans[c].size for c in order}
    n = min(lengths.values())
    if len(set(lengths.values())) > 1:
        raise RecordingError(p, f"channels differ in length: {lengths}")
    x = np.stack([chans[c].reshape(-1)[:n] for c in order])
    m = _CWRU_RATE.match(p.name)
    own = float(m.group(1)) * 1000.0 if m else None
    if fs is None:
        if own is None:
            raise RecordingError(
                p, "sample rate unknown (no 12k_/48k_ prefix in the file name); give --fs HZ"
            )
        rate = own
    else:
        rate = float(fs)
    rpm = rpms.get(prefix)
    if rpm is None and len(rpms) == 1:
        rpm = next(iter(rpms.values()))
    meta: dict[str, Any] = {
        "layout": "cwru",
        "variables": {c: f"{prefix}{s}" for s, c in _CWRU_SUFFIX.items() if c in chans},
        "bearings": {c: _CWRU_BEARINGS[c] for c in order if c in _CWRU_BEARINGS},
    }
    if rpm is not None:
        meta["rpm"] = rpm
    meta.update(_own(own, f"the file name's {p.name[:p.name.index('_') + 1]} prefix"
                     if own is not None else ""))
    return Recording(x, rate, tuple(order), rpm=rpm, meta=meta, layout="cwru")


def _pick_group(p: Path, prefixes: list[str]) -> str:
    """The variable prefix (``X097``) of the recording a CWRU file is named after."""
    if len(prefixes) == 1:
        return prefixes[0]
    m = re.search(r"_(\d+)\.mat$", p.name, re.IGNORECASE)
    if m:
        for pre in prefixes:
            digits = re.sub(r"\D", "", pre)
            if digits and int(digits) == int(m.group(1)):
                return pre
    raise RecordingError(p, f"several recordings in one file ({', '.join(prefixes)}); ambiguous")


# --- writing ---------------------------------------------------------------------------------


def write_npz(path: str | Path, rec: Recording) -> Path:
    """``samples`` (float32 [ch, n], m/s^2), ``fs``, ``channels`` and ``meta`` (JSON)."""
    p = Path(path)
    _check_writable(p, rec)
    try:
        with p.open("wb") as f:
            np.savez(
                f,
                samples=np.ascontiguousarray(rec.samples, dtype=np.float32),
                fs=np.float64(rec.fs),
                channels=np.array(rec.channels, dtype=str),
                meta=np.array(json.dumps(rec.meta, default=_json_default)),
            )
    except OSError as exc:
        raise RecordingError(p, f"cannot write: {exc.strerror or exc}") from None
    return p


def write_wav(
    path: str | Path,
    rec: Recording,
    *,
    sample_format: Literal["float32", "int16", "int24"] = "float32",
    full_scale: float | None = None,
) -> Path:
    """A multichannel WAV; integer formats map +-``full_scale`` m/s^2 to digital full scale.

    ``full_scale`` defaults to the recording's peak. The channel names, the
    full scale and the meta travel in a ``LIST/INFO/ICMT`` chunk, so reading
    the file back gives m/s^2 again (other programs ignore the chunk).
    """
    p = Path(path)
    _check_writable(p, rec)
    x = np.asarray(rec.samples, dtype=np.float64)
    try:
        if sample_format == "float32":
            scale = 1.0
            scipy.io.wavfile.write(p, round(rec.fs), np.ascontiguousarray(x.T, dtype=np.float32))
        else:
            peak = float(np.abs(x).max())
            scale = float(full_scale) if full_scale else (peak if peak > 0 else 1.0)
            bits = 16 if sample_format == "int16" else 24
            top = 2 ** (bits - 1) - 1
            codes = np.ascontiguousarray(
                np.clip(np.rint(x.T / scale * top), -top - 1, top), dtype="<i4"
            )
            scale *= (2 ** (bits - 1)) / top  # reader divides by 2**(bits-1)
            if bits == 16:
                frames = codes.astype("<i2").tobytes()
            else:
                frames = codes.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
            with wave.open(str(p), "wb") as w:
                w.setnchannels(x.shape[0])
                w.setsampwidth(bits // 8)
                w.setframerate(round(rec.fs))
                w.writeframes(frames)
        info = {"channels": list(rec.channels), "full_scale": scale, "meta": rec.meta}
        _append_info(p, _META_TAG + json.dumps(info, default=_json_default))
    except OSError as exc:
        raise RecordingError(p, f"cannot write: {exc.strerror or exc}") from None
    return p


def _append_info(p: Path, text: str) -> None:
    payload = text.encode("utf-8") + b"\0"
    if len(payload) & 1:
        payload += b"\0"
    sub = _INFO_KEY + struct.pack("<I", len(payload)) + payload
    chunk = b"LIST" + struct.pack("<I", 4 + len(sub)) + b"INFO" + sub
    with p.open("r+b") as f:
        f.seek(0, 2)
        if f.tell() & 1:
            f.write(b"\0")
        f.write(chunk)
        end = f.tell()
        f.seek(4)
        f.write(struct.pack("<I", end - 8))


def write_recording(path: str | Path, rec: Recording) -> Path:
    """By extension: ``.npz`` or ``.wav`` (float32)."""
    p = Path(path)
    if p.suffix.lower() == ".npz":
        return write_npz(p, rec)
    if p.suffix.lower() == ".wav":
        return write_wav(p, rec)
    raise RecordingError(p, f"cannot write {p.suffix or '(no extension)'!r}; use .npz or .wav")


def _check_writable(p: Path, rec: Recording) -> None:
    if rec.samples.ndim != 2 or rec.samples.shape[1] == 0:
        raise RecordingError(p, f"nothing to write: samples shaped {rec.samples.shape}")
    if len(rec.channels) != rec.samples.shape[0]:
        raise RecordingError(p, "one channel name per channel needed")


def _json_default(o: object) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
