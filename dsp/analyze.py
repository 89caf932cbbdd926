"""One report interval of many channels in, per-channel reports out.

This is the computation the edge runs (and the cloud re-runs for training),
vectorized across channels: a Welch PSD, one fine-resolution spectrum of the
whole interval (velocity, running speed, order lines), time-domain moments,
and the envelope spectrum. Bad samples never raise: they are counted, fixed
up (non-finite -> 0) and flagged in the report's quality.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from . import quantize
from ._validate import check_band, check_fs, check_hop, check_nfft
from .bandtrack import BandState
from .config import InvalidConfigError
from .envelope import envelope_spectrum, line_prominence
from .features import (
    ISO_ZONE_LIMITS,
    LineSpectrum,
    iso_zone,
    moments,
    psd_band_rms,
    tapered_rfft,
)
from .report import (
    Q_CLIPPED,
    Q_CONSTANT,
    Q_DROPOUT,
    Q_NONFINITE,
    Q_RESTART,
    Q_SPEED_UNCERTAIN,
    SCHEMA_VERSION,
    Asset,
    Features,
    Quality,
    Report,
    Spectrum,
    Speed,
)
from .spectra import WINDOWS, WindowName, rfft_freqs, segment_count, welch_from_frames

#: Relative search window for bearing-defect lines: real lines sit 1-3 % off the catalog
#: orders (rolling-element slip, a textbook fact), on top of a given speed's own error.
DEFECT_LINE_TOL = 0.03
_DEFECTS = ("bpfo", "bpfi", "bsf", "ftf")

F64 = NDArray[np.float64]
MAX_REPORT_BYTES = 5120  # one AWS IoT metering step
# Quantized lines cost at most a byte each (incompressible worst case); the rest
# of a report (names at their maximum length, features, asset) stays under ~1 kB.
MAX_WIRE_LINES = 4000
#: A run of identical samples at least this long (and not at full scale) is a dropout:
#: a live accelerometer's noise floor changes the ADC code within microseconds, and even
#: the slowest shaft line (600 rpm) moves the signal within a few ms, so 10 ms of one value
#: means the chain delivered no signal (loose connector, dead channel, stalled ADC).
DROPOUT_MIN_S = 0.010
_DROPOUT_MIN_SAMPLES = 32  # at low rates a run must still be long in samples


class ReportConfigError(InvalidConfigError):
    """An invalid :class:`ReportConfig`: ``problems`` lists each; the message all of them."""

    def __str__(self) -> str:
        return "invalid report config: " + "; ".join(self.problems)


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """How reports are computed. Defaults: 25.6 kHz, 1 s reports, 1600 lines to 10 kHz."""

    fs: float = 25600.0
    nfft: int = 4096
    hop: int = 2048
    interval_s: float = 1.0
    window: WindowName = "hann"
    lines: int = 1600
    step_db: float = 0.5
    velocity_band: tuple[float, float] = (10.0, 1000.0)
    bands: tuple[tuple[float, float], ...] = (
        (10.0, 1000.0),
        (1000.0, 2500.0),
        (2500.0, 5000.0),
        (5000.0, 10000.0),
    )
    rpm_range: tuple[float, float] = (300.0, 4000.0)
    envelope: bool = True
    env_band: tuple[float, float] | None = None  # None: chosen by spectral kurtosis, tracked
    env_remove_lines: bool = True
    env_fmax: float = 500.0
    env_lines: int = 250
    env_step_db: float = 1.0

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ReportConfigError(problems, source="report config")

    def problems(self) -> list[str]:
        """Every problem with this config, each naming the value."""
        out: list[str] = []

        def check(fn: object, *args: object) -> None:
            try:
                fn(*args)  # type: ignore[operator]
            except ValueError as exc:
                out.append(str(exc))

        check(check_fs, self.fs)
        check(check_nfft, self.nfft)
        if isinstance(self.nfft, int) and self.nfft >= 1:  # hop is judged against any nfft
            check(check_hop, self.hop, self.nfft)
        if self.window not in WINDOWS:
            out.append(f"window must be one of {WINDOWS}, got window={self.window!r}")
        if not (isinstance(self.interval_s, int | float) and self.interval_s > 0):
            out.append(f"interval_s must be > 0, got interval_s={self.interval_s!r}")
        elif not out and self.interval_samples < self.nfft:
            out.append(
                f"interval_s={self.interval_s} gives {self.interval_samples} samples, "
                f"fewer than nfft={self.nfft}"
            )
        if not out and not 1 <= self.lines <= self.nfft // 2 + 1:
            out.append(f"lines must be in 1..nfft/2+1 ({self.nfft // 2 + 1}), got {self.lines=}")
        for name in ("step_db", "env_step_db"):
            v = getattr(self, name)
            if not 0 < v <= 6:
                out.append(f"{name} must be in (0, 6] dB, got {name}={v}")
        if math.isfinite(self.fs) and self.fs > 0:
            check(check_band, self.velocity_band, self.fs)
            for i, b in enumerate(self.bands):
                try:
                    check_band(b, self.fs, name=f"bands[{i}]")
                except ValueError as exc:
                    out.append(str(exc))
            if self.env_band is not None:
                try:
                    check_band(self.env_band, self.fs, name="env_band")
                except ValueError as exc:
                    out.append(str(exc))
            if not 0 < self.env_fmax < self.fs / 2:
                out.append(f"env_fmax must be in (0, fs/2) Hz, got env_fmax={self.env_fmax}")
        lo, hi = self.rpm_range
        if not 0 < lo < hi:
            out.append(f"rpm_range must satisfy 0 < low < high, got rpm_range={self.rpm_range}")
        if self.env_lines < 1:
            out.append(f"env_lines must be >= 1, got env_lines={self.env_lines}")
        if self.lines + (self.env_lines if self.envelope else 0) > MAX_WIRE_LINES:
            out.append(
                f"lines + env_lines must be <= {MAX_WIRE_LINES} so that a report stays under "
                f"{MAX_REPORT_BYTES} bytes, got {self.lines} + {self.env_lines}"
            )
        return out

    @property
    def interval_samples(self) -> int:
        return round(self.interval_s * self.fs)

    def at_rate(self, fs: float) -> ReportConfig:
        """This config for samples at ``fs`` Hz, as the edge replays a recording: same
        nfft, interval and window; bands, velocity band, envelope band and ``env_fmax``
        cut to what ``fs`` can carry. Raises ValueError (naming the values) if none fits."""
        nyq = fs / 2
        return dataclasses.replace(
            self,
            fs=fs,
            lines=min(self.lines, self.nfft // 2 + 1),
            bands=tuple(b for b in self.bands if b[1] <= nyq) or ((10.0, nyq * 0.9),),
            velocity_band=(self.velocity_band[0], min(self.velocity_band[1], nyq * 0.9)),
            env_fmax=min(self.env_fmax, nyq * 0.5),
            env_band=None if self.env_band is None or self.env_band[1] > nyq else self.env_band,
        )


@dataclass(frozen=True, kw_only=True)
class ChannelSpec:
    """What the analysis needs to know about one channel's pump and sensor."""

    asset: Asset = field(default_factory=Asset)
    rpm: float | None = None  # given (config) or measured (tachometer) speed
    rpm_source: str = "given"
    full_scale: float | None = None  # m/s^2 at which the sensor chain saturates


