"""Model bundles: a classifier version plus the per-pump baselines of a fleet or site.

On disk a bundle is a directory (or a ``model.tar.gz`` of one, the SageMaker
artifact form) holding ``bundle.json``::

    {"format": "pumpwatch-bundle", "format_version": 1,
     "model_version": "site-a-7",              # reported in every result
     "classifier": {"kind": "physics", "params": {...}}
                 | {"kind": "softmax" | "mlp", "path": "classifier.npz",
                    "temperature": 0.9}               # calibration; absent: 1
                 | {"kind": <any registered kind>, ...what its save() wrote...},
     "classes": [{"name": "healthy", "display_name": "Healthy", "description": "...",
                  "severity": "none", "action": "..."}, ...],
     "baselines": {"path": "baselines.npz"} | null,
     "physics": {...PhysicsParams overrides...},
     "files": {"classifier.npz": "<sha256>", "baselines.npz": "<sha256>"},
     "description": "...", "metrics": {...}}

Every file named in ``files`` is checked against its SHA-256 on load. A
bundle loads with numpy alone. The classifier is written by its own
``save()`` and read by its kind's loader (:mod:`models.serving.classifier`,
kinds in :mod:`models.serving.kinds`). Keys this module does not know are
kept, not rejected (training adds its own, e.g. ``statistics``).

``classes`` declares every class the classifier returns, in its output
order; only ``name`` is required, the other keys override the built-in
catalogue (:mod:`models.serving.classes`). A bundle written before classes
were declared has none: it gets its classifier's classes with the
catalogue's texts. On load the bundle's :class:`dsp.results.Manifest` is
built from them (plus ``unknown`` and ``sensor_fault``, which every bundle
can return) and the result fields the classifier emits (its
``result_fields``), and travels through the endpoint contract.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec

from dsp.results import Manifest, Result, manifest_digest

from .baseline import Baselines
from .classes import ALWAYS, manifest_classes
from .classifier import Classifier, EmitsFields, load_classifier
from .errors import BundleError, ChecksumMismatchError
from .physics import PhysicsClassifier, PhysicsParams
from .support import Support

FORMAT = "pumpwatch-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"
BUILTIN_VERSION = "builtin-physics-1"


@dataclass(frozen=True)
class Bundle:
    model_version: str
    classifier: Classifier
    baselines: Baselines | None
    physics: PhysicsParams
    source: str = "builtin"
    description: str = ""
    #: class name -> ClassInfo fields the bundle declares (display_name, ...)
    class_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict, hash=False)
    #: the classifier's training support (out-of-distribution gate); None: no gate
    support: Support | None = field(default=None, hash=False)

    @cached_property
    def manifest(self) -> Manifest:
        """What this bundle declares through the contract (built once, digest included)."""
        clf = self.classifier
        fields = dict(clf.result_fields) if isinstance(clf, EmitsFields) else {}
        m = Manifest(
            model_version=self.model_version,
            classes=manifest_classes(clf.classes, self.class_overrides),
            fields=fields,
        )
        return msgspec.structs.replace(m, digest=manifest_digest(m))

    @property
    def nbytes(self) -> int:
        """Approximate resident size, for the bundle cache's memory budget."""
        base = 4096
        if self.baselines is not None:
            base += self.baselines.nbytes
        return base + int(self.classifier.nbytes)

    def with_version(self, model_version: str) -> Bundle:
        return Bundle(
            model_version, self.classifier, self.baselines, self.physics, self.source,
            self.description, self.class_overrides, self.support,
        )


