"""``pumpwatch simulate``: synthesize a pump recording with faults and its ground truth."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from simulator import FAULT_KINDS, FaultConfig, PumpConfig, PumpConfigError, load_pump_config
from simulator.recordings import RecordingError, write_npz, write_wav
from simulator.simulated import simulate_recording


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="synthesize a pump recording (NPZ or WAV) with faults and ground truth",
        description="Synthesize vibration of one pump. Without --pump the built-in default "
        "pump is used (2950 rpm, 6 vanes, 6308 bearing, DE horizontal + axial sensors).",
    )
    p.add_argument("--pump", type=Path, metavar="CONFIG.toml", help="pump config (TOML)")
    p.add_argument(
        "--fault",
        action="append",
        choices=FAULT_KINDS,
        default=[],
        metavar="KIND",
        help=f"add a fault (repeatable; adds to the config's own): {', '.join(FAULT_KINDS)}",
    )
    p.add_argument(
        "--severity",
        action="append",
        type=float,
        default=[],
        help="final severity 0..1, one for all faults or one per --fault (default 0.6)",
    )
    p.add_argument("--onset", type=float, default=0.0, help="fault onset, s (default 0)")
    p.add_argument("--ramp", type=float, default=0.0, help="fault growth time, s (0: a step)")
    p.add_argument("--rpm", type=float, help="running speed, overrides the config")
    p.add_argument("--seconds", type=float, default=10.0, help="length (default 10 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output file: .npz or .wav")
    p.add_argument(
        "--wav-format",
        choices=["float32", "int16", "int24"],
        default="float32",
        help="WAV sample format (default float32)",
    )
    p.set_defaults(func=run)


def build_pump(args: argparse.Namespace) -> PumpConfig:
    cfg = load_pump_config(args.pump) if args.pump else PumpConfig.default()
    if args.rpm is not None:
        cfg = dataclasses.replace(cfg, speed=dataclasses.replace(cfg.speed, rpm=args.rpm))
    sev: list[float] = args.severity or [0.6]
    if len(sev) not in (1, len(args.fault)):
        raise PumpConfigError(
            f"give one --severity for all faults or one per --fault ({len(args.fault)}), "
            f"got {len(sev)}"
        )
    added = [
        FaultConfig(
            kind=kind,
            severity=sev[i] if len(sev) > 1 else sev[0],
            onset_s=args.onset,
            ramp_s=args.ramp,
        )
        for i, kind in enumerate(args.fault)
    ]
    return cfg.with_faults(*cfg.faults, *added)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = build_pump(args)
        rec = simulate_recording(cfg, args.seconds, seed=args.seed)
        out: Path = args.out
        if out.suffix.lower() == ".wav":
            write_wav(out, rec, sample_format=args.wav_format)
        elif out.suffix.lower() == ".npz":
            write_npz(out, rec)
        else:
            raise RecordingError(out, "output must end in .npz or .wav")
    except (PumpConfigError, RecordingError, ValueError) as exc:
        print(f"pumpwatch simulate: {exc}", file=sys.stderr)
        return 2
    m = rec.meta
    faults = ", ".join(f"{f['kind']} {f['severity']:.2f}" for f in m["faults"]) or "none"
    bf = m["bearing_frequencies_hz"]
    print(
        f"wrote {out}: {rec.duration_s:g} s x {len(rec.channels)} channels "
        f"({', '.join(rec.channels)}) at {rec.fs:g} Hz, seed {args.seed}"
    )
    print(f"  pump {cfg.name}: {m['rpm']:.1f} rpm, {cfg.vanes} vanes, faults: {faults}")
    if bf:
        print(
            f"  bearing {cfg.bearings[0].geometry.designation or '(custom)'}: "
            f"BPFO {bf['bpfo']:.2f}  BPFI {bf['bpfi']:.2f}  BSF {bf['bsf']:.2f}  "
            f"FTF {bf['ftf']:.2f} Hz"
        )
    return 0
