"""``pumpwatch selftest``: run the dsp on a generated test signal, print its report and a verdict.

The signal carries an outer-race fault (an impact train at BPFO). The test
passes when the envelope spectrum shows the BPFO line at a prominence of at
least :data:`DEFECT_LINE` and above the other defect lines (BPFI, BSF, FTF);
otherwise it prints ``FAIL`` and exits 1, so a broken install or build of the
numerics is caught on the gateway before it ships reports.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import dsp

# Envelope line prominence that counts as a defect line (the model server's physics
# evidence uses the same figure, models/serving/physics.py env_threshold).
DEFECT_LINE = 4.0
FAILED = 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("selftest", help="run the dsp on a generated signal and print the report")
    p.add_argument("--rpm", type=float, default=2950.0, help="shaft speed of the test signal")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--severity", type=float, default=1.0,
                   help="impact amplitude of the injected fault, relative (default 1)")
    p.add_argument("--json", action="store_true",
                   help="print the whole report as JSON (the verdict goes to stderr)")
    p.set_defaults(func=run)


def demo_signal(fs: float, n: int, rpm: float, seed: int,
                severity: float = 1.0) -> np.ndarray:
    """1x imbalance, blade pass, and an outer-race impact train ringing at 3.2 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    fr = rpm / 60.0
    x = 3.0 * np.sin(2 * np.pi * fr * t) + 0.6 * np.sin(2 * np.pi * 6 * fr * t + 0.3)
    bpfo = 3.5848 * fr
    # Impacts repeat at BPFO with ~1 % random slip, as rolling elements do.
    gaps = (1.0 + 0.01 * rng.standard_normal(int(2 * bpfo * n / fs) + 2)) / bpfo
    times = np.cumsum(gaps)
    times = times[times < n / fs]
    ring = np.exp(-800.0 * t[:400]) * np.sin(2 * np.pi * 3200.0 * t[:400])
    impulses = np.zeros(n)
    impulses[(times * fs).astype(int)] = 8.0 * severity
    x += np.convolve(impulses, ring)[:n] + 0.4 * rng.standard_normal(n)
    return x.astype(np.float32)[np.newaxis, :]


def run(args: argparse.Namespace) -> int:
    cfg = dsp.ReportConfig()
    if not args.severity > 0:
        print(f"pumpwatch selftest: --severity must be > 0, got {args.severity}",
              file=sys.stderr)
        return 2
    x = demo_signal(cfg.fs, cfg.interval_samples, args.rpm, args.seed, args.severity)
    asset = dsp.Asset(
        bearings=[dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")],
        vanes=6,
        rated_rpm=args.rpm,
    )
    spec = dsp.ChannelSpec(asset=asset)
    (result,) = dsp.analyze(x, cfg, [spec])
    report = dsp.make_report(
        result, cfg, spec, device="selftest", epoch=1, seq=0, site="lab", pump="p1",
        channel="x", t0_ns=0,
    )
    wire = dsp.encode_report(report)
    ok, verdict = judge(report.features)
    if args.json:
        print(json.dumps(dsp.report_to_builtins(report)))
        print(verdict, file=sys.stderr)
        return 0 if ok else FAILED
    f = report.features
    print(f"pumpwatch selftest: 1 s of {cfg.fs:.0f} Hz, shaft {args.rpm:.0f} rpm, outer-race fault")
    print(f"  running speed     {report.speed.rpm:8.1f} rpm ({report.speed.source})")
    print(f"  velocity RMS      {f.velocity_rms:8.2f} mm/s  ISO 20816 zone {f.iso_zone}")
    print(f"  accel RMS / peak  {f.rms:8.2f} / {f.peak:.2f} m/s^2, crest {f.crest:.2f}")
    print(f"  kurtosis          {f.kurtosis:8.2f}")
    print(f"  1x / 2x / BPF     {f.v1x or 0:8.2f} / {f.v2x or 0:.2f} / {f.vbpf or 0:.2f} mm/s")
    print(
        f"  envelope lines    BPFO {f.env_bpfo or 0:.1f}x  BPFI {f.env_bpfi or 0:.1f}x  "
        f"BSF {f.env_bsf or 0:.1f}x  FTF {f.env_ftf or 0:.1f}x (1 = no line)"
    )
    print(f"  envelope band     {report.envelope_band}")
    print(f"  report on wire    {len(wire)} bytes (raw int16: {2 * cfg.interval_samples} bytes)")
    print(verdict)
    return 0 if ok else FAILED


def judge(f: dsp.Features) -> tuple[bool, str]:
    """(passed, the verdict line): the injected outer-race fault must show as the BPFO line."""
    lines = {"BPFO": f.env_bpfo or 1.0, "BPFI": f.env_bpfi or 1.0, "BSF": f.env_bsf or 1.0,
             "FTF": f.env_ftf or 1.0}
    top = max(lines, key=lambda k: lines[k])
    if top == "BPFO" and lines["BPFO"] >= DEFECT_LINE:
        return True, (f"verdict: PASS - the injected outer-race fault is found (BPFO line "
                      f"{lines['BPFO']:.1f}x >= {DEFECT_LINE:g}x, the tallest defect line)")
    why = (f"BPFO line {lines['BPFO']:.1f}x < {DEFECT_LINE:g}x" if top == "BPFO"
           else f"the tallest defect line is {top} ({lines[top]:.1f}x), not BPFO "
           f"({lines['BPFO']:.1f}x)")
    return False, f"verdict: FAIL - the DSP missed the injected outer-race fault: {why}"
