"""The ``mlp`` kind: :class:`models.serving.mlp.MLPClassifier` in ``classifier.npz``."""

from __future__ import annotations

from ..mlp import load_mlp as load

KIND = "mlp"

__all__ = ["KIND", "load"]
