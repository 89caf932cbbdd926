"""Model quality: simulator held-out split and real recordings (CWRU, IMS) never trained on.

    python -m bench.models [--json] [--quick] [--seed 0] [--model DIR]

Simulator (held-out split: unseen seeds, speeds and resonances):
  sim_macro_f1       condition classifier, macro-F1 over the manifest's classes
                     (from the training metrics)
  sim_ece            expected calibration error of its top-class probability on
                     that split (15 bins; the training metrics' own when they carry
                     it, else computed here on the re-simulated split)
  sim_endpoint_macro_f1  the same split through the real model server: the label
                     a user sees, anything outside the classes (unknown,
                     sensor_fault) counted wrong; sim_endpoint_unknown_share,
                     sim_endpoint_decided_by
  sim_anomaly_auroc  per-pump baselines (fitted on each pump's healthy
                     period), healthy vs faulted windows of the same pumps
What the user sees (bench/labels.py, bench/real_streams.py): every CWRU file of
the manifest (12 and 48 kHz, each at its own rate) and the 8 IMS channels,
replayed exactly as ``pumpwatch replay`` builds reports with the edge's default
report config, labelled by the real model server process (msgpack POST
/invocations) over the benchmark's trained bundle (statistics included, plus
each machine's baseline from its own healthy or early data):
  per_file                       truth, endpoint label counts, decided_by counts,
                                 fixed-band and classifier labels, anomalous count
  cwru_endpoint_accuracy_ir_or / _ball / _inner / _outer, cwru_endpoint_unknown_share
  cwru_fixed_band_accuracy (+ _ir_or, _ball, _inner, _outer): textbook fixed band
                                 (2-5.4 kHz), strongest of BPFO/BPFI/2xBSF, same windows
  cwru_classifier_accuracy (+ _ball): the classifier alone on the same reports
  cwru_normal_healthy_share, ims_endpoint_healthy_share
  sensor_fault_recall            dead, partially dead, clipped, partially clipped and
                                 non-finite variants of the real files
  sensor_fault_false_rate        sensor_fault on any other report, including real
                                 faults whose few highest impacts clip
                                 (clipped_impacts_accuracy: still diagnosed)
  endpoint_decided_by            results per deciding rule (none given: "classifier")
Older figures (bench report settings, 48 kHz normal decimated to 12 kHz), kept for
comparison with earlier runs:
  cwru_anomaly_auroc_min    baseline from the first half of normal_0_97
                            (48 kHz, decimated to 12 kHz), second half vs
                            every 12 kHz drive-end fault file, minimum AUROC
  cwru_diagnosis_accuracy   physics diagnosis (envelope families, SKF 6205
                            geometry, recorded rpm) on the 12 kHz inner/outer files
  cwru_fixed_band_accuracy_12k / cwru_classifier_accuracy_12k  the same windows
  ims_false_alarm_rate      a healthy second machine (IMS test 1, 8 channels):
                            baseline per channel on the first 3 snapshots,
                            share of windows of the last 2 over threshold
  ims_classifier_healthy_share  the classifier on that machine (40 reports)
Real recordings (../shared/data/real or $PUMPWATCH_REAL_DATA) are for measuring
only: nothing is fitted or tuned on them except each machine's anomaly baseline,
on its own healthy (CWRU normal) or early (IMS first snapshots) data.
The last line printed is one JSON object.
"""

from __future__ import annotations

from . import _pin  # first: pins BLAS/FFT threads before numpy loads

import argparse
from collections import Counter
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import scipy.signal

import dsp
from dsp.results import UNKNOWN
from models.training.anomaly import fit_pump_baselines, score_reports
from models.serving.bundle import extract_archive, load_bundle, read_manifest
from models.serving.classifier import SoftmaxClassifier
from models.serving.mlp import MLPClassifier
from models.serving.diagnostics import diagnose_bearing, fixed_band_diagnosis
from models.training.evaluation import auroc, macro_f1
from models.serving.features import extract
from models.serving.statistics import STATISTICS_FILE
from simulator.recordings import IMS_FS, read_recording
from models.training.replay import bearing_asset, config_for, reports_from_signal
from models.training.train_sim import LabelledReports, simulate, simulate_anomaly
from models.training.training import (
    Classifier, TrainConfig, TrainResult, predict, train, write_model,
)

from .labels import FAULTS, Endpoint, clip_impacts, decided_by, make_variants, measure_stream
from .labels import summarize
from .real_data import MISSING, real_data_dir
from .real_streams import CWRU_BEARING, IMS_BEARING, cwru_streams, fit_baselines, ims_streams

ROOT = Path(__file__).resolve().parent.parent
CLASS_OF = {"inner_race": "bearing_inner", "outer_race": "bearing_outer", "ball": "bearing_ball"}


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
        "cwru_fixed_band_accuracy_12k": round(fixed_ok / n_ir_or, 4),
        "cwru_classifier_accuracy_12k": round(clf_ok / n_ir_or, 4),
        "cwru_ball_diagnosis_accuracy": round(
            float(np.mean([v["diagnosis"] for v in ball.values()])), 4),
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


def expected_calibration_error(
    proba: np.ndarray, labels: list[str], classes: tuple[str, ...], *, bins: int = 15
) -> float:
    """ECE of the top class: |accuracy - confidence| over equal-width confidence bins,
    weighted by each bin's share of reports (Guo et al. 2017, 15 bins)."""
    conf = proba.max(axis=1)
    hit = np.array([classes[i] == y for i, y in zip(proba.argmax(axis=1), labels, strict=True)])
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(float(hit[m].mean()) - float(conf[m].mean()))
    return float(ece)


