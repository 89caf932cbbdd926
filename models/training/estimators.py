"""scikit-learn pipelines for the trained classifier kinds, exported to the numpy artifacts.

Theory of operation. Each trained kind is a scikit-learn :class:`Pipeline`
of three steps, the same three the served numpy classifier computes:

1. ``StandardScaler``: mean and population standard deviation per feature
   over the reports that have it (a missing feature, NaN, is ignored in
   the fit); a feature with no spread gets scale 1.
2. ``FunctionTransformer(fill_and_clip)``: missing -> 0 (the training mean,
   "no information"), then clip to ``+-clip`` standard deviations (``mlp``
   only; ``softmax`` does not clip).
3. The estimator: ``MLPClassifier`` (one tanh hidden layer, softmax output,
   L-BFGS) or multinomial ``LogisticRegression`` (L-BFGS, L2).

Both are class-balanced (every class weighs the same in the loss) and
L2-penalised with ``l2`` on the weights (not the intercepts), so the
objective is the class-balanced mean cross-entropy + ``l2/2 * |W|^2``:
``MLPClassifier``'s ``alpha`` is divided by the (weighted) sample count
inside scikit-learn, hence ``alpha = l2 * n``; ``LogisticRegression``'s
``C`` multiplies the summed loss, hence ``C = 1 / (l2 * n)``.

:func:`export_mlp` / :func:`export_softmax` copy the fitted scaler and
weights into :class:`models.serving.mlp.MLPClassifier` /
:class:`models.serving.classifier.SoftmaxClassifier`, which serve with numpy
alone and give the pipeline's ``predict_proba`` (the test checks it). A
two-class estimator has one logistic output in scikit-learn; it is exported
as a two-logit softmax with a zero first logit (the same probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from models.serving.classifier import SoftmaxClassifier
from models.serving.mlp import MLPClassifier

F64 = NDArray[np.float64]


def fill_and_clip(z: F64, clip: float | None = None) -> F64:
    """Missing (NaN) standardised features -> 0; then ``+-clip`` when ``clip`` is given."""
    out = np.nan_to_num(np.asarray(z, dtype=np.float64), nan=0.0)
    return out if clip is None else np.clip(out, -clip, clip)


def _targets(labels: Sequence[str], classes: tuple[str, ...]) -> NDArray[np.int64]:
    idx = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(idx))
    if unknown:
        raise ValueError(f"labels {unknown} are not in classes {classes}")
    y = np.array([idx[c] for c in labels], dtype=np.int64)
    if np.unique(y).size < 2:
        raise ValueError(f"training needs at least two classes, got {sorted(set(labels))}")
    return y


def _balanced(y: NDArray[np.int64]) -> F64:
    """Per-sample weights ``n / (k * count[class])`` over the k classes present (sum n)."""
    present, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    w: F64 = (y.size / (present.size * counts.astype(np.float64)))[inv]
    return w


def _pipeline(estimator: SkMLP | LogisticRegression, clip: float | None) -> Pipeline:
    return Pipeline([
        ("scale", StandardScaler()),
        ("fill", FunctionTransformer(fill_and_clip, kw_args={"clip": clip})),
        ("model", estimator),
    ])


def fit_mlp_pipeline(
    x: F64,
    labels: Sequence[str],
    *,
    classes: tuple[str, ...],
    hidden: int = 16,
    l2: float = 1e-3,
    clip: float = 4.0,
    seed: int = 0,
    max_iter: int = 3000,
) -> Pipeline:
    """Fit scaler + fill-and-clip + one-tanh-layer ``MLPClassifier`` (L-BFGS)."""
    y = _targets(labels, classes)
    est = SkMLP(
        hidden_layer_sizes=(hidden,), activation="tanh", solver="lbfgs", alpha=l2 * y.size,
        max_iter=max_iter, max_fun=max(15000, 5 * max_iter), tol=1e-5, random_state=seed,
    )
    pipe = _pipeline(est, clip)
    pipe.fit(x, y, model__sample_weight=_balanced(y))
    return pipe


def fit_softmax_pipeline(
    x: F64,
    labels: Sequence[str],
    *,
    classes: tuple[str, ...],
    l2: float = 1e-3,
    max_iter: int = 2000,
) -> Pipeline:
    """Fit scaler + fill + multinomial ``LogisticRegression`` (L-BFGS, L2)."""
    y = _targets(labels, classes)
    est = LogisticRegression(C=1.0 / (l2 * y.size), class_weight="balanced", max_iter=max_iter,
                             tol=1e-6)
    pipe = _pipeline(est, None)
    pipe.fit(x, y)
    return pipe


def _scaler(pipe: Pipeline) -> tuple[F64, F64]:
    scaler: StandardScaler = pipe.named_steps["scale"]
    return np.asarray(scaler.mean_, dtype=np.float64).copy(), np.asarray(
        scaler.scale_, dtype=np.float64).copy()


def _classes(est: SkMLP | LogisticRegression, classes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(classes[int(i)] for i in est.classes_)


def _two_logits(w: F64, b: F64) -> tuple[F64, F64]:
    """One logistic output ``(h, 1)`` -> two softmax logits ``[0, a]`` (same probabilities)."""
    return np.hstack([np.zeros_like(w), w]), np.concatenate([np.zeros_like(b), b])


def export_mlp(
    pipe: Pipeline, *, feature_names: tuple[str, ...], classes: tuple[str, ...]
) -> MLPClassifier:
    """The served numpy ``mlp`` artifact of a :func:`fit_mlp_pipeline` pipeline."""
    est: SkMLP = pipe.named_steps["model"]
    if len(est.coefs_) != 2 or est.activation != "tanh":
        raise ValueError(f"export_mlp needs one tanh hidden layer, got {est.hidden_layer_sizes} "
                         f"{est.activation}")
    clip = pipe.named_steps["fill"].kw_args["clip"]
    mean, scale = _scaler(pipe)
    W1, W2 = (np.asarray(c, dtype=np.float64).copy() for c in est.coefs_)
    b1, b2 = (np.asarray(c, dtype=np.float64).copy() for c in est.intercepts_)
    if W2.shape[1] == 1:
        W2, b2 = _two_logits(W2, b2)
    return MLPClassifier(
        feature_names=feature_names, classes=_classes(est, classes), mean=mean, scale=scale,
        clip=float(clip), W1=W1, b1=b1, W2=W2, b2=b2,
    )


def export_softmax(
    pipe: Pipeline, *, feature_names: tuple[str, ...], classes: tuple[str, ...]
) -> SoftmaxClassifier:
    """The served numpy ``softmax`` artifact of a :func:`fit_softmax_pipeline` pipeline."""
    est: LogisticRegression = pipe.named_steps["model"]
    mean, scale = _scaler(pipe)
    W = np.asarray(est.coef_, dtype=np.float64).T.copy()
    b = np.asarray(est.intercept_, dtype=np.float64).copy()
    if W.shape[1] == 1:
        W, b = _two_logits(W, b)
    return SoftmaxClassifier(
        feature_names=feature_names, classes=_classes(est, classes), mean=mean, scale=scale,
        W=W, b=b,
    )
