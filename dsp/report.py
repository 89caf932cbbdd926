"""The report: what an edge device says about one channel over one interval.

Wire format: msgpack of msgspec Structs encoded positionally (``array_like``:
field names cost a third of the byte budget); :func:`report_to_builtins`
gives the named, human form.
Schema rules (see STYLE.md): ``v`` is the schema major version and every
message carries it; later versions may only *append optional fields*; a
field's type never changes. Decoders reject an unknown ``v`` and name the
offending field for wrong types or truncated bytes.

One MQTT message carries a :class:`ReportBatch`. Each report inside it is
kept as its own msgpack bytes (``msgspec.Raw``) so that consumers can archive
and dedupe per report without re-encoding.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
import numpy as np
from numpy.typing import NDArray

from . import quantize

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

NonNeg = Annotated[float, msgspec.Meta(ge=0)]
#: DESIGN.md's name rule (device, site, pump, channel): letters, digits and ``-_.:``,
#: 1-64 characters; no MQTT wildcards, separators or control characters
#: (``\Z``, not ``$``: ``$`` would let a trailing newline through).
NAME_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}\Z"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = "1-64 characters from A-Z a-z 0-9 _ . : - (no '/', '+', '#', spaces)"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
DeviceName = Name  # = the AWS IoT thing name

# Quality flags (bitmask in Quality.flags)
Q_NONFINITE = 1 << 0  # NaN/inf samples were replaced by 0 before analysis
Q_CLIPPED = 1 << 1  # samples at the sensor's full scale (saturation)
Q_CONSTANT = 1 << 2  # dead sensor: no variation over the interval
Q_RESTART = 1 << 3  # first report after a gap / rate change / start
Q_SPEED_UNCERTAIN = 1 << 4  # running speed estimate has no clear 1x line
Q_DROPOUT = 1 << 5  # intermittently dead: runs of identical samples (Quality.dead counts them)
QUALITY_NAMES = {
    Q_NONFINITE: "nonfinite",
    Q_CLIPPED: "clipped",
    Q_CONSTANT: "constant",
    Q_RESTART: "restart",
    Q_SPEED_UNCERTAIN: "speed_uncertain",
    Q_DROPOUT: "dropout",
}


class Bearing(msgspec.Struct, gc=False, frozen=True, omit_defaults=True, array_like=True):
    """Rolling-element bearing geometry (mm, degrees)."""

    n_balls: Annotated[int, msgspec.Meta(ge=3, le=200)]
    ball_d_mm: Annotated[float, msgspec.Meta(gt=0)]
    pitch_d_mm: Annotated[float, msgspec.Meta(gt=0)]
    contact_deg: Annotated[float, msgspec.Meta(ge=0, lt=90)] = 0.0
    designation: str | None = None  # e.g. "6205"
    location: str | None = None  # e.g. "DE", "NDE"


class Asset(msgspec.Struct, gc=False, frozen=True, omit_defaults=True, array_like=True):
    """The pump, described well enough to interpret its spectra without a side channel."""

    bearings: list[Bearing] = []
    vanes: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    iso_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    rated_rpm: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # (A/B, B/C, C/D) zone limits in mm/s, overriding the ISO 20816 table.
    zone_limits: tuple[float, float, float] | None = None
    kind: str | None = None

    @property
    def impeller(self) -> bool:
        """Whether the machine has an impeller (a pump): its vanes are stated. Without
        one (a motor, a test rig) there is no blade pass and no cavitation."""
        return self.vanes is not None


class Speed(msgspec.Struct, gc=False, frozen=True, array_like=True):
    rpm: NonNeg
    source: Literal["measured", "estimated", "given", "unknown"]


class Features(msgspec.Struct, gc=False, frozen=True, omit_defaults=True, array_like=True):
    """Scalar features. Acceleration in m/s^2, velocity in mm/s RMS."""

    rms: NonNeg
    peak: NonNeg
    crest: NonNeg
    kurtosis: float  # Pearson: 3 for Gaussian
    skewness: float
    velocity_rms: NonNeg  # ISO 20816 broadband, band in velocity_band
    velocity_band: tuple[float, float]
    iso_zone: Literal["A", "B", "C", "D", "?"]
    band_rms: list[float]  # acceleration RMS per band in `bands`
    bands: list[tuple[float, float]]
    v1x: float | None = None  # velocity RMS of the 1x, 2x, 3x, blade-pass lines
    v2x: float | None = None
    v3x: float | None = None
    vbpf: float | None = None
    # Envelope-line prominence (height / local median) at the first bearing's
    # defect frequencies; ~1 = no line. env_bsf takes the larger of BSF and 2xBSF.
    env_bpfo: float | None = None
    env_bpfi: float | None = None
    env_bsf: float | None = None
    env_ftf: float | None = None
    env_kurtosis: float | None = None  # spectral kurtosis of the demodulation band


class Spectrum(msgspec.Struct, gc=False, frozen=True, array_like=True):
    """A quantized spectrum in dB: line k is at ``f0 + k * df`` Hz."""

    df: Annotated[float, msgspec.Meta(gt=0)]
    n: Annotated[int, msgspec.Meta(ge=0, le=quantize.MAX_LINES)]
    step_db: Annotated[float, msgspec.Meta(gt=0, le=6)]
    offset_db: float
    data: bytes
    codec: Literal["zstd-delta-u8"] = "zstd-delta-u8"
    f0: float = 0.0

    def db(self) -> NDArray[np.float64]:
        """The spectrum in dB (restored within half a step of what was encoded)."""
        return quantize.dequantize_db(
            quantize.unpack_codes(self.data, self.n), self.step_db, self.offset_db
        )

    def freqs(self) -> NDArray[np.float64]:
        return (self.f0 + self.df * np.arange(self.n)).astype(np.float64)


class Quality(msgspec.Struct, gc=False, frozen=True, omit_defaults=True, array_like=True):
    """Sample quality over the interval: flag bits and the sample counts behind them.

    ``nonfinite``: NaN/inf samples (replaced by 0); ``clipped``: samples at the
    sensor's full scale; ``dead``: samples inside runs of identical values at
    least :data:`dsp.analyze.DROPOUT_MIN_S` long (not at full scale).
    """

    flags: int = 0
    nonfinite: int = 0
    clipped: int = 0
    dead: int = 0

    def names(self) -> list[str]:
        return [name for bit, name in QUALITY_NAMES.items() if self.flags & bit]


class Report(msgspec.Struct, gc=False, frozen=True, omit_defaults=True, array_like=True):
    """One channel, one report interval.

    Identity is (device, epoch, seq). ``spectrum`` is the Welch-averaged power
    spectral density in dB re 1 (m/s^2)^2/Hz; ``envelope`` the squared-envelope
    spectrum (dimensionless, dB re its mean) demodulated in ``envelope_band``.
    """

    v: int
    device: DeviceName
    epoch: Annotated[int, msgspec.Meta(ge=0)]  # random 64-bit, drawn per agent start
    seq: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    site: Name
    pump: Name
    channel: Name
    t0_ns: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    duration_s: Annotated[float, msgspec.Meta(gt=0)]
    fs: Annotated[float, msgspec.Meta(gt=0)]
    nfft: Annotated[int, msgspec.Meta(ge=64)]
    hop: Annotated[int, msgspec.Meta(ge=1)]
    n_avg: Annotated[int, msgspec.Meta(ge=1)]
    window: Literal["hann", "flattop"]
    asset: Asset
    speed: Speed
    features: Features
    spectrum: Spectrum
    envelope: Spectrum | None = None
    envelope_band: tuple[float, float] | None = None
    quality: Quality = Quality()
    unit: Literal["m/s^2"] = "m/s^2"

    @property
    def identity(self) -> tuple[str, int, int]:
        return (self.device, self.epoch, self.seq)


class ReportBatch(msgspec.Struct, frozen=True):
    """One MQTT message: several encoded reports of one device."""

    v: int
    device: DeviceName
    reports: list[msgspec.Raw]


DecodeKind = Literal["malformed", "schema", "version", "name"]


class ReportDecodeError(ValueError):
    """A payload that is not a valid report: the reason, its kind, and what identity is known.

    ``kind``: ``malformed`` (not msgpack, truncated, bad UTF-8), ``schema`` (valid
    msgpack that breaks the schema: a wrong type, a missing field, a value out of
    range), ``name`` (a name that breaks the name rule, :data:`NAME_PATTERN`) or
    ``version`` (a schema version this decoder does not know).
    """

    def __init__(
        self,
        reason: str,
        *,
        identity: tuple[str, int, int] | None = None,
        kind: DecodeKind = "malformed",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.identity = identity
        self.kind: DecodeKind = kind


_report_encoder = msgspec.msgpack.Encoder()
_report_decoder = msgspec.msgpack.Decoder(Report)
_batch_decoder = msgspec.msgpack.Decoder(ReportBatch)


class _Head(msgspec.Struct):
    v: object = None
    device: object = None
    epoch: object = None
    seq: object = None


_head_decoder = msgspec.msgpack.Decoder(_Head)


def encode_report(report: Report) -> bytes:
    return _report_encoder.encode(report)


# What msgspec raises on bad input: its own errors, and UnicodeDecodeError for
# invalid UTF-8 inside a str field.
_BAD_INPUT = (msgspec.DecodeError, UnicodeDecodeError)


def _check_version(
    v: object, what: str, identity: tuple[str, int, int] | None = None
) -> None:
    if v not in SUPPORTED_VERSIONS:
        raise ReportDecodeError(
            f"unknown {what} schema version v={v!r} (supported: {sorted(SUPPORTED_VERSIONS)})",
            identity=identity,
            kind="version",
        )


def _head_version(data: bytes) -> object:
    try:
        return _head_decoder.decode(data).v
    except _BAD_INPUT:
        return SCHEMA_VERSION


def _kind(exc: Exception) -> DecodeKind:
    if not isinstance(exc, msgspec.ValidationError):
        return "malformed"
    return "name" if "matching regex" in str(exc) else "schema"


_any_decoder = msgspec.msgpack.Decoder()


def _best_identity(data: bytes) -> tuple[str, int, int] | None:
    """(device, epoch, seq) of a report that failed to decode, if its head is intact."""
    try:
        obj = _any_decoder.decode(data)
    except _BAD_INPUT:
        return None
    if isinstance(obj, list) and len(obj) >= 4:  # positional (array_like), as encoded
        device, epoch, seq = obj[1], obj[2], obj[3]
    elif isinstance(obj, dict):
        device, epoch, seq = obj.get("device"), obj.get("epoch"), obj.get("seq")
    else:
        return None
    if (isinstance(device, str) and isinstance(epoch, int) and isinstance(seq, int)
            and not isinstance(epoch, bool) and not isinstance(seq, bool)):
        return (device, epoch, seq)
    return None


def _reason(exc: Exception, fields: tuple[str, ...]) -> str:
    """msgspec's message, with a top-level position (``$[5]``) named (``pump``)."""
    text = str(exc)
    m = re.search(r"at `\$\[(\d+)\]", text)
    if m and int(m.group(1)) < len(fields):
        text += f" (field {fields[int(m.group(1))]})"
    if "matching regex" in text:
        text = f"name rule broken (letters, digits, -_.:, 1-64 chars): {text}"
    return text


