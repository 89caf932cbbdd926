"""Turn raw samples into reports with the edge's own dsp (no training/serving skew).

Training (simulator) and the real-data benchmark go through
:func:`reports_from_signal`, which calls exactly what the edge agent calls:
:func:`dsp.analyze` and :func:`dsp.make_report` on consecutive report
intervals. Training streams are built exactly as the edge builds them
(:func:`edge_reports`): the edge's default report config at the stream's own
rate (:func:`edge_config`, i.e. ``ReportConfig().at_rate(fs)``, what
``pumpwatch replay`` and the agent run), the envelope band tracked across the
stream's reports from a fresh start (:mod:`dsp.bandtrack`, as
``edge.pipeline.ReportBuilder`` carries it), a tachometer's speed as
``measured``, and each report through the wire codec (encoded and decoded,
as the endpoint receives it). The benchmark's older figures keep
:func:`config_for`'s report settings and a fresh band search per report.
``pumpwatch baseline fit --from`` does not use it: a baseline for a real pump
must score that pump's reports, so that command builds them with the edge's
own report config and code (``pumpwatch/commands/baseline.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

import dsp
from dsp import Asset, Bearing, ChannelSpec, ReportConfig

F64 = NDArray[np.float64]

#: The report bands used when a sample rate cannot hold the default 5-10 kHz band.
STANDARD_BANDS: tuple[tuple[float, float], ...] = ReportConfig().bands


def config_for(fs: float, *, interval_s: float = 1.0) -> ReportConfig:
    """A report config for sample rate ``fs`` (Hz) that the edge could run.

    25.6 kHz is the default config; other rates keep about the same line
    spacing (nfft ~ fs / 6.25 Hz, rounded to a power of two), lines up to
    Fmax = fs / 2.56 and those of the default bands that fit below Nyquist.
    """
    if fs == ReportConfig().fs and interval_s == 1.0:
        return ReportConfig()
    nfft = 1 << round(float(np.log2(fs / 6.25)))
    nfft = max(256, min(nfft, int(fs * interval_s)))
    nfft = 1 << int(np.floor(np.log2(nfft)))
    lines = min(nfft // 2 + 1, int(nfft / 2.56))
    bands = tuple(b for b in STANDARD_BANDS if b[1] < fs / 2)
    return ReportConfig(
        fs=float(fs), nfft=nfft, hop=nfft // 2, interval_s=interval_s, lines=lines,
        bands=bands, env_fmax=min(500.0, fs / 2.56 / 2),
    )


def edge_config(fs: float) -> ReportConfig:
    """The report config the edge runs on samples at ``fs`` Hz: its defaults at that rate."""
    return ReportConfig().at_rate(fs)


def bearing_asset(
    designation: str | None,
    n_balls: int,
    ball_d_mm: float,
    pitch_d_mm: float,
    contact_deg: float = 0.0,
    *,
    vanes: int | None = None,
    rated_rpm: float | None = None,
    kind: str | None = None,
) -> Asset:
    """An asset descriptor with one bearing (the one the envelope features look at)."""
    return Asset(
        bearings=[Bearing(n_balls, ball_d_mm, pitch_d_mm, contact_deg, designation, "DE")],
        vanes=vanes, rated_rpm=rated_rpm, kind=kind,
    )


def reports_from_signal(
    x: NDArray[np.floating],
    fs: float,
    *,
    asset: Asset,
    rpm: float | Sequence[float] | None,
    pump: str,
    channel: str = "ch0",
    cfg: ReportConfig | None = None,
    hop_s: float | None = None,
    device: str = "replay",
    site: str = "replay",
    epoch: int = 1,
    seq0: int = 0,
    full_scale: float | None = None,
    track_band: bool = False,
    rpm_source: str = "given",
    wire: bool = False,
) -> list[dsp.Report]:
    """1-D samples (m/s^2) -> one report per interval (``hop_s`` apart; default: no overlap).

    ``rpm`` is the running speed: one value, one per interval, or None to
    let dsp estimate it (as the edge does without a tachometer), stated as
    ``rpm_source`` (``given`` or ``measured``). ``track_band``: carry the
    envelope band tracker's state from report to report, the first report
    marked as a stream start (as the edge does); else every report searches
    afresh. ``wire``: each report encoded and decoded by the wire codec.
    """
    # float32, as every edge source delivers its blocks (simulator.Block.samples)
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 1:
        raise ValueError(f"x must be 1-D samples, got shape {a.shape}")
    cfg = cfg or config_for(fs)
    if abs(cfg.fs - fs) > 1e-6 * fs:
        raise ValueError(f"config is for fs={cfg.fs} Hz, samples are at {fs=}")
    n = cfg.interval_samples
    hop = n if hop_s is None else max(1, round(hop_s * fs))
    starts = list(range(0, a.size - n + 1, hop))
    rpms: list[float | None]
    if rpm is None or isinstance(rpm, int | float):
        rpms = [None if rpm is None else float(rpm)] * len(starts)
    else:
        rpms = [float(r) for r in rpm]
        if len(rpms) != len(starts):
            raise ValueError(f"got {len(rpms)} rpm values for {len(starts)} intervals")
    out: list[dsp.Report] = []
    band: dsp.BandState | None = None
    for k, (i0, r) in enumerate(zip(starts, rpms, strict=True)):
        spec = ChannelSpec(asset=asset, rpm=r, rpm_source=rpm_source, full_scale=full_scale)
        x = a[np.newaxis, i0 : i0 + n]
        if track_band:
            res = dsp.analyze(x, cfg, [spec], after_restart=k == 0, band_state=[band])[0]
            band = res.band_state
        else:
            res = dsp.analyze(x, cfg, [spec])[0]
        report = dsp.make_report(
            res, cfg, spec, device=device, epoch=epoch, seq=seq0 + k, site=site,
            pump=pump, channel=channel, t0_ns=round(i0 * 1e9 / fs),
        )
        out.append(dsp.decode_report(dsp.encode_report(report)) if wire else report)
    return out


def edge_reports(
    x: NDArray[np.floating],
    fs: float,
    *,
    asset: Asset,
    rpm: float | None,
    measured: bool,
    pump: str,
    channel: str = "ch0",
    seq0: int = 0,
    full_scale: float | None = None,
) -> list[dsp.Report]:
    """One stream's reports exactly as the edge builds them (see the module docstring).

    ``measured``: ``rpm`` comes from a tachometer (else it is the pump's given speed).
    """
    return reports_from_signal(
        x, fs, asset=asset, rpm=rpm, pump=pump, channel=channel, cfg=edge_config(fs),
        device="sim", site="sim", seq0=seq0, full_scale=full_scale, track_band=True,
        rpm_source="measured" if measured and rpm is not None else "given", wire=True,
    )