@dataclass(frozen=True, slots=True)
class ChannelResult:
    features: Features
    speed: Speed
    spectrum: Spectrum
    envelope: Spectrum | None
    envelope_band: tuple[float, float] | None
    quality: Quality
    n_avg: int
    # the envelope band tracker's state after this report: pass it with the next
    # report of the same stream (None: no envelope, or a band fixed by the config)
    band_state: BandState | None = None


def _orders(asset: Asset) -> dict[str, float] | None:
    if not asset.bearings:
        return None
    from .features import bearing_orders

    b = asset.bearings[0]
    return bearing_orders(b.n_balls, b.ball_d_mm, b.pitch_d_mm, b.contact_deg)


def _dead_samples(a: NDArray[np.floating], fullscale: F64, min_run: int) -> NDArray[np.int64]:
    """Per channel, samples inside runs of >= ``min_run`` identical values below full scale.

    A run of ``min_run`` samples holds ``min_run - 1`` equal neighbours, so it holds
    one pair ``(i, i + 1)`` with ``i`` a multiple of ``min_run - 1``: comparing only
    those pairs (one in ``min_run - 1`` of the samples) finds every channel that may
    have a run. The full comparison, the full-scale test and the runs themselves
    are only computed on those (rare) channels.
    """
    out = np.zeros(a.shape[0], dtype=np.int64)
    step = max(1, min_run - 1)
    n = a.shape[1]
    pairs = a[:, 0 : n - 1 : step] == a[:, 1:n:step]
    rows = np.flatnonzero(pairs.any(axis=-1))
    if rows.size == 0:
        return out
    limit = (fullscale * (1 - 1e-6)).astype(a.dtype)
    for c in rows.tolist():
        row = a[c, 1:] == a[c, :-1]
        if np.isfinite(limit[c]):  # a clipped stretch is flagged as clipping, not dropout
            row &= np.abs(a[c, 1:]) < limit[c]
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.int8), [0]))))
        runs = edges[1::2] - edges[::2] + 1  # pairs of equal neighbours -> samples
        out[c] = int(runs[runs >= min_run].sum())
    return out


