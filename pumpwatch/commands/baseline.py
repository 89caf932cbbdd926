"""``pumpwatch baseline fit``: fit per-pump anomaly baselines from stored reports.

Sources are pluggable: ``--store URL`` (the consumer's report archive, with
``--pump``, ``--since``, ``--until``) and ``--from FILE...`` (recordings of one
pump's healthy period, replayed through the edge's dsp); each adds its option
and a loader to :data:`SOURCES`, and exactly one source must be given.
Wiring only: reading is the store's and :mod:`models.training.recordings`' job,
fitting (threshold calibrated on the held-out end of the healthy period) is
:mod:`models.training.anomaly`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec

import dsp
from cloud.store import StoreError, make_store
from models.training.anomaly import BaselineConfig, calibration_report, fit_pump_baselines
from models.training.recordings import RecordingError, read_recording
from models.training.replay import bearing_asset, reports_from_signal

from ._storeargs import iso_ns, ns_iso


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("baseline", help="per-pump anomaly baselines")
    bs = p.add_subparsers(dest="baseline_command", metavar="ACTION", required=True)
    f = bs.add_parser("fit", help="fit baselines from archived reports")
    f.add_argument("--store", help="results store URL holding the report archive")
    f.add_argument("--pump", action="append", default=[],
                   help="pump id (repeat for several pumps)")
    f.add_argument("--since", type=iso_ns, help="window start >= this ISO 8601 time")
    f.add_argument("--until", type=iso_ns, help="window start < this ISO 8601 time")
    f.add_argument("--from", dest="from_files", type=Path, nargs="+", metavar="FILE",
                   help="healthy-period recordings of ONE pump (--pump ID): .mat (CWRU), "
                   ".wav, .csv/.tsv, .npy; replayed as reports through the edge's dsp")
    f.add_argument("--fs", type=float, help="--from: sample rate, Hz (if the file lacks it)")
    f.add_argument("--resample", type=float, metavar="HZ",
                   help="--from: resample to this rate first (anti-aliased)")
    f.add_argument("--channel", help="--from: column / variable suffix (default: first, "
                   "or *_DE_time in .mat)")
    f.add_argument("--unit", choices=["m/s^2", "g"], help="--from: sample unit "
                   "(default m/s^2; g for .mat)")
    f.add_argument("--rpm", type=float, help="--from: running speed (else the file's, else "
                   "estimated per report)")
    f.add_argument("--bearing", default=None, help="--from: bearing designation (e.g. 6205) "
                   "or N,BALL_MM,PITCH_MM[,CONTACT_DEG] for the envelope features")
    f.add_argument("--vanes", type=int, help="--from: impeller vanes (blade-pass line)")
    f.add_argument("--hop", type=float, default=0.5, help="--from: seconds between 1 s reports")
    f.add_argument("--out", type=Path, required=True, help="output directory")
    f.add_argument("--min-reports", type=int, default=10)
    f.add_argument("--false-alarm-rate", type=float, default=0.005)
    f.set_defaults(func=run_fit)


async def _from_store(args: argparse.Namespace) -> list[dsp.Report]:
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


async def _from_files(args: argparse.Namespace) -> list[dsp.Report]:
    """Recordings of one pump's healthy period -> 1 s reports, in file order (time order)."""
    import scipy.signal

    asset = _asset(args)
    reports: list[dsp.Report] = []
    t0 = 0
    for path in args.from_files:
        rec = read_recording(path, fs=args.fs, channel=args.channel, unit=args.unit)
        x, fs = rec.x, rec.fs
        if args.resample and args.resample != fs:
            frac = Fraction(args.resample / fs).limit_denominator(1000)
            x = scipy.signal.resample_poly(x, frac.numerator, frac.denominator)
            fs = fs * frac.numerator / frac.denominator
        reps = reports_from_signal(
            x, fs, asset=asset, rpm=args.rpm or rec.rpm, pump=args.pump[0], channel=rec.name[:64],
            hop_s=args.hop, device="recording", seq0=len(reports),
        )
        # one time axis across files: each file follows the previous one
        reports += [msgspec.structs.replace(r, t0_ns=r.t0_ns + t0) for r in reps]
        t0 = reports[-1].t0_ns + round(1e9 * x.size / fs) if reports else t0
    return reports


# argparse dest -> loader of reports; exactly one must be given.
SOURCES: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, list[dsp.Report]]]] = {
    "store": _from_store,
    "from_files": _from_files,
}


def run_fit(args: argparse.Namespace) -> int:
    given = [name for name in SOURCES if getattr(args, name, None)]
    if len(given) != 1:
        options = ", ".join(f"--{n.replace('_', '-')}" for n in SOURCES)
        print(f"pumpwatch baseline fit: give exactly one source of {options}", file=sys.stderr)
        return 2
    if given == ["store"] and not args.pump:
        print("pumpwatch baseline fit: --store needs --pump ID", file=sys.stderr)
        return 2
    if given == ["from_files"] and len(args.pump) != 1:
        print("pumpwatch baseline fit: --from needs exactly one --pump ID", file=sys.stderr)
        return 2
    try:
        reports = asyncio.run(SOURCES[given[0]](args))
    except (StoreError, RecordingError, KeyError) as exc:
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