def builtin_bundle() -> Bundle:
    """Physics only: ISO zone, envelope evidence, fleet-generic anomaly score."""
    return Bundle(
        model_version=BUILTIN_VERSION,
        classifier=PhysicsClassifier(),
        baselines=None,
        physics=PhysicsParams(),
        description="built-in physics-only bundle (no trained classifier, no pump baselines)",
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_CLASS_KEYS = ("display_name", "description", "severity", "action")
_RESULT_FIELDS = frozenset(Result.__struct_fields__)


def check_classes(
    where: str, classifier: Classifier, declared: Mapping[str, Mapping[str, str]] | None
) -> None:
    """A bundle's declared classes must be its classifier's (plus ``unknown``/``sensor_fault``)."""
    if declared is None:
        return
    missing = [c for c in classifier.classes if c not in declared]
    if missing:
        raise BundleError(f"{where}: the {classifier.kind} classifier returns classes "
                          f"{missing} that the bundle's classes do not declare")
    extra = [c for c in declared if c not in classifier.classes and c not in ALWAYS]
    if extra:
        raise BundleError(f"{where}: classes {extra} are declared but the {classifier.kind} "
                          f"classifier never returns them (it returns {list(classifier.classes)})")
    for name, info in declared.items():
        bad = {k: v for k, v in info.items() if k not in _CLASS_KEYS or not isinstance(v, str)}
        if bad:
            raise BundleError(f"{where}: class {name!r}: {bad} are not string overrides of "
                              f"{_CLASS_KEYS}")
    if isinstance(classifier, EmitsFields):
        clash = sorted(set(classifier.result_fields) & _RESULT_FIELDS)
        if clash:
            raise BundleError(f"{where}: the {classifier.kind} classifier's result fields "
                              f"{clash} would overwrite fields every result has")


def _declared_classes(where: str, entry: object) -> dict[str, dict[str, str]] | None:
    """``bundle.json``'s ``classes`` (a list of ``{"name", ...}`` or names) by name."""
    if entry is None:
        return None
    if not isinstance(entry, list):
        raise BundleError(f"{where}: classes must be a list of {{name, display_name, ...}}")
    out: dict[str, dict[str, str]] = {}
    for item in entry:
        obj = {"name": item} if isinstance(item, str) else item
        name = obj.get("name") if isinstance(obj, dict) else None
        if not isinstance(name, str) or not name:
            raise BundleError(f"{where}: every class needs a non-empty name, got {item!r}")
        if name in out:
            raise BundleError(f"{where}: class {name!r} is declared twice")
        out[name] = {k: v for k, v in obj.items() if k != "name"}
    return out


def write_bundle(
    out_dir: Path,
    *,
    model_version: str,
    classifier: Classifier | None = None,
    baselines: Baselines | None = None,
    physics: PhysicsParams | None = None,
    description: str = "",
    metrics: Mapping[str, float] | None = None,
    classes: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write a bundle directory; returns the directory. Files get their SHA-256 in the manifest.

    The classifier writes itself (its ``save()``); without one the bundle is
    physics-only. ``classes`` overrides what the manifest says of a class
    (``display_name``, ``description``, ``severity``, ``action``); every class
    the classifier returns is written, with the catalogue's texts by default.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    clf = classifier if classifier is not None else PhysicsClassifier(physics or PhysicsParams())
    overrides = {str(k): dict(v) for k, v in (classes or {}).items()}
    declared = {c: overrides.get(c, {}) for c in clf.classes}
    declared.update({c: v for c, v in overrides.items() if c in ALWAYS})
    check_classes(str(out_dir), clf, {**overrides, **declared})
    files: dict[str, str] = {}
    clf_spec = clf.save(out_dir)
    if not isinstance(clf_spec, dict) or clf_spec.get("kind") != clf.kind:
        raise BundleError(f"{type(clf).__name__}.save() must return the bundle.json entry "
                          f"{{'kind': {clf.kind!r}, ...}}, got {clf_spec!r}")
    if "path" in clf_spec:
        files[clf_spec["path"]] = sha256_file(out_dir / clf_spec["path"])
    base_spec = None
    if baselines is not None:
        baselines.save(out_dir / "baselines.npz")
        base_spec = {"path": "baselines.npz"}
        files["baselines.npz"] = sha256_file(out_dir / "baselines.npz")
    infos = manifest_classes(clf.classes, declared)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": model_version,
        "classifier": clf_spec,
        "classes": [msgspec.to_builtins(c) for c in infos if c.name in declared],
        "baselines": base_spec,
        "physics": (physics or PhysicsParams()).to_dict(),
        "files": files,
        "description": description,
        "metrics": dict(metrics or {}),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def pack_bundle(bundle_dir: Path, tar_path: Path) -> Path:
    """``model.tar.gz`` of a bundle directory (files at the archive root, as SageMaker expects)."""
    if not (bundle_dir / MANIFEST).is_file():
        raise BundleError(f"{bundle_dir} is not a bundle: no {MANIFEST}")
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w:gz") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(bundle_dir)))
    return tar_path


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    path = bundle_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir} is not a bundle: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: format must be {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: unsupported format_version {manifest.get('format_version')!r} "
            f"(supported: {FORMAT_VERSION})"
        )
    if not isinstance(manifest.get("model_version"), str) or not manifest["model_version"]:
        raise BundleError(f"{path}: model_version must be a non-empty string")
    return manifest


def extract_archive(tar_path: Path, dest: Path) -> Path:
    """Extract a bundle archive into ``dest`` (atomically: a half-extracted dir is never seen)."""
    if (dest / MANIFEST).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            tar.extractall(tmp, filter="data")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / MANIFEST).is_file():  # lost a race to another extractor: fine
                raise
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"cannot extract {tar_path}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_bundle(path: Path, *, cache_dir: Path | None = None, version: str | None = None) -> Bundle:
    """Load a bundle directory or ``.tar.gz`` (extracted under ``cache_dir``, keyed by SHA-256).

    ``version`` overrides the manifest's ``model_version`` (the registry's
    ``group/version`` is authoritative for registered bundles).
    """
    if path.is_file():
        digest = sha256_file(path)
        root = cache_dir or Path(tempfile.gettempdir()) / "pumpwatch-bundles"
        bundle_dir = extract_archive(path, root / digest)
    elif path.is_dir():
        bundle_dir = path
    else:
        raise BundleError(f"no bundle at {path}")
    manifest = read_manifest(bundle_dir)
    files = manifest.get("files") or {}
    for name, expected in files.items():
        fp = bundle_dir / name
        if not fp.is_file():
            raise BundleError(f"{bundle_dir}: manifest names {name} but it is missing")
        actual = sha256_file(fp)
        if actual != expected:
            raise ChecksumMismatchError(str(fp), expected, actual)
    try:
        physics = PhysicsParams(**dict(manifest.get("physics") or {}))
    except TypeError as exc:
        raise BundleError(f"{bundle_dir}: bad physics params: {exc}") from None
    clf_spec = manifest.get("classifier") or {"kind": "physics"}
    classifier = load_classifier(bundle_dir, clf_spec)
    declared = _declared_classes(str(bundle_dir / MANIFEST), manifest.get("classes"))
    check_classes(str(bundle_dir / MANIFEST), classifier, declared)
    baselines = None
    if manifest.get("baselines"):
        baselines = Baselines.load(bundle_dir / str(manifest["baselines"]["path"]))
    from .statistics import load_statistics  # it reads manifests with this module's helpers

    spec = manifest.get("statistics")
    # only the layout attach_statistics writes; other "statistics" keys belong to others
    stats = load_statistics(bundle_dir) if isinstance(spec, dict) and "statistics" in spec \
        else None
    return Bundle(
        model_version=version or str(manifest["model_version"]),
        classifier=classifier,
        baselines=baselines,
        physics=physics,
        source=str(path),
        description=str(manifest.get("description", "")),
        class_overrides=declared or {},
        support=Support.from_statistics(stats) if stats is not None else None,
    )


def bundle_bytes(bundle_dir: Path) -> bytes:
    """The ``model.tar.gz`` bytes of a bundle directory (for uploads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(bundle_dir)))
    return buf.getvalue()
