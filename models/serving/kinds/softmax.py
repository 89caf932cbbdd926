"""The ``softmax`` kind: multinomial logistic regression in ``classifier.npz``.

The artifact holds ``feature_names``, ``classes``, ``mean``, ``scale``, ``W``
(features x classes) and ``b`` -- the simplest trained artifact, loadable with
numpy alone. Missing features count as the training mean. The probabilities
are the softmax of the logits over the calibration ``temperature`` (the
``temperature`` key of the bundle's ``classifier`` entry; absent: 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import BundleError
from ..features import BatchFeatures, check_feature_names
from ..mlp import check_temperature, classifier_spec, softmax, spec_temperature

F64 = NDArray[np.float64]
KIND = "softmax"
FILE = "classifier.npz"


class SoftmaxClassifier:
    """Multinomial logistic regression over named features (NaN -> feature mean)."""

    kind = KIND

    def __init__(
        self,
        *,
        feature_names: tuple[str, ...],
        classes: tuple[str, ...],
        mean: F64,
        scale: F64,
        W: F64,
        b: F64,
        temperature: float = 1.0,
    ) -> None:
        check_feature_names(feature_names)
        f, c = len(feature_names), len(classes)
        if mean.shape != (f,) or scale.shape != (f,) or W.shape != (f, c) or b.shape != (c,):
            raise BundleError(
                f"softmax shapes disagree: {f} features, {c} classes, mean {mean.shape}, "
                f"scale {scale.shape}, W {W.shape}, b {b.shape}"
            )
        self.feature_names = feature_names
        self.classes = classes
        self.mean, self.scale, self.W, self.b = mean, scale, W, b
        self.temperature = check_temperature(temperature)

    def with_temperature(self, temperature: float) -> SoftmaxClassifier:
        """The same model with another calibration temperature."""
        return SoftmaxClassifier(feature_names=self.feature_names, classes=self.classes,
                                 mean=self.mean, scale=self.scale, W=self.W, b=self.b,
                                 temperature=temperature)

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.scale.nbytes + self.W.nbytes + self.b.nbytes)

    def predict_proba(self, f: BatchFeatures) -> F64:
        z = (f.matrix(self.feature_names) - self.mean) / self.scale
        z = np.nan_to_num(z, nan=0.0)
        return softmax(z @ self.W + self.b, self.temperature)

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        with (bundle_dir / FILE).open("wb") as fh:
            np.savez(
                fh,
                feature_names=np.array(self.feature_names),
                classes=np.array(self.classes),
                mean=self.mean,
                scale=self.scale,
                W=self.W,
                b=self.b,
            )
        return classifier_spec(KIND, FILE, self.temperature)


def load(bundle_dir: Path, spec: Mapping[str, Any]) -> SoftmaxClassifier:
    path = bundle_dir / str(spec.get("path", FILE))
    temperature = spec_temperature(spec)
    try:
        with np.load(path, allow_pickle=False) as z:
            return SoftmaxClassifier(
                feature_names=tuple(str(s) for s in z["feature_names"]),
                classes=tuple(str(s) for s in z["classes"]),
                mean=z["mean"].astype(np.float64),
                scale=z["scale"].astype(np.float64),
                W=z["W"].astype(np.float64),
                b=z["b"].astype(np.float64),
                temperature=temperature,
            )
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"cannot load softmax classifier {path}: {exc}") from None
