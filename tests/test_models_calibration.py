"""Temperature scaling: fitted on held-out simulated data, exported, served identically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.serving.bundle import load_bundle, write_bundle
from models.serving.classifier import SoftmaxClassifier
from models.serving.errors import BundleError
from models.serving.features import extract
from models.serving.mlp import MLPClassifier
from models.training.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    label_index,
)
from models.training.estimators import (
    export_mlp,
    export_softmax,
    fit_mlp_pipeline,
    fit_softmax_pipeline,
)
from models.training.train_sim import CLASSES, LabelledReports, simulate
from models.training.training import FEATURES
from tests.test_models_sklearn import TIGHT

SEED = 8


@pytest.fixture(scope="module")
def train_set() -> LabelledReports:
    return simulate(3, seed=SEED, split="train", seconds=1)


@pytest.fixture(scope="module")
def held_out() -> LabelledReports:
    return simulate(1, seed=SEED, split="test", seconds=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels() -> None:
    rng = np.random.default_rng(SEED)
    logits = rng.normal(0.0, 3.0, (20000, 5))
    for t_true in (0.5, 2.5):
        p_true = _softmax(logits / t_true)
        y = np.array([rng.choice(5, p=row) for row in p_true])
        t = fit_temperature(_softmax(logits), y)  # the model's (T = 1) probabilities
        assert t == pytest.approx(t_true, rel=0.05), f"seed={SEED}"
        calibrated = apply_temperature(_softmax(logits), t)
        assert expected_calibration_error(calibrated, y) < 0.02
        assert expected_calibration_error(_softmax(logits), y) > 0.05


def test_ece_of_hand_made_cases() -> None:
    # four reports at confidence 0.9, three right: |0.75 - 0.9| = 0.15
    p = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error(p, np.array([0, 0, 0, 1])) == pytest.approx(0.15)
    # two bins, each exactly calibrated
    p = np.array([[0.6, 0.4]] * 5 + [[1.0, 0.0]] * 2)
    y = np.array([0, 0, 0, 1, 1, 0, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="not among the classes"):
        label_index(["healthy", "dry_running"], CLASSES)


@pytest.mark.parametrize("kind", ["mlp", "softmax"])
def test_exported_temperature_is_applied_identically_by_the_served_kind(
    kind: str, train_set: LabelledReports, held_out: LabelledReports, tmp_path: Path
) -> None:
    x = extract(train_set.reports).matrix(FEATURES)
    clf: MLPClassifier | SoftmaxClassifier
    if kind == "mlp":
        pipe = fit_mlp_pipeline(x, train_set.labels, classes=CLASSES, seed=SEED)
        clf = export_mlp(pipe, feature_names=FEATURES, classes=CLASSES)
    else:
        pipe = fit_softmax_pipeline(x, train_set.labels, classes=CLASSES)
        clf = export_softmax(pipe, feature_names=FEATURES, classes=CLASSES)
    t = 1.7
    bundle_dir = write_bundle(tmp_path / kind, model_version="t",
                              classifier=clf.with_temperature(t))
    assert json.loads((bundle_dir / "bundle.json").read_text())["classifier"]["temperature"] == t
    served = load_bundle(bundle_dir).classifier
    assert isinstance(served, type(clf)) and served.temperature == t
    xt = extract(held_out.reports).matrix(FEATURES)
    # scikit-learn's probabilities, re-tempered: softmax(log p / T) == softmax(logits / T)
    expected = _softmax(np.log(pipe.predict_proba(xt)) / t)
    np.testing.assert_allclose(served.predict_proba(extract(held_out.reports)), expected,
                               rtol=0.0, atol=1e-10)
    np.testing.assert_allclose(apply_temperature(pipe.predict_proba(xt), t), expected, **TIGHT)
    # the top class never changes, only the confidence
    assert (served.predict_proba(extract(held_out.reports)).argmax(axis=1)
            == pipe.predict_proba(xt).argmax(axis=1)).all()


def test_a_bundle_without_temperature_serves_untempered_and_bad_ones_are_refused(
    train_set: LabelledReports, tmp_path: Path
) -> None:
    x = extract(train_set.reports).matrix(FEATURES)
    pipe = fit_mlp_pipeline(x, train_set.labels, classes=CLASSES, seed=SEED)
    clf = export_mlp(pipe, feature_names=FEATURES, classes=CLASSES)
    d = write_bundle(tmp_path / "plain", model_version="t", classifier=clf)
    manifest = json.loads((d / "bundle.json").read_text())
    assert "temperature" not in manifest["classifier"]  # written as before calibration
    served = load_bundle(d).classifier
    assert isinstance(served, MLPClassifier) and served.temperature == 1.0
    np.testing.assert_allclose(served.proba_from_matrix(x), pipe.predict_proba(x), **TIGHT)
    for bad in (0.0, -1.0, "hot", float("inf")):
        manifest["classifier"]["temperature"] = bad
        (d / "bundle.json").write_text(json.dumps(manifest))
        with pytest.raises(BundleError, match="temperature"):
            load_bundle(d)
