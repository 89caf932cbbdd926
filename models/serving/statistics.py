"""A bundle's training-data statistics (Model Monitor ``statistics.json`` / ``constraints.json``).

Training (:mod:`models.training.statistics`) writes the two files into the
bundle directory; :func:`attach_statistics` lists them in ``bundle.json``
(``"statistics": {"statistics": "statistics.json", "constraints":
"constraints.json"}``, and both in ``files`` with their SHA-256, so
:func:`models.serving.bundle.load_bundle` checks them). :func:`load_statistics`
reads them back with json and numpy only, for out-of-distribution gating and
drift monitoring; a bundle without them (older bundles) gives ``None``.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bundle import MANIFEST, read_manifest, sha256_file
from .errors import BundleError

STATISTICS_FILE = "statistics.json"
CONSTRAINTS_FILE = "constraints.json"


@dataclass(frozen=True)
class FeatureStatistics:
    name: str
    num_present: int
    num_missing: int
    mean: float
    std_dev: float
    min: float
    max: float
    quantiles: dict[float, float]


@dataclass(frozen=True)
class TrainingStatistics:
    item_count: int
    features: dict[str, FeatureStatistics]
    class_shares: dict[str, float]
    constraints: dict[str, Any]


def attach_statistics(bundle_dir: Path) -> None:
    """List the two statistics files (already in ``bundle_dir``) in its ``bundle.json``."""
    manifest = read_manifest(bundle_dir)
    files = dict(manifest.get("files") or {})
    for name in (STATISTICS_FILE, CONSTRAINTS_FILE):
        if not (bundle_dir / name).is_file():
            raise BundleError(f"{bundle_dir}: cannot attach statistics, {name} is missing")
        files[name] = sha256_file(bundle_dir / name)
    manifest["files"] = files
    manifest["statistics"] = {"statistics": STATISTICS_FILE, "constraints": CONSTRAINTS_FILE}
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def carry_statistics(source: Path, bundle_dir: Path) -> bool:
    """Copy the statistics of bundle ``source`` (a directory or ``.tar.gz``) into ``bundle_dir``.

    For a bundle composed from another bundle's classifier: the statistics describe
    that classifier's training data, so they go with it. Returns whether there were any.
    """
    if source.is_dir():
        names = {n: (source / n).read_bytes() for n in (STATISTICS_FILE, CONSTRAINTS_FILE)
                 if (source / n).is_file()}
    else:
        try:
            with tarfile.open(source, "r:*") as tar:
                names = {}
                for n in (STATISTICS_FILE, CONSTRAINTS_FILE):
                    member = next((m for m in tar.getmembers()
                                   if m.isfile() and Path(m.name).name == n), None)
                    fh = tar.extractfile(member) if member is not None else None
                    if fh is not None:
                        names[n] = fh.read()
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"cannot read {source}: {exc}") from None
    if len(names) != 2:
        return False
    for n, data in names.items():
        (bundle_dir / n).write_bytes(data)
    attach_statistics(bundle_dir)
    return True


def _feature(f: dict[str, Any]) -> FeatureStatistics:
    s = f["numerical_statistics"]
    nan = float("nan")
    return FeatureStatistics(
        name=str(f["name"]), num_present=int(s["common"]["num_present"]),
        num_missing=int(s["common"]["num_missing"]), mean=float(s.get("mean", nan)),
        std_dev=float(s.get("std_dev", nan)), min=float(s.get("min", nan)),
        max=float(s.get("max", nan)),
        quantiles={float(q["quantile"]): float(q["value"]) for q in s.get("quantiles", [])},
    )


def load_statistics(bundle_dir: Path) -> TrainingStatistics | None:
    """The training statistics a bundle directory lists, or ``None`` when it lists none."""
    spec = read_manifest(bundle_dir).get("statistics")
    if not spec:
        return None
    try:
        stats = json.loads((bundle_dir / str(spec["statistics"])).read_text())
        constraints = json.loads((bundle_dir / str(spec["constraints"])).read_text())
        n = int(stats["dataset"]["item_count"])
        features: dict[str, FeatureStatistics] = {}
        shares: dict[str, float] = {}
        for f in stats["features"]:
            if f["inferred_type"] == "String":
                for b in f["string_statistics"]["distribution"]["categorical"]["buckets"]:
                    shares[str(b["value"])] = float(b["count"]) / n if n else 0.0
            else:
                features[str(f["name"])] = _feature(f)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"cannot read training statistics of {bundle_dir}: {exc!r}") from None
    return TrainingStatistics(n, features, shares, constraints)
