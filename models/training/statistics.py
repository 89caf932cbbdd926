"""Statistics of a classifier's training data, in SageMaker Model Monitor's layout.

Theory of operation. A bundle carries what its classifier was fitted on, so
that serving can later tell a report unlike the training data (out of
distribution) and monitoring can compare live traffic with it (drift). The
layout is Model Monitor's documented baseline pair (Developer Guide,
"Schema for Statistics (statistics.json file)" and "Schema for Constraints
(constraints.json file)"), so a Model Monitor job can use the files as its
baseline unchanged:

- ``statistics.json``: ``{"version": 0.0, "dataset": {"item_count": N},
  "features": [...]}``; one ``Fractional`` feature per classifier input
  (the classifier's feature names, e.g. ``log:v1x``) with
  ``numerical_statistics``: ``common`` (``num_present``, ``num_missing`` =
  NaN count: a band the sample rate cannot hold), ``mean``, ``sum``,
  ``std_dev`` (population, over present values: the classifier's
  standardisation), ``min``, ``max`` and ``distribution.kll``: ``buckets``
  = a 10-bucket histogram over ``[min, max]`` (Model Monitor materialises 10
  buckets), ``sketch`` = ``{"parameters": {"c", "k"}, "data": [[q...]]}``
  holding the values at :data:`QUANTILES` as one level (a coarse summary,
  not a compacted KLL sketch). The quantiles are also given by name in the
  extra key ``numerical_statistics.quantiles`` = ``[{"quantile": q,
  "value": v}]`` (the documented schema provides for custom statistics).
  The label is the ``String`` feature ``condition``: ``string_statistics``
  with ``distinct_count`` and ``distribution.categorical.buckets`` =
  ``[{"value": class, "count": n, "share": n / N}]`` (``share`` is an
  extra key).
- ``constraints.json``: per feature ``completeness`` (share present),
  ``num_constraints.is_non_negative`` (``min >= 0``), for ``condition``
  ``string_constraints.domains`` (the classes), and the documented
  ``monitoring_config`` (robust distribution comparison, threshold 0.1).

Pure functions over arrays: no I/O here except :func:`write_statistics`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.serving.statistics import CONSTRAINTS_FILE, STATISTICS_FILE

F64 = NDArray[np.float64]

VERSION = 0.0
LABEL = "condition"
QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
N_BUCKETS = 10
KLL_PARAMETERS = {"c": 0.64, "k": 2048.0}  # Model Monitor's prebuilt container defaults


def _histogram(v: F64) -> list[dict[str, float]]:
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:  # one value: one bucket holding everything
        return [{"lower_bound": lo, "upper_bound": hi, "count": float(v.size)}]
    counts, edges = np.histogram(v, bins=N_BUCKETS, range=(lo, hi))
    return [
        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]),
         "count": float(counts[i])}
        for i in range(N_BUCKETS)
    ]


def _numerical(name: str, col: F64) -> dict[str, Any]:
    present = col[np.isfinite(col)]
    common = {"num_present": int(present.size), "num_missing": int(col.size - present.size)}
    if present.size == 0:
        return {"name": name, "inferred_type": "Fractional",
                "numerical_statistics": {"common": common}}
    q = np.quantile(present, QUANTILES)
    stats: dict[str, Any] = {
        "common": common,
        "mean": float(present.mean()),
        "sum": float(present.sum()),
        "std_dev": float(present.std()),
        "min": float(present.min()),
        "max": float(present.max()),
        "distribution": {"kll": {
            "buckets": _histogram(present),
            "sketch": {"parameters": dict(KLL_PARAMETERS), "data": [[float(v) for v in q]]},
        }},
        "quantiles": [{"quantile": p, "value": float(v)}
                      for p, v in zip(QUANTILES, q, strict=True)],
    }
    return {"name": name, "inferred_type": "Fractional", "numerical_statistics": stats}


def _label(labels: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    n = len(labels)
    counts = dict.fromkeys(classes, 0)
    for c in labels:
        counts[c] = counts.get(c, 0) + 1
    buckets = [{"value": c, "count": k, "share": k / n if n else 0.0}
               for c, k in counts.items()]
    return {"name": LABEL, "inferred_type": "String", "string_statistics": {
        "common": {"num_present": n, "num_missing": 0},
        "distinct_count": sum(1 for k in counts.values() if k),
        "distribution": {"categorical": {"buckets": buckets}},
    }}


def training_statistics(
    x: F64, feature_names: Sequence[str], labels: Sequence[str], classes: Sequence[str]
) -> dict[str, Any]:
    """``statistics.json`` of a training matrix ``x`` (reports x features, NaN = missing)."""
    if x.ndim != 2 or x.shape[1] != len(feature_names) or x.shape[0] != len(labels):
        raise ValueError(f"x {x.shape} must be (len(labels)={len(labels)}, "
                         f"len(feature_names)={len(feature_names)})")
    features = [_numerical(name, x[:, j]) for j, name in enumerate(feature_names)]
    return {"version": VERSION, "dataset": {"item_count": int(x.shape[0])},
            "features": [*features, _label(labels, classes)]}


def training_constraints(statistics: dict[str, Any]) -> dict[str, Any]:
    """``constraints.json`` suggested from a :func:`training_statistics` result."""
    n = int(statistics["dataset"]["item_count"])
    out: list[dict[str, Any]] = []
    for feat in statistics["features"]:
        if feat["inferred_type"] == "String":
            s = feat["string_statistics"]
            out.append({
                "name": feat["name"], "inferred_type": "String",
                "completeness": s["common"]["num_present"] / n if n else 1.0,
                "string_constraints": {"domains": [
                    b["value"] for b in s["distribution"]["categorical"]["buckets"]]},
            })
            continue
        s = feat["numerical_statistics"]
        out.append({
            "name": feat["name"], "inferred_type": feat["inferred_type"],
            "completeness": s["common"]["num_present"] / n if n else 1.0,
            "num_constraints": {"is_non_negative": bool(s.get("min", 0.0) >= 0.0)},
        })
    return {"version": VERSION, "features": out, "monitoring_config": {
        "evaluate_constraints": "Enabled",
        "emit_metrics": "Enabled",
        "datatype_check_threshold": 1.0,
        "domain_content_threshold": 1.0,
        "distribution_constraints": {
            "perform_comparison": "Enabled",
            "comparison_threshold": 0.1,
            "comparison_method": "Robust",
        },
    }}


def write_statistics(directory: Path, statistics: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``statistics.json`` and ``constraints.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    sp, cp = directory / STATISTICS_FILE, directory / CONSTRAINTS_FILE
    sp.write_text(json.dumps(statistics, indent=2) + "\n")
    cp.write_text(json.dumps(training_constraints(statistics), indent=2) + "\n")
    return sp, cp
