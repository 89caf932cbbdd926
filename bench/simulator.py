"""Simulator synthesis throughput.

    python -m bench.simulator [--json] [--pumps 8] [--channels-per-pump 4] [--seconds 5] [--runs 5]

A device of ``pumps x channels-per-pump`` channels (default 8 x 4 = 32) at
25.6 kHz, read in 0.1 s blocks as the edge agent reads a sensor, for
``--seconds`` of stream per run. Worst case by default: every pump carries a
fault that is fully developed from t = 0 (bearing faults keep their impact
resonators running; cavitation its burst banks). ``--healthy`` drops the
faults. Pinned to one core with BLAS/FFT threads at one; the figure is the
median over ``--runs`` of stream seconds per wall second (``realtime_factor``);
CPU-time figures are given too, since the machine may be shared. The last line
printed is one JSON object.
"""

from __future__ import annotations

from . import _pin  # first: pins BLAS/FFT threads before numpy loads

import argparse
import dataclasses
import json
import statistics
import time

from simulator import PumpConfig, SimulatedSource, fleet_configs


def run_once(
    pumps: list[PumpConfig], seconds: float, seed: int, block: int
) -> tuple[float, float, float]:
    """(stream seconds, wall seconds, cpu seconds) of one run, setup excluded."""
    src = SimulatedSource(pumps, seed=seed, block_size=block, duration_s=seconds)
    src.read(block)  # warm caches
    n = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for b in src.blocks():
        n += b.samples.shape[1]
    return n / src.fs, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    ap.add_argument("--pumps", type=int, default=8)
    ap.add_argument("--channels-per-pump", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--block", type=int, default=2560)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--healthy", action="store_true", help="no faults")
    args = ap.parse_args()
    cpu = _pin.pin_to_core()

    pumps = fleet_configs(args.pumps, args.channels_per_pump, seed=args.seed, healthy_fraction=0)
    if args.healthy:
        pumps = [p.with_faults() for p in pumps]
    else:
        pumps = [
            p.with_faults(*(dataclasses.replace(f, onset_s=0.0, ramp_s=0.0) for f in p.faults))
            for p in pumps
        ]
    channels = sum(len(p.sensors) for p in pumps)
    fs = pumps[0].fs
    walls: list[float] = []
    cpus: list[float] = []
    for i in range(args.runs):
        stream_s, wall, cpu_s = run_once(pumps, args.seconds, args.seed + i, args.block)
        walls.append(stream_s / wall)
        cpus.append(stream_s / cpu_s)
        if not args.json:
            print(
                f"run {i + 1}: {stream_s:g} s of {channels} channels in {wall:.3f} s wall "
                f"({stream_s / wall:.1f}x real time, {stream_s / cpu_s:.1f}x per CPU second)"
            )
    result = {
        "bench": "simulator",
        "channels": channels,
        "pumps": len(pumps),
        "fs": fs,
        "block": args.block,
        "seconds_per_run": args.seconds,
        "runs": args.runs,
        "faults": sorted({f.kind for p in pumps for f in p.faults}),
        "realtime_factor": round(statistics.median(walls), 2),
        "realtime_factor_min": round(min(walls), 2),
        "realtime_factor_cpu": round(statistics.median(cpus), 2),
        "samples_per_s": round(statistics.median(walls) * fs * channels),
        "pinned_cpu": cpu,
        "target": 50,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
