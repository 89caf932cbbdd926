"""Model quality: simulator held-out split and real recordings (CWRU, IMS) never trained on.

    python -m bench.models [--json] [--quick] [--seed 0] [--model DIR]

Simulator (held-out split: unseen seeds, speeds and resonances):
  sim_macro_f1       condition classifier, macro-F1 over the 8 classes
  sim_anomaly_auroc  per-pump baselines (fitted on each pump's healthy
                     period), healthy vs faulted windows of the same pumps
Real recordings (../shared/data/real or $PUMPWATCH_REAL_DATA), replayed as
1 s reports through the same dsp as the edge; used for measuring only --
nothing here is fitted or tuned on them except the CWRU baseline, which is
fitted on the first half of the normal recording exactly as the task states:
  cwru_anomaly_auroc_min    baseline from the first half of normal_0_97
                            (48 kHz, decimated to 12 kHz), second half vs
                            every 12 kHz drive-end fault file, minimum AUROC
  cwru_diagnosis_accuracy   physics diagnosis (envelope families, SKF 6205
                            geometry, recorded rpm) on the inner/outer files
  cwru_fixed_band_accuracy  plain fixed-band (2-5.4 kHz) envelope, same windows
  cwru_classifier_accuracy  the simulator-trained classifier on the inner/outer files
  ims_false_alarm_rate      a healthy second machine (IMS test 1, 8 channels):
                            baseline per channel on the first 3 snapshots,
                            share of windows of the last 2 over threshold
  ims_classifier_healthy_share  the classifier on that machine (40 reports)
The last line printed is one JSON object.
"""

from __future__ import annotations

from . import _pin  # first: pins BLAS/FFT threads before numpy loads

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import scipy.signal

import dsp
from models.training.anomaly import fit_pump_baselines, score_reports
from models.serving.bundle import load_bundle
from models.serving.classifier import SoftmaxClassifier
from models.serving.mlp import MLPClassifier
from models.serving.diagnostics import diagnose_bearing, fixed_band_diagnosis
from models.training.evaluation import auroc
from simulator.recordings import IMS_FS, read_recording
from models.training.replay import bearing_asset, config_for, reports_from_signal
from models.training.train_sim import simulate_anomaly
from models.training.training import TrainConfig, predict, train

ROOT = Path(__file__).resolve().parent.parent
CWRU_BEARING = ("6205", 9, 7.94, 39.04)  # SKF 6205-2RS JEM (drive end)
IMS_BEARING = ("ZA-2115", 16, 8.407, 71.50, 15.17)
CLASS_OF = {"inner_race": "bearing_inner", "outer_race": "bearing_outer", "ball": "bearing_ball"}


def real_dir() -> Path | None:
    env = os.environ.get("PUMPWATCH_REAL_DATA")
    p = Path(env) if env else ROOT.parent / "shared" / "data" / "real"
    return p if (p / "manifest.csv").exists() else None


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def sim_anomaly(n_pumps: int, seed: int) -> dict[str, Any]:
    data = simulate_anomaly(n_pumps, seed=seed)
    neg: list[float] = []
    pos: list[float] = []
    per_kind: dict[str, list[float]] = {}
    false_alarms = 0
    n_healthy = 0
    misses = 0
    for fit, healthy, faulty, kind in zip(
        data.fit, data.healthy, data.faulty, data.fault_kinds, strict=True
    ):
        b = fit_pump_baselines(fit)
        sh, th = score_reports(b, healthy)
        sf, tf = score_reports(b, faulty)
        neg += sh.tolist()
        pos += sf.tolist()
        per_kind.setdefault(kind, []).extend(sf.tolist())
        false_alarms += int(np.sum(sh >= th))
        n_healthy += sh.size
        misses += int(np.sum(sf < tf))
    out: dict[str, Any] = {
        "sim_anomaly_auroc": round(auroc(neg, pos), 4),
        "sim_anomaly_false_alarm_rate": round(false_alarms / max(n_healthy, 1), 4),
        "sim_anomaly_detection_rate": round(1 - misses / max(len(pos), 1), 4),
    }
    for kind, sc in sorted(per_kind.items()):
        out[f"sim_anomaly_auroc_{kind}"] = round(auroc(neg, sc), 4)
    return out