def decode_report(data: bytes | msgspec.Raw) -> Report:
    """Strictly decode one report; :class:`ReportDecodeError` names the field at fault."""
    raw = bytes(data)
    try:
        report = _report_decoder.decode(raw)
    except _BAD_INPUT as exc:
        ident = _best_identity(raw)
        _check_version(_head_version(raw), "report", ident)
        raise ReportDecodeError(
            f"invalid report: {_reason(exc, Report.__struct_fields__)}", identity=ident,
            kind=_kind(exc),
        ) from None
    _check_version(report.v, "report", report.identity)
    return report


def encode_batch(device: str, reports: list[bytes]) -> bytes:
    """Wrap already-encoded reports into one message payload."""
    batch = ReportBatch(SCHEMA_VERSION, device, [msgspec.Raw(r) for r in reports])
    return _report_encoder.encode(batch)


def batch_overhead(device: str) -> int:
    """Bytes a batch adds around its reports (upper bound, for size caps)."""
    return len(encode_batch(device, [])) + 5


def decode_batch(data: bytes) -> ReportBatch:
    """Decode the batch envelope (not the reports inside: see :func:`decode_report`)."""
    try:
        batch = _batch_decoder.decode(data)
    except _BAD_INPUT as exc:
        _check_version(_head_version(data), "batch")
        raise ReportDecodeError(
            f"invalid report batch: {_reason(exc, ReportBatch.__struct_fields__)}",
            kind=_kind(exc),
        ) from None
    _check_version(batch.v, "batch")
    return batch


def named(obj: object) -> object:
    """Builtins with field names for positional (``array_like``) Structs, for humans and JSON."""
    if isinstance(obj, msgspec.Struct):
        return {f: named(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, list | tuple):
        return [named(v) for v in obj]
    if isinstance(obj, dict):
        return {k: named(v) for k, v in obj.items()}
    return msgspec.to_builtins(obj)


def report_to_builtins(report: Report) -> dict[str, object]:
    """A JSON-friendly dict of a report, with its spectra decoded to dB lists."""
    d = named(report)
    assert isinstance(d, dict)
    d["spectrum"] = {"df": report.spectrum.df, "db": report.spectrum.db().round(2).tolist()}
    if report.envelope is not None:
        d["envelope"] = {"df": report.envelope.df, "db": report.envelope.db().round(2).tolist()}
    d["quality"] = {**named(report.quality), "names": report.quality.names()}  # type: ignore[dict-item]
    return d
