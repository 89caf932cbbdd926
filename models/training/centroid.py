"""Fit the ``centroid`` kind (:mod:`models.serving.kinds.centroid`) on labelled reports.

The quickest way to a bundle with a class of one's own: label some reports
(e.g. simulated ones) with any class names, fit, write::

    clf = fit_centroid(reports, labels)                  # labels: "healthy", "dry_running", ...
    write_bundle(out, model_version="dry-1", classifier=clf,
                 classes={"dry_running": {"display_name": "Dry running",
                                          "severity": "critical", "action": "Stop the pump."}})

or :func:`centroid_bundle` in one call. Standardisation is over all reports
(mean and standard deviation per feature, NaN ignored); each class's
centroid is the mean of its members' standardised features and its spread
their standard deviation, floored at ``min_spread`` (a class of identical
reports must not make the distance infinite); priors are class shares.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

import dsp
from models.serving.baseline import DEFAULT_FEATURES
from models.serving.bundle import write_bundle
from models.serving.features import extract
from models.serving.kinds.centroid import CentroidClassifier


def fit_centroid(
    reports: Sequence[dsp.Report],
    labels: Sequence[str],
    *,
    feature_names: tuple[str, ...] = DEFAULT_FEATURES,
    classes: Sequence[str] | None = None,
    min_spread: float = 0.1,
    clip: float = 6.0,
) -> CentroidClassifier:
    """A nearest-centroid classifier over ``feature_names``; ``classes`` default: sorted labels."""
    if len(reports) != len(labels) or not reports:
        raise ValueError(f"need one label per report, got {len(reports)} reports and "
                         f"{len(labels)} labels")
    order = tuple(classes) if classes is not None else tuple(sorted(set(labels)))
    unknown = sorted(set(labels) - set(order))
    if unknown:
        raise ValueError(f"labels {unknown} are not among classes {list(order)}")
    x = extract(reports).matrix(feature_names)
    with _quiet():
        mean = np.nan_to_num(np.nanmean(x, axis=0), nan=0.0)
        scale = np.nanstd(x, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-9), scale, 1.0)
    z = np.clip((x - mean) / scale, -clip, clip)
    y = np.asarray(labels)
    centroids = np.zeros((len(order), len(feature_names)))
    spread = np.ones((len(order), len(feature_names)))
    counts = np.zeros(len(order))
    for k, c in enumerate(order):
        rows = z[y == c]
        counts[k] = len(rows)
        if not len(rows):
            raise ValueError(f"class {c!r} has no reports")
        with _quiet():
            centroids[k] = np.nan_to_num(np.nanmean(rows, axis=0), nan=0.0)
            sd = np.nan_to_num(np.nanstd(rows, axis=0), nan=1.0)
        spread[k] = np.fmax(sd, min_spread)
    return CentroidClassifier(
        feature_names=feature_names, classes=order, mean=mean, scale=scale,
        centroids=centroids, spread=spread, log_prior=np.log(counts / counts.sum()), clip=clip,
    )


def centroid_bundle(
    out_dir: Path,
    reports: Sequence[dsp.Report],
    labels: Sequence[str],
    *,
    model_version: str,
    classes: Mapping[str, Mapping[str, str]] | None = None,
    description: str = "",
) -> Path:
    """Fit :func:`fit_centroid` and write it as a bundle directory (``classes``: overrides)."""
    clf = fit_centroid(reports, labels)
    return write_bundle(
        out_dir, model_version=model_version, classifier=clf, classes=classes,
        description=description or f"centroid classifier over {len(reports)} labelled reports "
                                   f"({', '.join(clf.classes)})",
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """numpy's all-NaN-slice warnings are expected here (a feature a class never has)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
