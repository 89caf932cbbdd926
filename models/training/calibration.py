"""Post-hoc calibration of the classifier's probabilities: temperature scaling, and its measure.

Theory of operation. A network fitted to a class-balanced cross-entropy
ranks classes well but says "99 %" more often than it is right on data it
was not fitted on. Temperature scaling (Guo et al., 2017) divides every
logit by one scalar ``T`` fitted on a *held-out* calibration split by
minimising the negative log-likelihood: it changes how sure the model is,
never which class is on top. Because ``log p`` and the logits differ by a
per-row constant, ``softmax(log p / T)`` equals ``softmax(logits / T)``, so
the fit needs only the uncalibrated probabilities of any kind. The served
kinds apply ``T`` in their ``predict_proba`` (``models.serving.mlp``), read
from the bundle's ``classifier`` entry.

:func:`expected_calibration_error` is the usual ECE: top-class confidences
cut into equal-width bins, the mean over reports of ``|accuracy - mean
confidence|`` per bin, weighted by the bin's share of reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

F64 = NDArray[np.float64]

#: Temperatures searched (log-space, bounded): a calibration split can not send T to 0 or inf.
T_RANGE = (0.05, 20.0)
ECE_BINS = 15
_P_FLOOR = 1e-12


def label_index(labels: Sequence[str], classes: Sequence[str]) -> NDArray[np.int64]:
    """Column of each label in ``classes`` (a label outside them is an error)."""
    idx = {c: i for i, c in enumerate(classes)}
    missing = sorted(set(labels) - set(idx))
    if missing:
        raise ValueError(f"labels {missing} are not among the classes {list(classes)}")
    return np.array([idx[c] for c in labels], dtype=np.int64)


def apply_temperature(proba: F64, temperature: float) -> F64:
    """Probabilities ``proba`` (fitted at T = 1) re-tempered: ``softmax(log p / T)``."""
    z = np.log(np.maximum(proba, _P_FLOOR)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


def nll(proba: F64, y: NDArray[np.int64]) -> float:
    """Mean negative log-likelihood of the true classes."""
    return float(-np.mean(np.log(np.maximum(proba[np.arange(y.size), y], _P_FLOOR))))


def fit_temperature(proba: F64, y: NDArray[np.int64]) -> float:
    """The temperature minimising the NLL of ``y`` under ``softmax(log proba / T)``."""
    if proba.ndim != 2 or proba.shape[0] != y.size or y.size == 0:
        raise ValueError(f"need (n, classes) probabilities for n labels, got {proba.shape}, "
                         f"{y.size}")
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = minimize_scalar(lambda u: nll(apply_temperature(proba, float(np.exp(u))), y),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def expected_calibration_error(proba: F64, y: NDArray[np.int64], bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins of the top-class confidence (0 for no reports)."""
    if y.size == 0:
        return 0.0
    conf = proba.max(axis=1)
    right = (proba.argmax(axis=1) == y).astype(np.float64)
    # bin k holds confidences in (k/bins, (k+1)/bins]; a confidence of exactly 0 goes to bin 0
    k = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = k == b
        if m.any():
            total += m.sum() * abs(float(right[m].mean()) - float(conf[m].mean()))
    return total / y.size
