"""``pumpwatch baseline fit``: fit per-pump anomaly baselines from stored reports.

Sources are pluggable: ``--store URL`` (the consumer's report archive, with
``--pump``, ``--since``, ``--until``) and ``--from FILE...`` (recordings of one
pump's healthy period); each adds its option and a loader to :data:`SOURCES`,
and exactly one source must be given. Wiring only: reading is the store's and
:mod:`simulator.recordings`' job (the one recording reader ``replay`` and
``analyze`` use too), the reports are built by the edge's own code
(:func:`edge.run.replay_config`, :class:`dsp.Framer`,
:class:`edge.pipeline.ReportBuilder`: what ``pumpwatch replay`` runs for that
pump), fitting (threshold calibrated on the held-out end of the healthy
period) is :mod:`models.training.anomaly`'s. Heavy imports happen when the
command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._roles import Role
from ._storeargs import iso_ns, ns_iso

if TYPE_CHECKING:
    import dsp
    from edge.config import EdgeConfig
    from simulator.recordings import Recording

# Fitting (Ledoit-Wolf shrinkage) is scikit-learn's; --store also needs the cloud extra.
ROLE = Role("models", ("sklearn",))

G_TO_MS2 = 9.80665  # --unit g: the scale simulator.recordings.G_TO_MS2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("baseline", help="per-pump anomaly baselines")
    bs = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    f = bs.add_parser("fit", help="fit baselines from archived reports or recordings")
    f.add_argument("--store", help="results store URL holding the report archive")
    f.add_argument("--pump", action="append", default=[],
                   help="pump id (repeat for several pumps)")
    f.add_argument("--since", type=iso_ns, help="window start >= this ISO 8601 time")
    f.add_argument("--until", type=iso_ns, help="window start < this ISO 8601 time")
    f.add_argument("--from", dest="from_files", type=Path, nargs="+", metavar="FILE",
                   help="healthy-period recordings of ONE pump (--pump ID): WAV, CSV/TSV, "
                   "NPY/NPZ, CWRU .mat, IMS text; played in order through the edge's report "
                   "building, as `pumpwatch replay` does")
    f.add_argument("--config", type=Path, metavar="EDGE_TOML",
                   help="--from: the edge agent's config; reports are built with its report "
                   "settings and the pump's asset (default: the edge's default report "
                   "config and --bearing/--vanes/--rpm)")
    f.add_argument("--fs", type=float, help="--from: sample rate, Hz (if the file lacks it)")
    f.add_argument("--force-fs", action="store_true",
                   help="take --fs even where it contradicts the file's own rate (its header, "
                   "CWRU 12k_/48k_ name prefix or metadata); without it that is an error")
    f.add_argument("--resample", type=float, metavar="HZ",
                   help="--from: resample to this rate first (anti-aliased)")
    f.add_argument("--channel", help="--from: channel name, 0-based column index or .mat "
                   "variable suffix (e.g. _FE_time); default: the first (DE in CWRU .mat)")
    units = f.add_mutually_exclusive_group()
    units.add_argument("--scale", type=float, metavar="K",
                       help="--from: multiply file values by K to get m/s^2 (default 9.80665 "
                       "for CWRU/IMS, else 1)")
    units.add_argument("--unit", choices=["m/s^2", "g"], help="--from: sample unit "
                       "(g = --scale 9.80665; default: g for CWRU/IMS, else m/s^2)")
    f.add_argument("--rpm", type=float, help="--from: running speed (else the file's, else "
                   "estimated per report)")
    f.add_argument("--bearing", default=None, help="--from: bearing designation (e.g. 6205) "
                   "or N,BALL_MM,PITCH_MM[,CONTACT_DEG] for the envelope features")
    f.add_argument("--vanes", type=int, help="--from: impeller vanes (blade-pass line)")
    f.add_argument("--hop", type=float, help="--from: seconds between reports (default: one "
                   "report interval, as the edge; smaller overlaps them)")
    f.add_argument("--out", type=Path, required=True, help="output directory")
    f.add_argument("--min-reports", type=int, default=10)
    f.add_argument("--false-alarm-rate", type=float, default=0.005)
    f.set_defaults(func=run_fit)


async def _from_store(args: argparse.Namespace) -> list[dsp.Report]:
    import dsp
    from cloud.store import make_store

    url = str(args.store)
    store = make_store(url, readonly=True) if url.startswith("sqlite") or "://" not in url \
        else make_store(url)
    await store.open()
    try:
        reports: list[dsp.Report] = []
        for pump in args.pump:
            rows = await store.archived(pump=pump, since_ns=args.since, until_ns=args.until)
            reports += [dsp.decode_report(a.report) for a in rows]
        return reports
    finally:
        await store.close()


def _asset(args: argparse.Namespace) -> dsp.Asset:
    import dsp
    from models.training.replay import bearing_asset
    from simulator import lookup_bearing

    spec = args.bearing
    if not spec:
        return dsp.Asset(vanes=args.vanes, rated_rpm=args.rpm)
    parts = spec.split(",")
    geo: tuple[str | None, int, float, float, float]
    if len(parts) >= 3:
        n, d, pd, *rest = parts
        geo = (None, int(n), float(d), float(pd), float(rest[0]) if rest else 0.0)
    else:
        g = lookup_bearing(spec)
        geo = (g.designation, g.n_balls, g.ball_d_mm, g.pitch_d_mm, g.contact_deg)
    return bearing_asset(*geo, vanes=args.vanes, rated_rpm=args.rpm)


def _read(args: argparse.Namespace, path: Path) -> Recording:
    """One recording, the selected channel only, in m/s^2, resampled if asked."""
    import dataclasses

    import numpy as np
    import scipy.signal

    from simulator.recordings import read_recording

    scale = G_TO_MS2 if args.unit == "g" else 1.0 if args.unit == "m/s^2" else args.scale
    rec = read_recording(path, fs=args.fs, scale=scale,
                         channels=[args.channel or 0], force_fs=args.force_fs)
    if args.resample and args.resample != rec.fs:
        frac = Fraction(args.resample / rec.fs).limit_denominator(1000)
        x = scipy.signal.resample_poly(rec.samples, frac.numerator, frac.denominator, axis=1)
        rec = dataclasses.replace(rec, samples=np.ascontiguousarray(x, dtype=np.float32),
                                  fs=rec.fs * frac.numerator / frac.denominator)
    return rec


def _pump_config(args: argparse.Namespace, recs: list[Recording]) -> EdgeConfig:
    """The edge config the reports are built with: ``--config``'s, or the edge's defaults
    (``dsp.ReportConfig()``) with one channel and the asset given by the flags; then
    narrowed to the pump and the recording's rate exactly as ``pumpwatch replay`` does."""
    import dsp
    from edge.config import ChannelConfig, EdgeConfig, PumpSpec, load_config
    from edge.run import replay_config

    pump = args.pump[0]
    if args.config:
        cfg = load_config(args.config)
    else:
        chan = recs[0].channels[0]
        spec = PumpSpec(id=pump, asset=_asset(args), rpm=args.rpm,
                        channels=(ChannelConfig(name=chan[:64] or "ch1", source=chan),))
        cfg = EdgeConfig(device="recording", site="recording", report=dsp.ReportConfig(),
                         pumps=(spec,))
    return replay_config(cfg, pump, recs[0].channels, recs[0].fs, args.rpm)


