"""The ``centroid`` kind: Gaussian nearest-centroid over named features, numpy only.

Each class is a centroid with a per-feature spread in standardised feature
space (diagonal Gaussian, naive-Bayes style): a report's log-likelihood for a
class is ``-1/2 sum(((z - centroid) / spread)^2) - sum(log spread) + log prior``
over the features it has (a missing feature is left out, not imputed), and
the probabilities are the softmax of those. Standardised features are clipped
to ``+-clip`` so one wild feature cannot decide alone.

Beyond the probabilities it emits one result field, ``centroid_distance``:
the RMS distance, in spreads, from the report to the centroid of its most
likely class (about 1 for a typical member of the class; large values say
"nearest to this class, but like none of them"). The artifact is
``centroid.npz`` (``feature_names``, ``classes``, ``mean``, ``scale``,
``clip``, ``centroids``, ``spread``, ``log_prior``), no pickle; fitting is
:func:`models.training.centroid.fit_centroid`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from ..errors import BundleError
from ..features import BatchFeatures, check_feature_names

F64 = NDArray[np.float64]
KIND = "centroid"
FILE = "centroid.npz"
DISTANCE = "centroid_distance"
FIELDS: dict[str, str] = {
    DISTANCE: "RMS distance, in class spreads, from the report to the centroid of its most "
              "likely class (about 1: a typical member; much larger: like none of the classes)",
}


class CentroidClassifier:
    kind = KIND

    def __init__(
        self,
        *,
        feature_names: tuple[str, ...],
        classes: tuple[str, ...],
        mean: F64,
        scale: F64,
        centroids: F64,
        spread: F64,
        log_prior: F64,
        clip: float = 6.0,
    ) -> None:
        check_feature_names(feature_names)
        f, c = len(feature_names), len(classes)
        shapes = {
            "mean": (mean.shape, (f,)), "scale": (scale.shape, (f,)),
            "centroids": (centroids.shape, (c, f)), "spread": (spread.shape, (c, f)),
            "log_prior": (log_prior.shape, (c,)),
        }
        bad = {k: v for k, v in shapes.items() if v[0] != v[1]}
        finite = all(np.isfinite(a).all() for a in (mean, scale, centroids, spread, log_prior))
        if bad or not finite or not (scale > 0).all() or not (spread > 0).all() or not clip > 0:
            raise BundleError(
                f"centroid parameters are inconsistent ({f} features, {c} classes): shapes "
                f"{bad}, finite={finite}, scale and spread must be > 0, clip={clip}"
            )
        self.feature_names = feature_names
        self.classes = classes
        self.mean, self.scale, self.clip = mean, scale, float(clip)
        self.centroids, self.spread, self.log_prior = centroids, spread, log_prior

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.mean, self.scale, self.centroids, self.spread,
                                          self.log_prior)))

    @property
    def result_fields(self) -> Mapping[str, str]:
        return FIELDS

    def _terms(self, f: BatchFeatures) -> tuple[F64, F64, F64]:
        """Per report and class: squared distance and log-spread summed over the features
        the report has, and how many it has (memoised per batch)."""
        key = (KIND, id(self))
        hit = f.memo.get(key)
        if hit is None:
            x = f.matrix(self.feature_names)
            present = np.isfinite(x)
            z = np.clip(np.where(present, (x - self.mean) / self.scale, 0.0),
                        -self.clip, self.clip)
            d = (z[:, None, :] - self.centroids[None, :, :]) / self.spread[None, :, :]
            keep = present[:, None, :]
            hit = f.memo[key] = (
                np.where(keep, d * d, 0.0).sum(axis=2),
                np.where(keep, np.log(self.spread)[None, :, :], 0.0).sum(axis=2),
                present.sum(axis=1).astype(np.float64),
            )
        return cast(tuple[F64, F64, F64], hit)

    def predict_proba(self, f: BatchFeatures) -> F64:
        d2, log_spread, _ = self._terms(f)
        logits = -0.5 * d2 - log_spread + self.log_prior
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out: F64 = e / e.sum(axis=1, keepdims=True)
        return out

    def extra_outputs(self, f: BatchFeatures, proba: F64) -> Mapping[str, Sequence[Any]]:
        d2, _, count = self._terms(f)
        top = proba.argmax(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = np.sqrt(d2[np.arange(f.n), top] / count)
        return {DISTANCE: [round(v, 3) if v == v else None for v in dist.tolist()]}

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        with (bundle_dir / FILE).open("wb") as fh:
            np.savez(
                fh, feature_names=np.array(self.feature_names), classes=np.array(self.classes),
                mean=self.mean, scale=self.scale, clip=np.array(self.clip),
                centroids=self.centroids, spread=self.spread, log_prior=self.log_prior,
            )
        return {"kind": KIND, "path": FILE}


def load(bundle_dir: Path, spec: Mapping[str, Any]) -> CentroidClassifier:
    path = bundle_dir / str(spec.get("path", FILE))
    try:
        with np.load(path, allow_pickle=False) as z:
            return CentroidClassifier(
                feature_names=tuple(str(s) for s in z["feature_names"]),
                classes=tuple(str(s) for s in z["classes"]),
                mean=z["mean"].astype(np.float64), scale=z["scale"].astype(np.float64),
                centroids=z["centroids"].astype(np.float64),
                spread=z["spread"].astype(np.float64),
                log_prior=z["log_prior"].astype(np.float64), clip=float(z["clip"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"cannot load centroid classifier {path}: {exc}") from None
