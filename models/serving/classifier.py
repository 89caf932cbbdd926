"""Condition classifiers a bundle can carry, looked up by ``kind``.

A classifier maps :class:`~models.serving.features.BatchFeatures` to an
``(n, len(classes))`` probability matrix. Kinds:

- ``physics``: :class:`~models.serving.physics.PhysicsClassifier` (rules, no file).
- ``softmax``: multinomial logistic regression stored as ``.npz`` with
  ``feature_names``, ``classes``, ``mean``, ``scale``, ``W`` (features x
  classes) and ``b`` -- the simplest trained artifact, loadable with numpy
  alone (no training code).
- ``mlp``: :class:`~models.serving.mlp.MLPClassifier`, one tanh hidden layer
  over clipped standardised features (what ``pumpwatch train`` writes).

Trained models of later issues add a kind with :func:`register_kind`; the
server never imports training code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .errors import BundleError
from .features import BatchFeatures, check_feature_names
from .mlp import load_mlp
from .physics import PhysicsClassifier, PhysicsParams

F64 = NDArray[np.float64]


class Classifier(Protocol):
    kind: str
    classes: tuple[str, ...]

    @property
    def nbytes(self) -> int: ...

    def predict_proba(self, f: BatchFeatures) -> F64: ...


Loader = Callable[[Path, Mapping[str, Any]], Classifier]
_KINDS: dict[str, Loader] = {}


def register_kind(kind: str, loader: Loader) -> None:
    """Make ``{"kind": kind, ...}`` in a bundle manifest load through ``loader(dir, spec)``."""
    _KINDS[kind] = loader


def kinds() -> list[str]:
    return sorted(_KINDS)


def load_classifier(bundle_dir: Path, spec: Mapping[str, Any]) -> Classifier:
    kind = spec.get("kind")
    loader = _KINDS.get(str(kind))
    if loader is None:
        raise BundleError(f"unknown classifier kind {kind!r} (known: {kinds()})")
    return loader(bundle_dir, spec)


def _load_physics(bundle_dir: Path, spec: Mapping[str, Any]) -> Classifier:
    try:
        params = PhysicsParams(**dict(spec.get("params", {})))
    except TypeError as exc:
        raise BundleError(f"bad physics params: {exc}") from None
    return PhysicsClassifier(params)


class SoftmaxClassifier:
    """Multinomial logistic regression over named features (NaN -> feature mean)."""

    kind = "softmax"

    def __init__(
        self,
        *,
        feature_names: tuple[str, ...],
        classes: tuple[str, ...],
        mean: F64,
        scale: F64,
        W: F64,
        b: F64,
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

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.scale.nbytes + self.W.nbytes + self.b.nbytes)

    def predict_proba(self, f: BatchFeatures) -> F64:
        z = (f.matrix(self.feature_names) - self.mean) / self.scale
        z = np.nan_to_num(z, nan=0.0)
        logits = z @ self.W + self.b
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out: F64 = e / e.sum(axis=1, keepdims=True)
        return out

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            np.savez(
                fh,
                feature_names=np.array(self.feature_names),
                classes=np.array(self.classes),
                mean=self.mean,
                scale=self.scale,
                W=self.W,
                b=self.b,
            )


def _load_softmax(bundle_dir: Path, spec: Mapping[str, Any]) -> Classifier:
    path = bundle_dir / str(spec.get("path", "classifier.npz"))
    try:
        with np.load(path, allow_pickle=False) as z:
            return SoftmaxClassifier(
                feature_names=tuple(str(s) for s in z["feature_names"]),
                classes=tuple(str(s) for s in z["classes"]),
                mean=z["mean"].astype(np.float64),
                scale=z["scale"].astype(np.float64),
                W=z["W"].astype(np.float64),
                b=z["b"].astype(np.float64),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"cannot load softmax classifier {path}: {exc}") from None


register_kind("physics", _load_physics)
register_kind("softmax", _load_softmax)
register_kind("mlp", load_mlp)
