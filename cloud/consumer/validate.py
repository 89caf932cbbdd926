"""What the model needs from a report, checked before it is invoked (pure; no I/O).

The codec checks types and ranges; this checks that a decoded report is
*consistent with itself*, so that one bad report can never fail a whole batch
at the endpoint (and trigger a bisection it would then pass alone). Each
failure is a :class:`~.errors.RemoteError` whose kind names the reason:

``name``       a device/site/pump/channel name breaks DESIGN.md's name rule
               (letters, digits and ``-_.:``; 1-64 characters)
``nonfinite``  NaN or infinity where the schema needs a number (fs, duration,
               speed, the features, the spectrum parameters)
``lengths``    ``band_rms`` and ``bands`` differ in length; a spectrum with
               more lines than ``nfft`` gives or reaching past Nyquist; an
               envelope without its band (or the other way round)
``blob``       spectrum or envelope bytes that do not decode to their ``n`` lines
"""

from __future__ import annotations

import math
import re

import dsp
from dsp import quantize

from .errors import RemoteError

NAME_RULE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def name_ok(name: str) -> bool:
    """DESIGN.md's name rule: letters, digits and ``-_.:``, 1-64 characters."""
    return NAME_RULE.fullmatch(name) is not None


def _finite(**values: float | None) -> None:
    for key, v in values.items():
        if v is not None and not math.isfinite(v):
            raise RemoteError("nonfinite", f"{key}={v} is not finite")


def _spectrum(what: str, s: dsp.Spectrum, fs: float) -> None:
    _finite(**{f"{what}.df": s.df, f"{what}.offset_db": s.offset_db, f"{what}.f0": s.f0,
               f"{what}.step_db": s.step_db})
    top = s.f0 + s.df * max(0, s.n - 1)
    if top > fs / 2 * (1 + 1e-9):
        raise RemoteError(
            "lengths", f"{what}: {s.n} lines of {s.df} Hz from {s.f0} Hz reach {top} Hz, past "
            f"Nyquist ({fs / 2} Hz)"
        )
    try:
        quantize.unpack_codes(s.data, s.n)
    except ValueError as exc:
        raise RemoteError("blob", f"{what}: {exc}") from None


def check_report(r: dsp.Report) -> None:
    """Raise :class:`RemoteError` (with the report's identity) if the model cannot use ``r``."""
    try:
        for key in ("device", "site", "pump", "channel"):
            value = getattr(r, key)
            if not name_ok(value):
                raise RemoteError("name", f"{key} {value!r} breaks the name rule "
                                  "(letters, digits, -_.:, 1-64 chars)")
        f = r.features
        _finite(fs=r.fs, duration_s=r.duration_s, rpm=r.speed.rpm, rms=f.rms, peak=f.peak,
                crest=f.crest, kurtosis=f.kurtosis, skewness=f.skewness,
                velocity_rms=f.velocity_rms, v1x=f.v1x, v2x=f.v2x, v3x=f.v3x, vbpf=f.vbpf,
                env_bpfo=f.env_bpfo, env_bpfi=f.env_bpfi, env_bsf=f.env_bsf,
                env_ftf=f.env_ftf, env_kurtosis=f.env_kurtosis)
        _finite(**{f"band_rms[{i}]": v for i, v in enumerate(f.band_rms)})
        _finite(**{f"bands[{i}]": v for i, b in enumerate(f.bands) for v in b})
        _finite(**{f"velocity_band[{i}]": v for i, v in enumerate(f.velocity_band)})
        if len(f.band_rms) != len(f.bands):
            raise RemoteError("lengths", f"band_rms has {len(f.band_rms)} values for "
                              f"{len(f.bands)} bands")
        if r.spectrum.n > r.nfft // 2 + 1:
            raise RemoteError("lengths", f"spectrum has {r.spectrum.n} lines, nfft={r.nfft} "
                              f"gives at most {r.nfft // 2 + 1}")
        _spectrum("spectrum", r.spectrum, r.fs)
        if (r.envelope is None) != (r.envelope_band is None):
            raise RemoteError("lengths", "envelope and envelope_band must come together")
        if r.envelope is not None:
            _spectrum("envelope", r.envelope, r.fs)
        if r.envelope_band is not None:
            _finite(**{f"envelope_band[{i}]": v for i, v in enumerate(r.envelope_band)})
    except RemoteError as err:
        raise RemoteError(err.kind, err.reason, identity=r.identity) from None
