"""The ``physics`` kind: :class:`models.serving.physics.PhysicsClassifier` (rules, no file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..physics import PhysicsClassifier, PhysicsParams

KIND = "physics"


def load(bundle_dir: Path, spec: Mapping[str, Any]) -> PhysicsClassifier:
    try:
        params = PhysicsParams(**dict(spec.get("params", {})))
    except TypeError as exc:
        raise BundleError(f"{bundle_dir}: bad physics params: {exc}") from None
    return PhysicsClassifier(params)
