"""A model that fails on every batch, and the real model server that can load it.

``python -m tests.infra.failing_model [server args]`` registers the
``test-failing`` classifier kind, then runs :func:`models.serving.server.main`
unchanged: the server, its HTTP stack and its registry polling are the real
ones, only the model is broken (as a bundle whose numbers no longer fit the
code would be). :func:`failing_bundle` writes such a bundle.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.serving.bundle import write_bundle
from models.serving.classifier import Classifier, register_kind
from models.serving.features import BatchFeatures

KIND = "test-failing"


class FailingClassifier:
    kind = KIND
    classes: tuple[str, ...] = ("healthy", "unknown")

    @property
    def nbytes(self) -> int:
        return 0

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        return {"kind": KIND}

    def predict_proba(self, f: BatchFeatures) -> NDArray[np.float64]:
        raise FloatingPointError("the candidate model blew up")


def register() -> None:
    register_kind(KIND, _load)


def _load(bundle_dir: Path, spec: Mapping[str, Any]) -> Classifier:
    return FailingClassifier()


def failing_bundle(out: Path, *, model_version: str = "failing") -> Path:
    """A bundle directory whose classifier raises on every batch (``register()`` first)."""
    out = write_bundle(out, model_version=model_version)
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["classifier"] = {"kind": KIND}
    manifest["classes"] = [{"name": c} for c in FailingClassifier.classes]
    (out / "bundle.json").write_text(json.dumps(manifest))
    return out


if __name__ == "__main__":
    register()
    from models.serving.server import main

    sys.exit(main())
