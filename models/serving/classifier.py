"""The classifier protocol and the registry of classifier kinds a bundle can name.

A classifier maps :class:`~models.serving.features.BatchFeatures` to an
``(n, len(classes))`` probability matrix and writes itself into a bundle
directory (:meth:`Classifier.save` returns the ``classifier`` entry of
``bundle.json``). A bundle names its classifier's ``kind``; loading looks
the kind up here and calls its loader with the bundle directory and that
entry.

Kinds are modules of the :mod:`models.serving.kinds` package, found by
listing the package (``pkgutil``): each module defines ``KIND`` (the name
bundles use) and ``load(bundle_dir, spec)``. Adding a kind is adding a
module there, with no edit to this file, :mod:`~models.serving.bundle` or
the handler. :func:`register_kind` registers a loader from anywhere else
(a plugin, a test). The server never imports training code.

A classifier may also emit per-report outputs beyond the class
probabilities (:class:`EmitsFields`): the bundle's manifest declares them
and the handler puts them into each result as top-level fields.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from .errors import BundleError
from .features import BatchFeatures
from .kinds.softmax import SoftmaxClassifier

F64 = NDArray[np.float64]


class Classifier(Protocol):
    kind: str
    classes: tuple[str, ...]

    @property
    def nbytes(self) -> int: ...

    def predict_proba(self, f: BatchFeatures) -> F64: ...

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        """Write the classifier's files into ``bundle_dir``; return its ``bundle.json`` entry.

        The entry holds ``kind`` and whatever the kind's loader needs; a file the
        kind wrote is named by ``path`` (relative), and the bundle checksums it.
        """
        ...


@runtime_checkable
class EmitsFields(Protocol):
    """A classifier with per-report outputs beyond the class probabilities."""

    @property
    def result_fields(self) -> Mapping[str, str]:
        """Extra result field name -> description (declared in the bundle's manifest)."""
        ...

    def extra_outputs(self, f: BatchFeatures, proba: F64) -> Mapping[str, Sequence[Any]]:
        """For each of :attr:`result_fields`, one JSON-able value per report, in order."""
        ...


Loader = Callable[[Path, Mapping[str, Any]], Classifier]
_KINDS: dict[str, Loader] = {}
_discovered: list[str] = []


def register_kind(kind: str, loader: Loader) -> None:
    """Make ``{"kind": kind, ...}`` in a bundle manifest load through ``loader(dir, spec)``."""
    _KINDS[kind] = loader


def _discover() -> dict[str, Loader]:
    """The kinds of :mod:`models.serving.kinds` (imported once), plus registered ones."""
    if not _discovered:
        from . import kinds as package

        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            kind, load = getattr(module, "KIND", None), getattr(module, "load", None)
            if not isinstance(kind, str) or not callable(load):
                raise TypeError(
                    f"{module.__name__} is not a classifier kind: it must define KIND (str) "
                    "and load(bundle_dir, spec)"
                )
            _KINDS.setdefault(kind, load)  # an explicit register_kind() wins
            _discovered.append(module.__name__)
    return _KINDS


def kinds() -> list[str]:
    return sorted(_discover())


def load_classifier(bundle_dir: Path, spec: Mapping[str, Any]) -> Classifier:
    kind = spec.get("kind")
    loader = _discover().get(str(kind))
    if loader is None:
        raise BundleError(f"unknown classifier kind {kind!r} (known: {kinds()})")
    clf = loader(bundle_dir, spec)
    if not clf.classes or len(set(clf.classes)) != len(clf.classes):
        raise BundleError(f"classifier kind {kind!r}: classes must be distinct and non-empty, "
                          f"got {list(clf.classes)}")
    return clf


__all__ = [
    "Classifier",
    "EmitsFields",
    "Loader",
    "SoftmaxClassifier",
    "kinds",
    "load_classifier",
    "register_kind",
]