def recording_reports(args: argparse.Namespace) -> list[dsp.Report]:
    """Recordings of one pump's healthy period -> reports, one time axis across the files
    (each follows the previous one), framed and built as the edge agent does."""
    import numpy as np

    import dsp
    from edge.pipeline import ReportBuilder
    from edge.sources import channel_index
    from simulator.replay import ReplaySource

    if args.config and (args.bearing or args.vanes):
        raise ValueError("--bearing/--vanes: with --config the pump's asset comes from the config")
    recs = [_read(args, path) for path in args.from_files]
    src = ReplaySource(recs, start_ns=0)
    cfg = _pump_config(args, recs)
    rc = cfg.report
    idx = channel_index(cfg, src.channels)
    hop = rc.interval_samples if args.hop is None else round(args.hop * rc.fs)
    if not 1 <= hop <= rc.interval_samples:
        raise ValueError(f"--hop must be in (0, {rc.interval_s:g}] s (the report interval), "
                         f"got {args.hop}")
    framer = dsp.Framer(size=rc.interval_samples, hop=hop)
    builder = ReportBuilder(cfg, epoch=1)
    reports: list[dsp.Report] = []
    for block in src.blocks():
        rpm = None if block.rpm is None else np.asarray(block.rpm)[idx]
        for w in framer.push(block.samples[idx], block.t0_ns, block.fs):
            built = builder.build(w.samples, w.t0_ns, after_restart=w.after_restart, rpm=rpm)
            reports += [dsp.decode_report(encoded) for _epoch, _seq, encoded in built]
    return reports


