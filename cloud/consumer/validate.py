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


_FEATURES = ("rms", "peak", "crest", "kurtosis", "skewness", "velocity_rms", "v1x", "v2x",
             "v3x", "vbpf", "env_bpfo", "env_bpfi", "env_bsf", "env_ftf", "env_kurtosis")


def _finite(names: tuple[str, ...] | str, values: tuple[float | None, ...] | list[float]) -> None:
    """Cheap on the good path (one isfinite per value); names only built on failure."""
    for k, v in enumerate(values):
        if v is not None and not math.isfinite(v):
            key = names[k] if isinstance(names, tuple) else f"{names}[{k}]"
            raise RemoteError("nonfinite", f"{key}={v} is not finite")


def _spectrum(what: str, s: dsp.Spectrum, fs: float) -> None:
    _finite((f"{what}.df", f"{what}.offset_db", f"{what}.f0", f"{what}.step_db"),
            (s.df, s.offset_db, s.f0, s.step_db))
    top = s.f0 + s.df * max(0, s.n - 1)
    if top > fs / 2 * (1 + 1e-9):
        raise RemoteError(
            "lengths", f"{what}: {s.n} lines of {s.df} Hz from {s.f0} Hz reach {top} Hz, past "
            f"Nyquist ({fs / 2} Hz)"
        )
    try:
        quantize.check_codes(s.data, s.n)
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
        _finite(("fs", "duration_s", "rpm"), (r.fs, r.duration_s, r.speed.rpm))
        _finite(_FEATURES, tuple(getattr(f, k) for k in _FEATURES))
        _finite("band_rms", f.band_rms)
        _finite("bands", [v for b in f.bands for v in b])
        _finite("velocity_band", f.velocity_band)
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
            _finite("envelope_band", r.envelope_band)
    except RemoteError as err:
        raise RemoteError(err.kind, err.reason, identity=r.identity) from None
