"""Model metrics in numpy: macro-F1, confusion matrix, AUROC (no scikit-learn needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def confusion(
    truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]
) -> NDArray[np.int64]:
    """Counts ``[true class, predicted class]``; predictions outside ``classes`` are dropped."""
    idx = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(truth, pred, strict=True):
        if t in idx and p in idx:
            m[idx[t], idx[p]] += 1
    return m


def per_class_f1(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> F64:
    """F1 per class; a prediction outside ``classes`` (e.g. "unknown") counts as a miss."""
    t = np.asarray(truth)
    p = np.asarray(pred)
    out = np.zeros(len(classes))
    for i, c in enumerate(classes):
        tp = float(np.sum((t == c) & (p == c)))
        fp = float(np.sum((t != c) & (p == c)))
        fn = float(np.sum((t == c) & (p != c)))
        out[i] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return out


def macro_f1(truth: Sequence[str], pred: Sequence[str], classes: Sequence[str]) -> float:
    return float(per_class_f1(truth, pred, classes).mean())


def auroc(negatives: Sequence[float] | F64, positives: Sequence[float] | F64) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count 1/2.

    Mann-Whitney U over average ranks; NaN scores rank lowest (a missing
    score never helps).
    """
    neg = np.nan_to_num(np.asarray(negatives, dtype=np.float64), nan=-np.inf)
    pos = np.nan_to_num(np.asarray(positives, dtype=np.float64), nan=-np.inf)
    if neg.size == 0 or pos.size == 0:
        raise ValueError(
            f"AUROC needs both classes, got {neg.size} negatives, {pos.size} positives"
        )
    allv = np.concatenate([neg, pos])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    i = 0
    while i < allv.size:  # average ranks over ties
        j = i
        while j + 1 < allv.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = ranks[neg.size :].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (neg.size * pos.size))
