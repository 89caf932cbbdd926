"""Model metrics through scikit-learn: macro-F1, confusion matrix, AUROC.

Thin wrappers that fix the conventions the figures rely on: a prediction
outside ``classes`` (e.g. ``"unknown"``) is a miss for its true class, a
class with no reports and no predictions scores F1 = 1, and a NaN anomaly
score ranks below every real one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

F64 = NDArray[np.float64]


def confusion(
    truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]
) -> NDArray[np.int64]:
    """Counts ``[true class, predicted class]``; predictions outside ``classes`` are dropped."""
    if len(truth) != len(pred):
        raise ValueError(f"{len(truth)} labels but {len(pred)} predictions")
    if not truth:
        return np.zeros((len(classes), len(classes)), dtype=np.int64)
    m = confusion_matrix(list(truth), list(pred), labels=list(classes))
    return np.asarray(m, dtype=np.int64)


def per_class_f1(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> F64:
    """F1 per class; a prediction outside ``classes`` (e.g. "unknown") counts as a miss."""
    if not truth:
        return np.ones(len(classes))
    f1 = f1_score(list(truth), list(pred), labels=list(classes), average=None,
                  zero_division=1.0)
    return np.asarray(f1, dtype=np.float64)


def macro_f1(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> float:
    return float(per_class_f1(truth, pred, classes).mean())


def auroc(negatives: Sequence[float] | F64, positives: Sequence[float] | F64) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    NaN scores rank lowest (a missing score never helps): they are replaced
    by a value below every real score before ``roc_auc_score``.
    """
    neg = np.asarray(negatives, dtype=np.float64).ravel()
    pos = np.asarray(positives, dtype=np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        raise ValueError(
            f"AUROC needs both classes, got {neg.size} negatives, {pos.size} positives"
        )
    scores = np.concatenate([neg, pos])
    real = scores[np.isfinite(scores)]
    low = float(real.min()) - 1.0 if real.size else 0.0
    scores = np.where(np.isnan(scores), low, scores)
    scores = np.clip(scores, low, float(real.max()) + 1.0 if real.size else 1.0)  # +-inf
    y = np.concatenate([np.zeros(neg.size), np.ones(pos.size)])
    return float(roc_auc_score(y, scores))
