"""Training through scikit-learn: the exported numpy artifacts give the estimator's answers."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf
from sklearn.pipeline import Pipeline

from models.serving.bundle import load_bundle, write_bundle
from models.serving.classifier import SoftmaxClassifier
from models.serving.features import extract
from models.serving.mlp import MLPClassifier
from models.training.anomaly import shrunk_whitener
from models.training.estimators import (
    export_mlp,
    export_softmax,
    fit_mlp_pipeline,
    fit_softmax_pipeline,
)
from models.training.train_sim import CLASSES, LabelledReports, simulate
from models.training.training import FEATURES

SEED = 5


class _Tolerance(TypedDict):
    rtol: float
    atol: float


TIGHT: _Tolerance = {"rtol": 0.0, "atol": 1e-12}


@pytest.fixture(scope="module")
def train_set() -> LabelledReports:
    return simulate(3, seed=SEED, split="train", seconds=1)


@pytest.fixture(scope="module")
def held_out() -> LabelledReports:
    return simulate(1, seed=SEED, split="test", seconds=1)


@pytest.fixture(scope="module")
def inputs(held_out: LabelledReports) -> np.ndarray:
    """Held-out rows plus rows a served model must survive: all missing, far out of range."""
    x = extract(held_out.reports).matrix(FEATURES)
    odd = np.full((3, len(FEATURES)), np.nan)
    odd[1], odd[2] = 50.0, -50.0
    x[0, 3] = np.nan  # one missing feature in an ordinary report
    return np.vstack([x, odd])


def _served(clf: MLPClassifier | SoftmaxClassifier, tmp: Path) -> MLPClassifier | SoftmaxClassifier:
    """The artifact as the server loads it from a bundle on disk."""
    bundle = load_bundle(write_bundle(tmp, model_version="t", classifier=clf))
    assert isinstance(bundle.classifier, type(clf))
    return bundle.classifier


@pytest.mark.parametrize("kind", ["mlp", "softmax"])
def test_exported_artifact_gives_the_estimators_probabilities(
    kind: str, train_set: LabelledReports, held_out: LabelledReports, inputs: np.ndarray,
    tmp_path: Path,
) -> None:
    x = extract(train_set.reports).matrix(FEATURES)
    pipe: Pipeline
    clf: MLPClassifier | SoftmaxClassifier
    if kind == "mlp":
        pipe = fit_mlp_pipeline(x, train_set.labels, classes=CLASSES, seed=SEED)
        clf = export_mlp(pipe, feature_names=FEATURES, classes=CLASSES)
    else:
        pipe = fit_softmax_pipeline(x, train_set.labels, classes=CLASSES)
        clf = export_softmax(pipe, feature_names=FEATURES, classes=CLASSES)
    assert clf.classes == CLASSES
    served = _served(clf, tmp_path / kind)
    # the served path proper: named features gathered from reports the model never saw
    te = held_out.reports
    expected = pipe.predict_proba(extract(te).matrix(FEATURES))
    assert expected.shape == (len(te), len(CLASSES))
    np.testing.assert_allclose(served.predict_proba(extract(te)), expected, **TIGHT)
    if isinstance(served, MLPClassifier):  # and rows with missing / far out-of-range features
        np.testing.assert_allclose(served.proba_from_matrix(inputs),
                                   pipe.predict_proba(inputs), **TIGHT)


@pytest.mark.parametrize("kind", ["mlp", "softmax"])
def test_two_classes_export_as_a_two_logit_softmax(
    kind: str, train_set: LabelledReports, held_out: LabelledReports, tmp_path: Path
) -> None:
    keep = [i for i, c in enumerate(train_set.labels) if c in ("healthy", "bearing_outer")]
    x = extract([train_set.reports[i] for i in keep]).matrix(FEATURES)
    labels = [train_set.labels[i] for i in keep]
    classes = ("healthy", "bearing_outer")
    if kind == "mlp":
        pipe = fit_mlp_pipeline(x, labels, classes=classes, hidden=4, seed=SEED)
        clf: MLPClassifier | SoftmaxClassifier = export_mlp(
            pipe, feature_names=FEATURES, classes=classes)
    else:
        pipe = fit_softmax_pipeline(x, labels, classes=classes)
        clf = export_softmax(pipe, feature_names=FEATURES, classes=classes)
    assert clf.classes == classes
    te = held_out.reports
    np.testing.assert_allclose(_served(clf, tmp_path / kind).predict_proba(extract(te)),
                               pipe.predict_proba(extract(te).matrix(FEATURES)), **TIGHT)


def test_standardisation_is_the_training_mean_and_population_std(
    train_set: LabelledReports,
) -> None:
    x = extract(train_set.reports).matrix(FEATURES)
    clf = export_mlp(fit_mlp_pipeline(x, train_set.labels, classes=CLASSES, seed=SEED),
                     feature_names=FEATURES, classes=CLASSES)
    np.testing.assert_allclose(clf.mean, np.nanmean(x, axis=0), rtol=1e-12)
    np.testing.assert_allclose(clf.scale, np.nanstd(x, axis=0), rtol=1e-12)
    assert clf.clip == 4.0


def test_labels_outside_the_classes_are_an_error(train_set: LabelledReports) -> None:
    x = extract(train_set.reports).matrix(FEATURES)
    with pytest.raises(ValueError, match="not in classes"):
        fit_softmax_pipeline(x, train_set.labels, classes=CLASSES[:4])


def test_ledoit_wolf_whitener_is_sklearns_shrunk_correlation() -> None:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5)) + 3.0
    x = np.hstack([x, np.full((40, 1), 2.0)])  # a feature without spread: no correlation
    x[7, 1] = np.nan  # a report missing a feature is left out of the correlation
    mean = np.nanmean(x, axis=0)
    scale = np.fmax(np.nanstd(x, axis=0), 0.5)
    w, lam = shrunk_whitener(x, mean, scale)

    z = ((x - mean) / scale)[np.all(np.isfinite(x), axis=1), :5]
    y = (z - z.mean(axis=0)) / z.std(axis=0)
    lw = LedoitWolf(assume_centered=True).fit(y)
    assert lam == pytest.approx(lw.shrinkage_, abs=1e-12)
    assert 0.0 < lam < 1.0
    # w = L^-1 with L L^T = the shrunk correlation
    np.testing.assert_allclose(np.linalg.inv(w[:5, :5].T @ w[:5, :5]), lw.covariance_,
                               atol=1e-10)
    np.testing.assert_allclose(np.diag(lw.covariance_), 1.0, atol=1e-12)  # target = identity
    np.testing.assert_array_equal(w[5], np.eye(6)[5])
    np.testing.assert_array_equal(w[:, 5], np.eye(6)[:, 5])