async def _from_files(args: argparse.Namespace) -> list[dsp.Report]:
    return recording_reports(args)


# argparse dest -> loader of reports; exactly one must be given.
SOURCES: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, list[dsp.Report]]]] = {
    "store": _from_store,
    "from_files": _from_files,
}


def run_fit(args: argparse.Namespace) -> int:
    from edge.config import ConfigError
    from models.training.anomaly import BaselineConfig, calibration_report, fit_pump_baselines
    from simulator.recordings import RecordingError

    given = [name for name in SOURCES if getattr(args, name, None)]
    if len(given) != 1:
        options = ", ".join(f"--{n.replace('_', '-')}" for n in SOURCES)
        print(f"pumpwatch baseline fit: give exactly one source of {options}", file=sys.stderr)
        return 2
    if given == ["store"] and not args.pump:
        print("pumpwatch baseline fit: --store needs --pump ID", file=sys.stderr)
        return 2
    if given == ["store"] and args.config:
        print("pumpwatch baseline fit: --config (the edge config) goes with --from",
              file=sys.stderr)
        return 2
    if given == ["from_files"] and len(args.pump) != 1:
        print("pumpwatch baseline fit: --from needs exactly one --pump ID", file=sys.stderr)
        return 2
    errors: tuple[type[Exception], ...] = (RecordingError, KeyError, ValueError)
    if given == ["store"]:
        from cloud.store import StoreError  # the cloud extra: only for the archive

        errors += (StoreError,)
    try:
        reports = asyncio.run(SOURCES[given[0]](args))
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except errors as exc:
        print(f"pumpwatch baseline fit: {exc}", file=sys.stderr)
        return 1
    if not reports:
        print("pumpwatch baseline fit: no reports (nothing archived in range, or recordings "
              "shorter than one report)", file=sys.stderr)
        return 1
    try:
        cfg = BaselineConfig(min_reports=args.min_reports, false_alarm_rate=args.false_alarm_rate)
        baselines = fit_pump_baselines(reports, cfg)
    except ValueError as exc:
        print(f"pumpwatch baseline fit: {exc}", file=sys.stderr)
        return 2
    missing = sorted(set(args.pump) - set(baselines.pumps))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "baselines.npz"
    baselines.save(path)
    span = f"{ns_iso(min(r.t0_ns for r in reports))} .. {ns_iso(max(r.t0_ns for r in reports))}"
    print(f"baselines for {', '.join(baselines.pumps) or 'no pump'} from {len(reports)} "
          f"reports ({span}) -> {path}")
    print(calibration_report(baselines, cfg))
    if missing:
        print(f"too few reports (< {args.min_reports}) for: {', '.join(missing)}",
              file=sys.stderr)
        return 1
    return 0
