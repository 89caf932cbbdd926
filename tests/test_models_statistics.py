"""Training statistics in each bundle, in SageMaker Model Monitor's documented layout.

The structural checks below follow the Developer Guide's "Schema for
Statistics (statistics.json file)" and "Schema for Constraints
(constraints.json file)": the keys and types each documented object has.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.serving.bundle import load_bundle, read_manifest, sha256_file
from models.serving.statistics import load_statistics
from models.training.anomaly import fit_pump_baselines
from models.training.statistics import QUANTILES, training_constraints, training_statistics
from models.training.train_sim import CLASSES, simulate_anomaly
from models.training.training import FEATURES
from pumpwatch.cli import main

SEED = 13
NUMBER = (int, float)


def _num(v: Any, where: str) -> None:
    assert isinstance(v, NUMBER) and not isinstance(v, bool), f"{where}: number, got {v!r}"


def check_statistics(doc: dict[str, Any]) -> None:
    """statistics.json as documented: version, dataset.item_count, features[...]."""
    assert set(doc) >= {"version", "dataset", "features"}
    _num(doc["version"], "version")
    _num(doc["dataset"]["item_count"], "dataset.item_count")
    assert isinstance(doc["features"], list) and doc["features"]
    for f in doc["features"]:
        name = f["name"]
        assert isinstance(name, str) and name
        assert f["inferred_type"] in ("Integral", "Fractional", "String"), name
        if f["inferred_type"] == "String":
            s = f["string_statistics"]
            assert set(s["common"]) == {"num_present", "num_missing"}, name
            _num(s["distinct_count"], f"{name}.distinct_count")
            for b in s["distribution"]["categorical"]["buckets"]:
                assert isinstance(b["value"], str), name
                _num(b["count"], f"{name} bucket count")
            continue
        s = f["numerical_statistics"]
        assert set(s["common"]) == {"num_present", "num_missing"}, name
        for k in ("mean", "sum", "std_dev", "min", "max"):
            _num(s[k], f"{name}.{k}")
        kll = s["distribution"]["kll"]
        assert kll["buckets"], name
        for b in kll["buckets"]:
            assert set(b) == {"lower_bound", "upper_bound", "count"}, name
            for k in b:
                _num(b[k], f"{name} bucket {k}")
        assert set(kll["sketch"]["parameters"]) == {"c", "k"}, name
        assert isinstance(kll["sketch"]["data"], list), name
        for level in kll["sketch"]["data"]:
            assert isinstance(level, list)
            for v in level:
                _num(v, f"{name} sketch value")


def check_constraints(doc: dict[str, Any]) -> None:
    """constraints.json as documented: version, features[...], monitoring_config."""
    assert set(doc) >= {"version", "features", "monitoring_config"}
    _num(doc["version"], "version")
    for f in doc["features"]:
        assert isinstance(f["name"], str)
        assert f["inferred_type"] in ("Integral", "Fractional", "String", "Unknown")
        _num(f["completeness"], f"{f['name']}.completeness")
        assert 0.0 <= f["completeness"] <= 1.0
        if f["inferred_type"] == "String":
            assert all(isinstance(d, str) for d in f["string_constraints"]["domains"])
        else:
            assert isinstance(f["num_constraints"]["is_non_negative"], bool)
    mc = doc["monitoring_config"]
    assert mc["evaluate_constraints"] in ("Enabled", "Disabled")
    assert mc["emit_metrics"] in ("Enabled", "Disabled")
    _num(mc["datatype_check_threshold"], "datatype_check_threshold")
    _num(mc["domain_content_threshold"], "domain_content_threshold")
    dc = mc["distribution_constraints"]
    assert dc["perform_comparison"] in ("Enabled", "Disabled")
    _num(dc["comparison_threshold"], "comparison_threshold")
    assert dc["comparison_method"] in ("Simple", "Robust")


def test_statistics_describe_the_training_matrix() -> None:
    rng = np.random.default_rng(SEED)
    x = np.column_stack([rng.normal(2.0, 0.5, 200), rng.uniform(-3.0, -1.0, 200)])
    x[:20, 1] = np.nan  # a band some sample rates cannot hold
    labels = ["healthy"] * 150 + ["cavitation"] * 50
    doc = training_statistics(x, ("log:a", "log:b"), labels, ("healthy", "cavitation", "x"))
    check_statistics(doc)
    assert doc["dataset"]["item_count"] == 200
    _, b, cond = doc["features"]
    s = b["numerical_statistics"]
    present = x[20:, 1]
    assert s["common"] == {"num_present": 180, "num_missing": 20}
    assert s["mean"] == pytest.approx(present.mean())
    assert s["std_dev"] == pytest.approx(present.std())
    assert (s["min"], s["max"]) == (present.min(), present.max())
    buckets = s["distribution"]["kll"]["buckets"]
    assert len(buckets) == 10 and sum(bk["count"] for bk in buckets) == 180
    assert buckets[0]["lower_bound"] == present.min()
    assert buckets[-1]["upper_bound"] == present.max()
    q = {e["quantile"]: e["value"] for e in s["quantiles"]}
    assert tuple(q) == QUANTILES
    assert q[0.5] == pytest.approx(np.median(present))
    assert s["distribution"]["kll"]["sketch"]["data"] == [list(q.values())]
    assert cond["name"] == "condition" and cond["inferred_type"] == "String"
    shares = {bk["value"]: bk["share"] for bk in
              cond["string_statistics"]["distribution"]["categorical"]["buckets"]}
    assert shares == {"healthy": 0.75, "cavitation": 0.25, "x": 0.0}
    assert cond["string_statistics"]["distinct_count"] == 2

    cons = training_constraints(doc)
    check_constraints(cons)
    by = {f["name"]: f for f in cons["features"]}
    assert by["log:a"]["num_constraints"]["is_non_negative"] is bool(x[:, 0].min() >= 0)
    assert by["log:b"]["num_constraints"]["is_non_negative"] is False
    assert by["log:b"]["completeness"] == pytest.approx(0.9)
    assert by["condition"]["string_constraints"]["domains"] == ["healthy", "cavitation", "x"]


def test_pumpwatch_train_writes_the_statistics_into_the_bundle(tmp_path: Path) -> None:
    aset = simulate_anomaly(1, seed=SEED, fit_s=9, test_s=1)
    fit_pump_baselines(aset.fit[0]).save(tmp_path / "baselines.npz")
    out = tmp_path / "m"
    assert main(["train", "--out", str(out), "--pumps-per-class", "1",
                 "--test-pumps-per-class", "1", "--seconds", "1", "--seed", str(SEED),
                 "--quiet", "--model-version", "sim-stats",
                 "--baselines", str(tmp_path / "baselines.npz")]) == 0
    bundle_dir = out / "bundle"
    stats = json.loads((bundle_dir / "statistics.json").read_text())
    cons = json.loads((bundle_dir / "constraints.json").read_text())
    check_statistics(stats)
    check_constraints(cons)
    names = [f["name"] for f in stats["features"]]
    assert names == [*FEATURES, "condition"]
    assert [f["name"] for f in cons["features"]] == names
    n = stats["dataset"]["item_count"]
    assert n == len(CLASSES) * 2  # 1 pump per class, 1 s, two sensor axes
    counts = {b["value"]: b["count"] for b in
              stats["features"][-1]["string_statistics"]["distribution"]["categorical"]["buckets"]}
    assert counts == dict.fromkeys(CLASSES, 2)

    manifest = read_manifest(bundle_dir)  # listed, checksummed, and beside the baselines
    assert manifest["statistics"] == {"statistics": "statistics.json",
                                      "constraints": "constraints.json"}
    assert manifest["files"]["statistics.json"] == sha256_file(bundle_dir / "statistics.json")
    assert manifest["baselines"] == {"path": "baselines.npz"}
    with tarfile.open(out / "model.tar.gz") as tar:
        assert {"statistics.json", "constraints.json", "bundle.json"} <= set(tar.getnames())
    b = load_bundle(out / "model.tar.gz")
    assert b.model_version == "sim-stats" and b.baselines is not None

    back = load_statistics(bundle_dir)
    assert back is not None and back.item_count == n
    assert set(back.features) == set(FEATURES)
    f0 = stats["features"][0]["numerical_statistics"]
    assert back.features[FEATURES[0]].mean == f0["mean"]
    assert back.features[FEATURES[0]].quantiles[0.99] == f0["quantiles"][-1]["value"]
    assert back.class_shares == dict.fromkeys(CLASSES, 2 / n)
    assert back.constraints == cons


def test_a_bundle_without_statistics_loads_none(tmp_path: Path) -> None:
    from models.serving.bundle import write_bundle

    assert load_statistics(write_bundle(tmp_path / "b", model_version="v")) is None