def _opts(v: F64) -> list[float | None]:
    """Per channel: the value as a float, None where it is not finite."""
    return [x if math.isfinite(x) else None for x in np.asarray(v, dtype=np.float64).tolist()]


def _num(v: float) -> float:
    """A whole number as int, else float: msgpack spends 1-3 bytes on an int, 9 on a float.

    Decoders read either back as float, so this only shrinks config echoes
    (bands, sample rate) on the wire.
    """
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def analyze(
    x: NDArray[np.floating],
    cfg: ReportConfig,
    specs: list[ChannelSpec],
    *,
    after_restart: bool = False,
    band_state: Sequence[BandState | None] | None = None,
) -> list[ChannelResult]:
    """Analyze one report interval ``x`` of shape ``(channels, interval_samples)``.

    ``band_state``: each channel's :attr:`ChannelResult.band_state` from the
    previous report of its stream, so the envelope band is kept across reports
    (:mod:`dsp.bandtrack`); ``None`` (or ``after_restart``, which drops it)
    starts afresh with a full band search.
    """
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] != len(specs):
        raise ValueError(f"x must be (channels={len(specs)}, samples), got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    ch, n = a.shape
    if n < cfg.nfft:
        raise ValueError(f"need at least nfft={cfg.nfft} samples, got {n}")
    fs = cfg.fs

    # --- quality: never raise on bad samples -------------------------------------
    # the centred record, left by the moments for the whole-record rFFT below
    centered = np.empty(a.shape, dtype=a.dtype)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf are handled just below
        mom = moments(a, centered=centered)
    bad_counts = np.zeros(ch, dtype=np.int64)
    # NaN poisons the mean and inf the extremes: a full isfinite pass only when needed.
    if not (np.isfinite(mom["mean"]).all() and np.isfinite(mom["max"] - mom["min"]).all()):
        finite = np.isfinite(a)
        bad_counts = n - finite.sum(axis=-1)
        a = np.where(finite, a, a.dtype.type(0))
        mom = moments(a, centered=centered)
    fullscale = np.array([s.full_scale or np.inf for s in specs])
    clipped = np.zeros(ch, dtype=np.int64)
    limit = (fullscale * (1 - 1e-6)).astype(a.dtype)
    # only a channel whose extreme reaches full scale has samples to count
    for row in np.flatnonzero(mom["peak"] >= limit).tolist():
        clipped[row] = np.count_nonzero(np.abs(a[row]) >= limit[row])
    dead = _dead_samples(a, fullscale, max(_DROPOUT_MIN_SAMPLES, round(DROPOUT_MIN_S * fs)))

    # --- spectra and features ------------------------------------------------------
    frames = np.lib.stride_tricks.sliding_window_view(a, cfg.nfft, axis=-1)[:, :: cfg.hop]
    n_avg = segment_count(n, cfg.nfft, cfg.hop)
    freqs = rfft_freqs(cfg.nfft, fs)
    top = max([cfg.lines] + [int(np.searchsorted(freqs, b[1], side="right")) for b in cfg.bands])
    psd = welch_from_frames(frames[:, :n_avg], fs, window=cfg.window, lines=top)
    freqs = freqs[:top]
    vanes = np.array([s.asset.vanes or np.nan for s in specs])
    top_order = max(3.0, float(np.nanmax(vanes, initial=0.0)))
    line_fmax = min(fs / 2, max(cfg.velocity_band[1], 1.05 * top_order * cfg.rpm_range[1] / 60))
    # One rFFT of the tapered record (the moments' centred samples, tapered in place)
    # serves the line spectrum and the envelope (which then clips its lines in place:
    # the line spectrum reads first).
    tapered = tapered_rfft(a, centered=centered)
    del centered  # transformed: not held through the envelope's temporaries (peak RSS)
    line = LineSpectrum(a, fs, fmax=line_fmax, spectrum=tapered)
    vel = line.band_rms(cfg.velocity_band, velocity=True)
    band_rms = psd_band_rms(freqs, psd, list(cfg.bands), fs)
    constant = mom["max"] == mom["min"]

    given = np.array([s.rpm if s.rpm else np.nan for s in specs])
    # With a rated speed known, look for 1x between half of it (a variable-speed drive
    # turned down) and 10 % above: a strong 2x or 3x line can no longer pose as 1x.
    rated = np.array([s.asset.rated_rpm or np.nan for s in specs])
    lo = np.fmax(cfg.rpm_range[0], 0.5 * rated) / 60.0
    hi = np.fmin(cfg.rpm_range[1], 1.1 * rated) / 60.0
    lo = np.where(np.isfinite(lo) & (lo < hi), lo, cfg.rpm_range[0] / 60.0)
    hi = np.where(np.isfinite(hi) & (lo < hi), hi, cfg.rpm_range[1] / 60.0)
    est = line.peak_in(lo, hi)
    # A 1x line must stand clear of the local floor to be believed.
    uncertain = ~line.line_clear(est) | constant
    fr = np.where(np.isfinite(given), given / 60.0, est)
    speeds: list[Speed] = []
    for c, s in enumerate(specs):
        if s.rpm:
            src = s.rpm_source if s.rpm_source in ("given", "measured") else "given"
            speeds.append(Speed(float(s.rpm), src))  # type: ignore[arg-type]
        elif uncertain[c] and s.asset.rated_rpm:
            fr[c] = s.asset.rated_rpm / 60.0
            speeds.append(Speed(float(s.asset.rated_rpm), "given"))
        elif np.isfinite(est[c]):
            speeds.append(Speed(float(est[c] * 60.0), "estimated"))
        else:
            speeds.append(Speed(0.0, "unknown"))
            fr[c] = np.nan
    v1 = line.line_rms(fr, velocity=True)
    v2 = line.line_rms(2 * fr, velocity=True)
    v3 = line.line_rms(3 * fr, velocity=True)
    vb = line.line_rms(vanes * fr, velocity=True)

    env = None
    orders = [_orders(s.asset) for s in specs]
    prom: dict[str, F64] = {}
    if cfg.envelope:
        env = envelope_spectrum(
            a, fs, band=cfg.env_band, fmax=cfg.env_fmax, remove_lines=cfg.env_remove_lines,
            state=None if after_restart else band_state, spectrum=tapered,
        )
        # the defect lines of every channel in one pass: BPFO, BPFI, BSF, FTF, 2 x BSF
        o = np.array(
            [[od[k] for k in _DEFECTS] + [2 * od["bsf"]] if od else [np.nan] * 5
             for od in orders]
        )
        p = line_prominence(env.freqs, env.spectrum, o * fr[:, None], tol=DEFECT_LINE_TOL)
        prom = {k: p[:, j] for j, k in enumerate(_DEFECTS)}
        prom["bsf"] = np.fmax(prom["bsf"], p[:, 4])

    # --- per-channel structs ---------------------------------------------------------
    spec_codes, spec_off = quantize.quantize_db(quantize.to_db(psd[:, : cfg.lines]), cfg.step_db)
    env_codes = env_off = None
    if env is not None:
        env_db = quantize.to_db(quantize.reduce_lines(env.spectrum, cfg.env_lines))
        env_codes, env_off = quantize.quantize_db(env_db, cfg.env_step_db)
        env_df = float(env.freqs[1] * max(1, env.spectrum.shape[-1] // cfg.env_lines))
    out: list[ChannelResult] = []
    bands = [(_num(b0), _num(b1)) for b0, b1 in cfg.bands]
    vband = (_num(cfg.velocity_band[0]), _num(cfg.velocity_band[1]))
    df = _num(freqs[1])
    # one conversion per array, not one numpy scalar per channel and field
    spec_data = quantize.pack_rows(spec_codes)
    spec_off_l = spec_off.tolist()
    rms, peak, crest = mom["rms"].tolist(), mom["peak"].tolist(), mom["crest"].tolist()
    kurt, skew = mom["kurtosis"].tolist(), mom["skewness"].tolist()
    vel_l, band_rms_l = vel.tolist(), band_rms.tolist()
    lines = [_opts(v) for v in (v1, v2, v3, vb)]
    none = [None] * ch
    envl = [_opts(prom[k]) for k in _DEFECTS] if prom else [none] * 4
    env_k = _opts(env.kurtosis) if env is not None else none
    given_rpm = np.array([bool(s.rpm) for s in specs])
    flag: NDArray[np.int64] = (
        np.where(bad_counts > 0, Q_NONFINITE, 0)
        | np.where(clipped > 0, Q_CLIPPED, 0)
        | np.where(constant, Q_CONSTANT, 0)
        | np.where(dead > 0, Q_DROPOUT, 0)
        | np.where(uncertain & ~given_rpm, Q_SPEED_UNCERTAIN, 0)
        | (Q_RESTART if after_restart else 0)
    )
    flags_l, bad_l, clip_l, dead_l = (
        flag.tolist(), bad_counts.tolist(), clipped.tolist(), dead.tolist()
    )
    env_parts: list[tuple[Spectrum, tuple[float, float]]] | None = None
    if env is not None and env_codes is not None and env_off is not None:
        n_env = int(env_codes.shape[-1])
        env_parts = [
            (
                Spectrum(df=env_df, n=n_env, step_db=cfg.env_step_db, offset_db=off, data=data),
                (_num(b0), _num(b1)),
            )
            for off, data, (b0, b1) in zip(
                env_off.tolist(), quantize.pack_rows(env_codes), env.band.tolist(), strict=True
            )
        ]
    n_spec = int(spec_codes.shape[-1])
    for c, s in enumerate(specs):
        limits = s.asset.zone_limits or ISO_ZONE_LIMITS[(s.asset.iso_group, s.asset.foundation)]
        spectrum = Spectrum(
            df=df, n=n_spec, step_db=cfg.step_db, offset_db=spec_off_l[c], data=spec_data[c],
        )
        envelope, band = env_parts[c] if env_parts is not None else (None, None)
        feats = Features(
            rms=rms[c],
            peak=peak[c],
            crest=crest[c],
            kurtosis=kurt[c],
            skewness=skew[c],
            velocity_rms=vel_l[c],
            velocity_band=vband,
            iso_zone=iso_zone(vel_l[c], limits),  # type: ignore[arg-type]
            band_rms=band_rms_l[c],
            bands=bands,
            v1x=lines[0][c],
            v2x=lines[1][c],
            v3x=lines[2][c],
            vbpf=lines[3][c],
            env_bpfo=envl[0][c],
            env_bpfi=envl[1][c],
            env_bsf=envl[2][c],
            env_ftf=envl[3][c],
            env_kurtosis=env_k[c],
        )
        out.append(
            ChannelResult(
                features=feats,
                speed=speeds[c],
                spectrum=spectrum,
                envelope=envelope,
                envelope_band=band,
                quality=Quality(flags=flags_l[c], nonfinite=bad_l[c], clipped=clip_l[c],
                                dead=dead_l[c]),
                n_avg=n_avg,
                band_state=env.state[c] if env is not None and env.state is not None else None,
            )
        )
    return out


def make_report(
    result: ChannelResult,
    cfg: ReportConfig,
    spec: ChannelSpec,
    *,
    device: str,
    epoch: int,
    seq: int,
    site: str,
    pump: str,
    channel: str,
    t0_ns: int,
) -> Report:
    return Report(
        v=SCHEMA_VERSION,
        device=device,
        epoch=epoch,
        seq=seq,
        site=site,
        pump=pump,
        channel=channel,
        t0_ns=t0_ns,
        duration_s=_num(cfg.interval_samples / cfg.fs),
        fs=_num(cfg.fs),
        nfft=cfg.nfft,
        hop=cfg.hop,
        n_avg=result.n_avg,
        window=cfg.window,
        asset=spec.asset,
        speed=result.speed,
        features=result.features,
        spectrum=result.spectrum,
        envelope=result.envelope,
        envelope_band=result.envelope_band,
        quality=result.quality,
    )