def cwru(real: Path, clf: MLPClassifier | SoftmaxClassifier) -> dict[str, Any]:
    d = real / "cwru"
    asset = bearing_asset(*CWRU_BEARING, rated_rpm=1797.0, kind="CWRU motor test rig")
    orders = dsp.bearing_orders(*CWRU_BEARING[1:])
    fs = 12000.0
    cfg = config_for(fs)
    normal = read_recording(d / "normal_0_97.mat", fs=48000.0)  # 48 kHz: PROVENANCE.md
    x = scipy.signal.resample_poly(normal.samples[0], 1, 4)  # 48 -> 12 kHz, anti-aliased
    half = x.size // 2
    kw: dict[str, Any] = {
        "asset": asset, "rpm": normal.rpm, "pump": "cwru-de", "cfg": cfg, "hop_s": 0.25
    }
    base = fit_pump_baselines(reports_from_signal(x[:half], fs, **kw))
    neg, _ = score_reports(base, reports_from_signal(x[half:], fs, **kw))

    out: dict[str, Any] = {}
    aurocs: dict[str, float] = {}
    diag_ok = fixed_ok = clf_ok = n_ir_or = 0
    files = sorted(d.glob("12k_Drive_End_*.mat"))
    for f in files:
        rec = read_recording(f)
        label = "inner_race" if "_IR" in f.name else "outer_race" if "_OR" in f.name else "ball"
        cls = CLASS_OF[label]
        x = rec.samples[0]  # DE
        reps = reports_from_signal(x, rec.fs, asset=asset, rpm=rec.rpm, pump="cwru-de", cfg=cfg)
        pos, _ = score_reports(base, reps)
        key = f.stem.replace("12k_Drive_End_", "")
        aurocs[key] = round(auroc(neg, pos), 4)
        diag = [diagnose_bearing(r).label for r in reps]
        n = cfg.interval_samples
        fixed = [
            fixed_band_diagnosis(x[i * n : (i + 1) * n], rec.fs, rpm=float(rec.rpm or 0),
                                 orders=orders)
            for i in range(len(reps))
        ]
        pred = predict(clf, reps)
        d_acc = sum(p == cls for p in diag)
        f_acc = sum(p == cls for p in fixed)
        c_acc = sum(p == cls for p in pred)
        out[f"cwru_{key}"] = {
            "windows": len(reps),
            "diagnosis": round(d_acc / len(reps), 3),
            "fixed_band": round(f_acc / len(reps), 3),
            "classifier": round(c_acc / len(reps), 3),
            "classifier_labels": {c: pred.count(c) for c in sorted(set(pred))},
            "anomaly_auroc": aurocs[key],
        }
        if label != "ball":
            n_ir_or += len(reps)
            diag_ok += d_acc
            fixed_ok += f_acc
            clf_ok += c_acc
    ball = {k: v for k, v in out.items() if "_B0" in k}
    return {
        "cwru_anomaly_auroc_min": min(aurocs.values()),
        "cwru_diagnosis_accuracy": round(diag_ok / n_ir_or, 4),
        "cwru_fixed_band_accuracy": round(fixed_ok / n_ir_or, 4),
        "cwru_classifier_accuracy": round(clf_ok / n_ir_or, 4),
        "cwru_ball_diagnosis_accuracy": round(
            float(np.mean([v["diagnosis"] for v in ball.values()])), 4),
        "cwru_ball_classifier_accuracy": round(
            float(np.mean([v["classifier"] for v in ball.values()])), 4),
        "cwru_anomaly_auroc": aurocs,
        "cwru_files": out,
    }


