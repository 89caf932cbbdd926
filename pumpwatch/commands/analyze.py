"""``pumpwatch analyze``: run the dsp offline over a recording, one report per interval."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

import dsp
from simulator.bearings import BearingGeometry, UnknownBearingError, lookup_bearing
from simulator.recordings import Recording, RecordingError, read_recording

ENV_KEYS = ("env_bpfo", "env_bpfi", "env_bsf", "env_ftf")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "analyze",
        help="per-report features of a recording (velocity RMS, kurtosis, envelope lines)",
        description="Read a recording (WAV, CSV/TSV, NPY/NPZ, CWRU .mat, IMS text) and print "
        "one line per report interval: velocity RMS with ISO 20816 zone, kurtosis, running "
        "speed and the envelope-line prominence at the bearing defect frequencies "
        "(about 1 = no line).",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument(
        "--channel",
        help="channel name, 0-based column index or .mat variable suffix (default: the first)",
    )
    p.add_argument("--fs", type=float, help="sample rate, Hz (when the file has none)")
    p.add_argument("--force-fs", action="store_true",
                   help="take --fs even where it contradicts the file's own rate (its header, "
                   "CWRU 12k_/48k_ name prefix or metadata); without it that is an error")
    p.add_argument(
        "--scale",
        type=float,
        metavar="G_TO_MS2",
        help="multiply file values by this to get m/s^2 (default 9.80665 for CWRU/IMS, else 1)",
    )
    p.add_argument("--bearing", help="bearing designation, e.g. 6205 (default: from the file)")
    p.add_argument(
        "--rpm", type=float, help="running speed (default: from the file, else estimated)"
    )
    p.add_argument("--interval", type=float, default=1.0, help="report interval, s (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object per report")
    p.set_defaults(func=run)


def file_bearing(rec: Recording, channel: str) -> BearingGeometry | None:
    """The first bearing the recording's own metadata names for ``channel``."""
    m = rec.meta
    pump = m.get("pump")
    if isinstance(pump, dict) and pump.get("bearings"):
        b = pump["bearings"][0]
        return BearingGeometry(
            b.get("designation"),
            int(b["n_balls"]),
            float(b["ball_d_mm"]),
            float(b["pitch_d_mm"]),
            float(b.get("contact_deg", 0.0)),
        )
    per_channel = m.get("bearings")
    if isinstance(per_channel, dict) and channel in per_channel:
        return lookup_bearing(str(per_channel[channel]))
    if isinstance(m.get("bearing"), str):
        return lookup_bearing(m["bearing"])
    return None


def report_config(fs: float, interval_s: float) -> dsp.ReportConfig:
    """The edge's default report config at this sample rate, as ``pumpwatch replay`` and
    ``baseline fit --from`` build reports (:meth:`dsp.ReportConfig.at_rate`)."""
    return dsp.ReportConfig(interval_s=interval_s).at_rate(fs)


