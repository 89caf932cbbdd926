"""Model bundles: a classifier version plus the per-pump baselines of a fleet or site.

On disk a bundle is a directory (or a ``model.tar.gz`` of one, the SageMaker
artifact form) holding ``bundle.json``::

    {"format": "pumpwatch-bundle", "format_version": 1,
     "model_version": "site-a-7",              # reported in every result
     "classifier": {"kind": "physics", "params": {...}}
                 | {"kind": "softmax" | "mlp", "path": "classifier.npz"},
     "baselines": {"path": "baselines.npz"} | null,
     "physics": {...PhysicsParams overrides...},
     "files": {"classifier.npz": "<sha256>", "baselines.npz": "<sha256>"},
     "description": "...", "metrics": {...}}

Every file named in ``files`` is checked against its SHA-256 on load. A
bundle loads with numpy alone; classifier kinds are looked up in
:mod:`models.serving.classifier` (later models register new kinds there).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .baseline import Baselines
from .classifier import Classifier, SoftmaxClassifier, load_classifier
from .errors import BundleError, ChecksumMismatchError
from .mlp import MLPClassifier
from .physics import PhysicsClassifier, PhysicsParams

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
            self.description,
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


def write_bundle(
    out_dir: Path,
    *,
    model_version: str,
    classifier: Classifier | None = None,
    baselines: Baselines | None = None,
    physics: PhysicsParams | None = None,
    description: str = "",
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a bundle directory; returns the directory. Files get their SHA-256 in the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    clf_spec: dict[str, Any]
    if classifier is None or isinstance(classifier, PhysicsClassifier):
        params = classifier.params if isinstance(classifier, PhysicsClassifier) else physics
        clf_spec = {"kind": "physics", "params": (params or PhysicsParams()).to_dict()}
    elif isinstance(classifier, SoftmaxClassifier | MLPClassifier):
        classifier.save(out_dir / "classifier.npz")
        clf_spec = {"kind": classifier.kind, "path": "classifier.npz"}
    else:
        raise BundleError(f"write_bundle cannot serialise classifier kind {classifier.kind!r}")
    if "path" in clf_spec:
        files[clf_spec["path"]] = sha256_file(out_dir / clf_spec["path"])
    base_spec = None
    if baselines is not None:
        baselines.save(out_dir / "baselines.npz")
        base_spec = {"path": "baselines.npz"}
        files["baselines.npz"] = sha256_file(out_dir / "baselines.npz")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_version": model_version,
        "classifier": clf_spec,
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
    baselines = None
    if manifest.get("baselines"):
        baselines = Baselines.load(bundle_dir / str(manifest["baselines"]["path"]))
    return Bundle(
        model_version=version or str(manifest["model_version"]),
        classifier=classifier,
        baselines=baselines,
        physics=physics,
        source=str(path),
        description=str(manifest.get("description", "")),
    )


def bundle_bytes(bundle_dir: Path) -> bytes:
    """The ``model.tar.gz`` bytes of a bundle directory (for uploads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(bundle_dir.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(bundle_dir)))
    return buf.getvalue()