def sim_calibration(clf: Classifier, held_out: LabelledReports) -> dict[str, float]:
    """``sim_ece`` of the classifier on the held-out split."""
    p = clf.predict_proba(extract(held_out.reports))
    return {"sim_ece": round(expected_calibration_error(p, held_out.labels, clf.classes), 4)}


def endpoint_figures(
    real: Path | None, tr: TrainResult, held_out: LabelledReports, out_dir: Path, quiet: bool
) -> dict[str, Any]:
    """The labels the real model server returns: for the simulator's held-out split, and
    for the real files replayed as the edge does (when they are there)."""
    baselines = None
    if real is not None:
        _log("endpoint: baselines from each machine's healthy data ...", quiet)
        baselines = fit_baselines(real)
    write_model(tr, out_dir, model_version="bench-models", baselines=baselines)
    out: dict[str, Any] = {}
    with Endpoint(out_dir / "bundle") as ep:
        _log("endpoint: simulator held-out split ...", quiet)
        results = ep.invoke(held_out.reports)
        labels = [str(r["condition"]) for r in results]
        classes = tr.classifier.classes  # the manifest's machine classes; others are misses
        out["sim_endpoint_macro_f1"] = round(macro_f1(held_out.labels, labels, classes), 4)
        out["sim_endpoint_unknown_share"] = round(labels.count(UNKNOWN) / len(labels), 4)
        out["sim_endpoint_decided_by"] = dict(sorted(Counter(map(decided_by, results)).items()))
        if real is None:
            return out
        streams = [*cwru_streams(real), *ims_streams(real)]
        variants = [v for s in streams if s.name.startswith("cwru") or s.name.endswith(":ch1")
                    for v in make_variants(s)]
        impacts = [clip_impacts(s) for s in streams if s.truth in FAULTS]
        orders = dsp.bearing_orders(*CWRU_BEARING[1:])
        measured = []
        for s in [*streams, *impacts, *variants]:
            _log(f"endpoint: {s.name}", quiet)
            measured.append(measure_stream(ep, s, classify=lambda r: predict(tr.classifier, r),
                                           orders=orders))
    return {**out, **summarize(measured)}


def load_trained(path: Path, scratch: Path) -> tuple[TrainResult, TrainConfig]:
    """A trained model given as a ``pumpwatch train --out`` dir, bundle dir or model.tar.gz,
    with its metrics, training statistics and training config when they are beside it."""
    out_dir = path if path.is_dir() and (path / "model.tar.gz").is_file() else None
    if out_dir is not None:
        bundle_dir = out_dir / "bundle"
        if not (bundle_dir / "bundle.json").is_file():
            bundle_dir = extract_archive(out_dir / "model.tar.gz", scratch)
    elif path.is_file():
        out_dir, bundle_dir = path.parent, extract_archive(path, scratch)
    else:
        bundle_dir = path
    bundle = load_bundle(bundle_dir)
    if not isinstance(bundle.classifier, MLPClassifier | SoftmaxClassifier):
        raise SystemExit(f"{path}: not a trained classifier")
    metrics: dict[str, float] = {}
    report: dict[str, Any] = {}
    if out_dir is not None and (out_dir / "metrics.json").is_file():
        metrics = json.loads((out_dir / "metrics.json").read_text())
    else:  # a bundle alone: the metrics its manifest carries
        metrics = dict(read_manifest(bundle_dir).get("metrics") or {})
    if out_dir is not None and (out_dir / "training.json").is_file():
        report = json.loads((out_dir / "training.json").read_text())
    stats = None
    if (bundle_dir / STATISTICS_FILE).is_file():
        stats = json.loads((bundle_dir / STATISTICS_FILE).read_text())
    keys = ("pumps_per_class", "test_pumps_per_class", "seconds", "seed")
    tc = TrainConfig(**{k: v for k, v in report.get("config", {}).items() if k in keys})
    return TrainResult(bundle.classifier, metrics, report, stats), tc


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
    tmp = tempfile.TemporaryDirectory(prefix="bench-models-")
    if args.model is not None:
        tr, tc = load_trained(args.model, Path(tmp.name) / "given")
    else:
        tc = TrainConfig(seed=args.seed)
        if args.quick:
            tc = TrainConfig(seed=args.seed, pumps_per_class=12, test_pumps_per_class=6,
                             seconds=2)
        _log(f"training on the simulator ({tc.pumps_per_class} pumps/class) ...", quiet)
        tr = train(tc)
    clf = tr.classifier
    result.update(tr.metrics)
    _log("simulator held-out split (for calibration and the endpoint) ...", quiet)
    held_out = simulate(tc.test_pumps_per_class, seed=tc.seed, split="test", seconds=tc.seconds)
    if "sim_ece" not in result:  # training metrics carry it once the trainer computes it
        result.update(sim_calibration(clf, held_out))
    _log("simulator anomaly ...", quiet)
    result.update(sim_anomaly(16 if args.quick else 48, args.seed))
    real = real_data_dir()
    if real is None:
        msg = MISSING
        if os.environ.get("CI") == "true":
            raise SystemExit(msg)
        _log(msg + ": skipping real-data figures", quiet)
    else:
        _log("CWRU ...", quiet)
        result.update(cwru(real, clf))
        _log("IMS ...", quiet)
        result.update(ims(real, clf))
    result.update(endpoint_figures(real, tr, held_out, Path(tmp.name) / "model", quiet))
    tmp.cleanup()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["seed"] = args.seed
    if not quiet:
        for k, v in result.items():
            if not isinstance(v, dict):
                print(f"{k:34s} {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
