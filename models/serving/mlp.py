"""The ``mlp`` classifier kind: a small neural network over named physics features.

Inference only (numpy): standardise the named features, clip them to
``+-clip`` standard deviations (a report unlike anything seen in training
cannot push a logit without bound: it is treated as "very high" or "very
low", never as "infinitely"), missing -> 0 (the training mean), one tanh
hidden layer, softmax of the logits divided by the calibration
``temperature`` (post-hoc temperature scaling, fitted on a held-out
simulated split by :mod:`models.training.calibration`; it changes how sure
the model says it is, never its top class). The artifact is one ``.npz``
(``feature_names``, ``classes``, ``mean``, ``scale``, ``clip``, ``W1``,
``b1``, ``W2``, ``b2``), no pickle; the temperature is the ``temperature``
key of the bundle's ``classifier`` entry (absent: 1, so bundles written
before calibration serve exactly as before). Fitting lives in
:mod:`models.training.training`. Registered as a bundle kind by
:mod:`models.serving.kinds.mlp`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import BundleError
from .features import BatchFeatures, check_feature_names

F64 = NDArray[np.float64]
FILE = "classifier.npz"


def check_temperature(t: float) -> float:
    """A calibration temperature: finite and > 0 (:class:`BundleError` otherwise)."""
    if not (isinstance(t, int | float) and not isinstance(t, bool) and np.isfinite(t) and t > 0):
        raise BundleError(f"classifier temperature must be a finite number > 0, got {t!r}")
    return float(t)


def spec_temperature(spec: Mapping[str, Any]) -> float:
    """The ``temperature`` of a bundle's ``classifier`` entry (1 when absent)."""
    return check_temperature(spec.get("temperature", 1.0))


def classifier_spec(kind: str, path: str, temperature: float) -> dict[str, Any]:
    """A ``classifier`` entry for ``bundle.json`` (inverse of :func:`spec_temperature`:
    ``temperature`` is written only when calibration changed it, so older readers and
    bundles stay byte-identical)."""
    spec: dict[str, Any] = {"kind": kind, "path": path}
    if temperature != 1.0:
        spec["temperature"] = temperature
    return spec


def softmax(logits: F64, temperature: float = 1.0) -> F64:
    """Row-wise softmax of ``logits / temperature``."""
    z = logits / temperature if temperature != 1.0 else logits.copy()
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


class MLPClassifier:
    kind = "mlp"

    def __init__(
        self,
        *,
        feature_names: tuple[str, ...],
        classes: tuple[str, ...],
        mean: F64,
        scale: F64,
        clip: float,
        W1: F64,
        b1: F64,
        W2: F64,
        b2: F64,
        temperature: float = 1.0,
    ) -> None:
        check_feature_names(feature_names)
        f, c, h = len(feature_names), len(classes), b1.shape[0]
        shapes = {
            "mean": (mean.shape, (f,)), "scale": (scale.shape, (f,)), "W1": (W1.shape, (f, h)),
            "b1": (b1.shape, (h,)), "W2": (W2.shape, (h, c)), "b2": (b2.shape, (c,)),
        }
        bad = {k: v for k, v in shapes.items() if v[0] != v[1]}
        if bad or not clip > 0:
            raise BundleError(f"mlp shapes disagree ({f} features, {c} classes): {bad}, {clip=}")
        self.feature_names = feature_names
        self.classes = classes
        self.mean, self.scale, self.clip = mean, scale, float(clip)
        self.W1, self.b1, self.W2, self.b2 = W1, b1, W2, b2
        self.temperature = check_temperature(temperature)

    def with_temperature(self, temperature: float) -> MLPClassifier:
        """The same network with another calibration temperature."""
        return MLPClassifier(
            feature_names=self.feature_names, classes=self.classes, mean=self.mean,
            scale=self.scale, clip=self.clip, W1=self.W1, b1=self.b1, W2=self.W2, b2=self.b2,
            temperature=temperature,
        )

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.mean, self.scale, self.W1, self.b1, self.W2,
                                          self.b2)))

    def standardize(self, x: F64) -> F64:
        z = (x - self.mean) / self.scale
        return np.clip(np.nan_to_num(z, nan=0.0, posinf=self.clip, neginf=-self.clip),
                       -self.clip, self.clip)

    def logits_from_matrix(self, x: F64) -> F64:
        """Uncalibrated logits (before the temperature)."""
        hidden = np.tanh(self.standardize(x) @ self.W1 + self.b1)
        out: F64 = hidden @ self.W2 + self.b2
        return out

    def proba_from_matrix(self, x: F64) -> F64:
        return softmax(self.logits_from_matrix(x), self.temperature)

    def predict_proba(self, f: BatchFeatures) -> F64:
        return self.proba_from_matrix(f.matrix(self.feature_names))

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        with (bundle_dir / FILE).open("wb") as fh:
            np.savez(
                fh, feature_names=np.array(self.feature_names), classes=np.array(self.classes),
                mean=self.mean, scale=self.scale, clip=np.array(self.clip), W1=self.W1,
                b1=self.b1, W2=self.W2, b2=self.b2,
            )
        return classifier_spec(self.kind, FILE, self.temperature)


def load_mlp(bundle_dir: Path, spec: Mapping[str, Any]) -> MLPClassifier:
    path = bundle_dir / str(spec.get("path", FILE))
    temperature = spec_temperature(spec)
    try:
        with np.load(path, allow_pickle=False) as z:
            return MLPClassifier(
                feature_names=tuple(str(s) for s in z["feature_names"]),
                classes=tuple(str(s) for s in z["classes"]),
                mean=z["mean"].astype(np.float64), scale=z["scale"].astype(np.float64),
                clip=float(z["clip"]), W1=z["W1"].astype(np.float64),
                b1=z["b1"].astype(np.float64), W2=z["W2"].astype(np.float64),
                b2=z["b2"].astype(np.float64), temperature=temperature,
            )
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"cannot load mlp classifier {path}: {exc}") from None
