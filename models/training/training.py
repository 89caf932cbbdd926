"""Train the condition classifier on simulated reports; write a servable bundle.

Theory of operation. The classifier is a small neural network (the bundle's
``mlp`` kind, :mod:`models.serving.mlp`: one tanh hidden layer of 16 units,
loads with numpy alone, no training code) -- or, with ``kind="softmax"``,
multinomial logistic regression -- over physics features the edge already
computes, as logarithms of *ratios* (:data:`FEATURES`): each shaft line's
share of the velocity RMS (1x for imbalance, 2x for misalignment), env_bpfi
the inner-race line over the envelope floor, a band's RMS over the total its
share (cavitation); the velocity RMS is the one absolute level. Shaft lines
are orders of the running speed (v1x..v3x, blade pass), the rest is
level-free, so the model transfers across speeds, sensors, gains and
machines (quiet rigs as loud pumps). Features are standardised and clipped
to +-4 standard deviations (a machine unlike any simulated one saturates a
feature instead of extrapolating); missing ones (a band the sample rate
cannot hold) become the training mean, i.e. "no information".

Fitting: scikit-learn (:mod:`models.training.estimators`: ``StandardScaler``,
then ``MLPClassifier`` or ``LogisticRegression``, L-BFGS) on the
class-balanced mean cross-entropy plus an L2 penalty on the weights (full
batch: a few thousand reports, seconds); the fitted weights are exported into
the numpy artifacts the server loads, so serving never needs scikit-learn.
The bundle also carries the training features' statistics
(:mod:`models.training.statistics`, Model Monitor layout). The hidden
size (16) was chosen among 16/32/64 on the simulator's held-out split; the
clip (4) was set before any real-data run; nothing is chosen on real
recordings (docs/models.md says what was looked at).
Calibration: the fitted model's probabilities are temperature-scaled
(:mod:`models.training.calibration`): one temperature, fitted on a separate
simulated calibration split (its own seeds, never in the fit), exported in
the bundle's ``classifier`` entry and applied by the served kind.
Metrics come from a held-out simulator split with unseen seeds, speeds and
resonances (:mod:`models.training.train_sim`): ``sim_macro_f1`` is the
macro-F1 over the classifier's (the manifest's) machine classes of the label
a user sees -- the top class, ``unknown`` below the serving threshold, which
counts as wrong; ``sim_ece`` the expected calibration error (15 bins) of the
calibrated top-class confidence.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import dsp
from models.serving.baseline import Baselines
from models.serving.bundle import pack_bundle, write_bundle
from models.serving.classifier import SoftmaxClassifier
from models.serving.features import extract
from models.serving.mlp import MLPClassifier
from models.serving.physics import PhysicsParams
from models.serving.statistics import attach_statistics

from .calibration import ECE_BINS, expected_calibration_error, fit_temperature, label_index
from .estimators import export_mlp, export_softmax, fit_mlp_pipeline, fit_softmax_pipeline
from .evaluation import confusion, macro_f1, per_class_f1
from .replay import STANDARD_BANDS
from .statistics import training_statistics, write_statistics
from .train_sim import CLASSES, Progress, simulate

F64 = NDArray[np.float64]

#: Level-free but for one: the velocity RMS (the ISO severity, mm/s) is the only absolute
#: level; every other feature is a ratio (each shaft line to the velocity RMS, a band's
#: share of the acceleration RMS, envelope lines to the envelope floor) or a shape statistic.
#: With absolute acceleration and shaft-line levels the classifier learned "a quiet machine
#: is healthy, a loud high band is cavitation", which fails on quiet, resonance-dominated
#: rigs; ratios carry the same physics without the machine's or the sensor's level.
FEATURES: tuple[str, ...] = (
    "log:velocity_rms",
    "log:rms/velocity_rms",
    "log:v1x/velocity_rms",
    "log:v2x/velocity_rms",
    "log:v3x/velocity_rms",
    "log:vbpf/velocity_rms",
    "log:kurtosis",
    "log:crest",
    "skewness",
    "log:env_bpfo",
    "log:env_bpfi",
    "log:env_bsf",
    "log:env_ftf",
    "log:env_kurtosis",
    *(f"log:band_rms[{lo:g}-{hi:g}]/rms" for lo, hi in STANDARD_BANDS),
)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    pumps_per_class: int = 60
    test_pumps_per_class: int = 25
    calib_pumps_per_class: int = 15  # the temperature's split; 0: no calibration (T = 1)
    seconds: int = 3
    seed: int = 0
    kind: Literal["mlp", "softmax"] = "mlp"
    hidden: int = 16
    l2: float = 1e-3
    clip: float = 4.0
    features: tuple[str, ...] = FEATURES


Classifier = MLPClassifier | SoftmaxClassifier


@dataclass
class TrainResult:
    classifier: Classifier
    metrics: dict[str, float]
    report: dict[str, Any] = field(default_factory=dict)
    statistics: dict[str, Any] | None = None  # statistics.json of the training features

    @property
    def description(self) -> str:
        return (f"condition classifier ({self.classifier.kind} over dsp physics features) "
                "trained on the simulator")


def _matrix(reports: Sequence[dsp.Report], names: Sequence[str]) -> F64:
    return extract(reports).matrix(names)


def fit_softmax(
    x: F64,
    labels: Sequence[str],
    *,
    feature_names: tuple[str, ...],
    classes: tuple[str, ...] = CLASSES,
    l2: float = 1e-3,
) -> SoftmaxClassifier:
    """Multinomial logistic regression, class-balanced, L2-penalised (scikit-learn, exported)."""
    pipe = fit_softmax_pipeline(x, labels, classes=classes, l2=l2)
    return export_softmax(pipe, feature_names=feature_names, classes=classes)


def fit_mlp(
    x: F64,
    labels: Sequence[str],
    *,
    feature_names: tuple[str, ...],
    classes: tuple[str, ...] = CLASSES,
    hidden: int = 16,
    l2: float = 1e-3,
    clip: float = 4.0,
    seed: int = 0,
) -> MLPClassifier:
    """One tanh hidden layer, softmax output; class-balanced cross-entropy + L2 (scikit-learn)."""
    pipe = fit_mlp_pipeline(x, labels, classes=classes, hidden=hidden, l2=l2, clip=clip,
                            seed=seed)
    return export_mlp(pipe, feature_names=feature_names, classes=classes)


def fit(cfg: TrainConfig, reports: Sequence[dsp.Report], labels: Sequence[str]) -> Classifier:
    """Fit the configured classifier kind on labelled reports."""
    x = _matrix(reports, cfg.features)
    if cfg.kind == "softmax":
        return fit_softmax(x, labels, feature_names=cfg.features, l2=cfg.l2)
    return fit_mlp(
        x, labels, feature_names=cfg.features, hidden=cfg.hidden, l2=cfg.l2, clip=cfg.clip,
        seed=cfg.seed,
    )


def predict(
    clf: Classifier, reports: Sequence[dsp.Report], *, unsure_below: float | None = None
) -> list[str]:
    """Top class per report (``"unknown"`` where the top probability is below ``unsure_below``)."""
    p = clf.predict_proba(extract(reports))
    top = p.argmax(axis=1)
    out = [clf.classes[i] for i in top.tolist()]
    if unsure_below is not None:
        sure = p.max(axis=1) >= unsure_below
        out = [c if s else "unknown" for c, s in zip(out, sure.tolist(), strict=True)]
    return out


def train(
    cfg: TrainConfig,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    labelled: tuple[Sequence[dsp.Report], Sequence[str]] | None = None,
) -> TrainResult:
    """Simulate, fit, and measure on the held-out split. ``labelled``: more training
    reports and their labels (operators' verdicts, :func:`.labels.read_labels`), added to
    the simulated training split; each label must be a class the simulator trains
    (ValueError naming the others). The held-out measurement stays simulated."""
    t0 = time.perf_counter()
    extra_reports, extra_labels = labelled if labelled is not None else ((), ())
    unknown = sorted(set(extra_labels) - set(CLASSES))
    if unknown:  # before any simulation
        raise ValueError(f"labels {unknown} are not classes the simulator trains "
                         f"({list(CLASSES)})")

    def stage(name: str) -> Progress | None:
        if progress is None:
            return None
        return lambda i, n: progress(name, i, n)

    tr = simulate(
        cfg.pumps_per_class, seed=cfg.seed, split="train", seconds=cfg.seconds,
        progress=stage("simulate train"),
    )
    te = simulate(
        cfg.test_pumps_per_class, seed=cfg.seed, split="test", seconds=cfg.seconds,
        progress=stage("simulate held-out"),
    )
    ca = simulate(
        cfg.calib_pumps_per_class, seed=cfg.seed, split="calib", seconds=cfg.seconds,
        progress=stage("simulate calibration"),
    ) if cfg.calib_pumps_per_class > 0 else None
    t_sim = time.perf_counter() - t0
    if extra_labels:
        g0 = max(tr.groups, default=-1) + 1  # each labelled report its own group
        tr = dataclasses.replace(tr, reports=[*tr.reports, *extra_reports],
                                 labels=[*tr.labels, *extra_labels],
                                 groups=[*tr.groups, *range(g0, g0 + len(extra_labels))])
    clf = fit(cfg, tr.reports, tr.labels)
    classes = clf.classes  # the manifest's machine classes, in output order
    y_te = label_index(te.labels, classes)
    raw_te = clf.predict_proba(extract(te.reports))
    temperature = 1.0
    if ca is not None:
        temperature = fit_temperature(clf.predict_proba(extract(ca.reports)),
                                      label_index(ca.labels, classes))
        clf = clf.with_temperature(temperature)
    stats = training_statistics(_matrix(tr.reports, cfg.features), cfg.features, tr.labels,
                                clf.classes)
    p_te = clf.predict_proba(extract(te.reports))
    pred = [classes[i] for i in p_te.argmax(axis=1).tolist()]
    unsure = PhysicsParams().unsure_below
    pred_u = [c if p >= unsure else "unknown" for c, p in zip(pred, p_te.max(axis=1).tolist(),
                                                                strict=True)]
    train_pred = predict(clf, tr.reports)
    f1 = per_class_f1(te.labels, pred_u, classes)
    by_source: dict[str, float] = {}
    for src in ("given", "estimated"):
        idx = [i for i, r in enumerate(te.reports) if r.speed.source == src]
        if idx:
            by_source[f"sim_macro_f1_{src}_speed"] = round(
                macro_f1([te.labels[i] for i in idx], [pred_u[i] for i in idx], classes), 4
            )
    metrics = {
        "sim_macro_f1": round(macro_f1(te.labels, pred_u, classes), 4),
        "sim_macro_f1_top_class": round(macro_f1(te.labels, pred, classes), 4),
        "sim_unknown_share": round(float(np.mean([p == "unknown" for p in pred_u])), 4),
        "sim_ece": round(expected_calibration_error(p_te, y_te), 4),
        "sim_ece_uncalibrated": round(expected_calibration_error(raw_te, y_te), 4),
        "sim_temperature": round(temperature, 4),
        "sim_train_macro_f1": round(macro_f1(tr.labels, train_pred, classes), 4),
        **by_source,
        "n_train_reports": float(len(tr.reports)),
        "n_label_reports": float(len(extra_labels)),
        "n_test_reports": float(len(te.reports)),
        "n_calibration_reports": float(len(ca.reports) if ca is not None else 0),
        **{f"sim_f1_{c}": round(float(v), 4) for c, v in zip(classes, f1, strict=True)},
    }
    report = {
        "classes": list(classes),
        "confusion": confusion(te.labels, pred_u, classes).tolist(),
        "features": list(cfg.features),
        "temperature": temperature,
        "ece_bins": ECE_BINS,
        "config": {k: getattr(cfg, k) for k in ("pumps_per_class", "test_pumps_per_class",
                                                "calib_pumps_per_class", "seconds", "seed",
                                                "kind", "hidden", "l2", "clip")},
        "seconds_simulating": round(t_sim, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
    }
    return TrainResult(clf, metrics, report, stats)


def write_model(
    result: TrainResult, out_dir: Path, *, model_version: str, baselines: Baselines | None = None
) -> Path:
    """``out_dir/bundle/`` (the bundle), ``out_dir/model.tar.gz`` and ``out_dir/metrics.json``.

    The bundle holds the classifier, ``baselines`` when given, and the
    training statistics (``statistics.json`` / ``constraints.json``, listed
    in ``bundle.json``) when the result has them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    description = result.description
    if baselines is not None:
        description += f"; baselines for {len(baselines.pumps)} pumps"
    bundle_dir = write_bundle(
        out_dir / "bundle", model_version=model_version, classifier=result.classifier,
        baselines=baselines, description=description, metrics=result.metrics,
    )
    if result.statistics is not None:
        write_statistics(bundle_dir, result.statistics)
        attach_statistics(bundle_dir)
    tar = pack_bundle(bundle_dir, out_dir / "model.tar.gz")
    (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    (out_dir / "training.json").write_text(json.dumps(result.report, indent=2) + "\n")
    return tar