def analyze_recording(
    rec: Recording,
    channel: str,
    *,
    bearing: BearingGeometry | None,
    rpm: float | None,
    interval_s: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per report interval (a recording shorter than one interval gives one row)."""
    x = rec.samples[rec.channel_index(channel)]
    n = x.shape[0]
    cfg = report_config(rec.fs, interval_s)
    step = cfg.interval_samples
    if n < cfg.nfft:
        raise RecordingError(rec.path or "<recording>", f"{n} samples, need >= {cfg.nfft}")
    starts = list(range(0, n - step + 1, step)) if n >= step else [0]
    rated = rec.meta.get("nominal_rpm")
    asset = dsp.Asset(
        bearings=[
            dsp.Bearing(
                n_balls=bearing.n_balls,
                ball_d_mm=bearing.ball_d_mm,
                pitch_d_mm=bearing.pitch_d_mm,
                contact_deg=bearing.contact_deg,
                designation=bearing.designation,
            )
        ]
        if bearing
        else [],
        rated_rpm=float(rated) if isinstance(rated, int | float) else None,
    )
    spec = dsp.ChannelSpec(asset=asset, rpm=rpm)
    orders = bearing.defect_orders() if bearing else None
    rows: list[dict[str, Any]] = []
    band: dsp.BandState | None = None  # the envelope band, kept across reports as the edge does
    for s in starts:
        seg = x[s : s + step] if n >= step else x
        (r,) = dsp.analyze(seg[np.newaxis, :], cfg, [spec], band_state=[band])
        band = r.band_state
        f = r.features
        speed = r.speed.rpm
        row: dict[str, Any] = {
            "t_s": round(s / rec.fs, 6),
            "channel": channel,
            "rpm": speed,
            "rpm_source": r.speed.source,
            "velocity_rms": f.velocity_rms,
            "iso_zone": f.iso_zone,
            "kurtosis": f.kurtosis,
            "rms": f.rms,
            "crest": f.crest,
        }
        for k in ENV_KEYS:
            row[k] = getattr(f, k)
        row["env_band_hz"] = list(r.envelope_band) if r.envelope_band else None
        if orders and speed:
            row["defect_hz"] = {k: v * speed / 60.0 for k, v in orders.items()}
        rows.append(row)
    return rows


def _fmt(v: float | None, width: int, prec: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-".rjust(width)
    return f"{v:{width}.{prec}f}"


def print_table(
    rows: list[dict[str, Any]], rec: Recording, bearing: BearingGeometry | None
) -> None:
    b = f"bearing {bearing.designation or '(custom)'}" if bearing else "no bearing (env lines off)"
    print(f"{rec.path}: channel {rows[0]['channel']}, {rec.fs:g} Hz, {rec.duration_s:.2f} s, {b}")
    print(
        "    t(s)     rpm  vel(mm/s) zone  kurt   BPFO   BPFI    BSF    FTF   (env lines, 1 = none)"
    )
    for r in rows:
        print(
            f"{r['t_s']:8.2f} {r['rpm']:7.1f} {r['velocity_rms']:10.2f}   {r['iso_zone']}  "
            f"{r['kurtosis']:5.2f} " + " ".join(_fmt(r[k], 6, 1) for k in ENV_KEYS)
        )
    if len(rows) > 1:
        med = {k: _median([r[k] for r in rows]) for k in ("velocity_rms", "kurtosis", *ENV_KEYS)}
        print(
            f"{'median':>8} {'':7} {med['velocity_rms'] or 0:10.2f}      "
            f"{med['kurtosis'] or 0:5.2f} " + " ".join(_fmt(med[k], 6, 1) for k in ENV_KEYS)
        )


def _median(vals: list[float | None]) -> float | None:
    v = [x for x in vals if x is not None]
    return float(np.median(v)) if v else None


def run(args: argparse.Namespace) -> int:
    try:
        rec = read_recording(args.file, fs=args.fs, scale=args.scale,
                             force_fs=args.force_fs)
        # the reader's channel selection: a name, a 0-based column or a .mat variable suffix
        channel = rec.channels[rec.channel_index(args.channel or 0)]
        bearing = lookup_bearing(args.bearing) if args.bearing else file_bearing(rec, channel)
        rpm = args.rpm if args.rpm is not None else rec.rpm
        if rpm is None and isinstance(rec.meta.get("nominal_rpm"), int | float):
            rpm = float(rec.meta["nominal_rpm"])  # a rig documented to run at one speed (IMS)
        rows = analyze_recording(rec, channel, bearing=bearing, rpm=rpm, interval_s=args.interval)
    except (RecordingError, UnknownBearingError, ValueError) as exc:
        msg = str(exc) if not isinstance(exc, KeyError) else exc.__str__()
        print(f"pumpwatch analyze: {msg}", file=sys.stderr)
        return 2
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print_table(rows, rec, bearing)
    return 0
