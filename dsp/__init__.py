"""pumpwatch dsp: pure array code for vibration spectra, features and the report codec.

No I/O, no clocks, no logging: arrays in, arrays or structs out.
"""

from .analyze import ChannelResult, ChannelSpec, ReportConfig, analyze, make_report
from .bandtrack import BandState, BandTracking
from .envelope import EnvelopeResult, envelope_spectrum, line_prominence
from .features import (
    ISO_ZONE_LIMITS,
    LineSpectrum,
    bearing_orders,
    iso_zone,
    moments,
    psd_band_rms,
    velocity_rms,
)
from .framer import Framer, FramerStats, Window
from .quantize import dequantize_db, pack_codes, quantize_db, reduce_lines, to_db, unpack_codes
from .report import (
    QUALITY_NAMES,
    SCHEMA_VERSION,
    Asset,
    Bearing,
    Features,
    Quality,
    Report,
    ReportBatch,
    ReportDecodeError,
    Spectrum,
    Speed,
    batch_overhead,
    decode_batch,
    decode_report,
    encode_batch,
    encode_report,
    report_to_builtins,
)
from .spectra import frames_psd, rfft_freqs, welch_psd

__all__ = [
    "ISO_ZONE_LIMITS",
    "QUALITY_NAMES",
    "SCHEMA_VERSION",
    "Asset",
    "BandState",
    "BandTracking",
    "Bearing",
    "ChannelResult",
    "ChannelSpec",
    "EnvelopeResult",
    "Features",
    "Framer",
    "FramerStats",
    "LineSpectrum",
    "Quality",
    "Report",
    "ReportBatch",
    "ReportConfig",
    "ReportDecodeError",
    "Spectrum",
    "Speed",
    "Window",
    "analyze",
    "batch_overhead",
    "bearing_orders",
    "decode_batch",
    "decode_report",
    "dequantize_db",
    "encode_batch",
    "encode_report",
    "envelope_spectrum",
    "frames_psd",
    "iso_zone",
    "line_prominence",
    "make_report",
    "moments",
    "pack_codes",
    "psd_band_rms",
    "quantize_db",
    "reduce_lines",
    "report_to_builtins",
    "rfft_freqs",
    "to_db",
    "unpack_codes",
    "velocity_rms",
    "welch_psd",
]