def ims(real: Path, clf: MLPClassifier | SoftmaxClassifier) -> dict[str, Any]:
    """A healthy machine never trained on: how often do per-channel baselines false-alarm?

    Each IMS file is one 1 s snapshot, so reports here are 0.25 s (4 per
    snapshot): fit on the first 3 snapshots of a channel, score the last 2.
    """
    files = sorted((real / "ims").glob("ims_test1_*.tsv"))
    if len(files) < 5:
        return {}
    fs = IMS_FS  # as the IMS documentation states (20 kHz; 20,480 points per snapshot)
    asset = bearing_asset(*IMS_BEARING[:4], IMS_BEARING[4], rated_rpm=2000.0, kind="IMS rig")
    cfg = config_for(fs, interval_s=0.25)
    data = [read_recording(f, fs=fs).samples for f in files]  # (8, n) m/s^2
    alarms = total = 0
    for ch in range(data[0].shape[0]):
        kw: dict[str, Any] = {"asset": asset, "rpm": 2000.0, "pump": f"ims-ch{ch + 1}",
                              "cfg": cfg}
        per_file = [reports_from_signal(a[ch], fs, **kw) for a in data]
        reps = [  # one time axis across snapshots (5 min apart)
            msgspec.structs.replace(r, t0_ns=r.t0_ns + k * 300_000_000_000)
            for k, file_reps in enumerate(per_file) for r in file_reps
        ]
        n_fit = sum(len(r) for r in per_file[:3])
        base = fit_pump_baselines(reps[:n_fit])
        if not base.pumps:
            raise SystemExit(f"IMS channel {ch + 1}: no baseline from {n_fit} reports")
        s, t = score_reports(base, reps[n_fit:])
        alarms += int(np.sum(s >= t))
        total += s.size
    # The classifier on a healthy machine it never saw: one 1 s report per snapshot and channel.
    cfg1 = config_for(fs)
    reps = [r for a in data for ch in range(a.shape[0])
            for r in reports_from_signal(a[ch], fs, asset=asset, rpm=2000.0,
                                         pump="ims", cfg=cfg1)]
    labels = predict(clf, reps)
    return {
        "ims_false_alarm_rate": round(alarms / max(total, 1), 4),
        "ims_windows": total,
        "ims_classifier_healthy_share": round(labels.count("healthy") / len(labels), 4),
        "ims_classifier_labels": {c: labels.count(c) for c in sorted(set(labels))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="progress to stderr only")
    ap.add_argument("--quick", action="store_true", help="small simulator sets (about 1 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, help="use this trained model (a `pumpwatch train "
                    "--out` dir, bundle dir or model.tar.gz) instead of training one; the "
                    "sim_macro_f1 figures then come from its metrics.json")
    args = ap.parse_args()
    _pin.pin_to_core(0)
    quiet = args.json
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    if args.model is not None:
        path = args.model
        if path.is_dir() and (path / "model.tar.gz").is_file():  # a `pumpwatch train --out` dir
            path = path / "model.tar.gz"
        bundle = load_bundle(path)
        if not isinstance(bundle.classifier, MLPClassifier | SoftmaxClassifier):
            raise SystemExit(f"{args.model}: not a trained classifier")
        clf: MLPClassifier | SoftmaxClassifier = bundle.classifier
        mpath = path.parent / "metrics.json" if path.is_file() else path / "metrics.json"
        if mpath.exists():
            result.update(json.loads(mpath.read_text()))
    else:
        tc = TrainConfig(seed=args.seed)
        if args.quick:
            tc = TrainConfig(seed=args.seed, pumps_per_class=12, test_pumps_per_class=6,
                             seconds=2)
        _log(f"training on the simulator ({tc.pumps_per_class} pumps/class) ...", quiet)
        tr = train(tc)
        clf = tr.classifier
        result.update(tr.metrics)
    _log("simulator anomaly ...", quiet)
    result.update(sim_anomaly(16 if args.quick else 48, args.seed))
    real = real_dir()
    if real is None:
        msg = "real recordings not found (PUMPWATCH_REAL_DATA or ../shared/data/real)"
        if os.environ.get("CI") == "true":
            raise SystemExit(msg)
        _log(msg + ": skipping real-data figures", quiet)
    else:
        _log("CWRU ...", quiet)
        result.update(cwru(real, clf))
        _log("IMS ...", quiet)
        result.update(ims(real, clf))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["seed"] = args.seed
    if not quiet:
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:34s} {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
