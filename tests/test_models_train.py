"""The simulator-trained classifier: learns, is deterministic, ships without its training code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dsp
from models.serving.bundle import load_bundle
from models.serving.features import extract
from models.serving.mlp import MLPClassifier
from models.training.train_sim import (
    CLASSES,
    RES_RANGE_HZ,
    RES_STRIPES,
    LabelledReports,
    random_pump,
    simulate,
)
from models.training.training import (
    FEATURES,
    TrainConfig,
    TrainResult,
    fit,
    fit_mlp,
    predict,
    write_model,
)
from pumpwatch.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEED = 11


@pytest.fixture(scope="module")
def train_set() -> LabelledReports:
    return simulate(5, seed=SEED, split="train", seconds=1)


@pytest.fixture(scope="module")
def test_set() -> LabelledReports:
    return simulate(2, seed=SEED, split="test", seconds=1)


@pytest.fixture(scope="module")
def model(train_set: LabelledReports) -> MLPClassifier:
    clf = fit(TrainConfig(seed=SEED), train_set.reports, train_set.labels)
    assert isinstance(clf, MLPClassifier)
    return clf


def test_held_out_split_differs_in_speed_and_resonance(
    train_set: LabelledReports, test_set: LabelledReports
) -> None:
    # the true speeds and modes (a report's given speed may be a few percent off the truth)
    for split, parity in (("train", 0), ("test", 1)):
        rng = np.random.default_rng(SEED)
        for i in range(16):
            cfg, _ = random_pump(rng, CLASSES[i % len(CLASSES)], split=split)  # type: ignore[arg-type]
            assert int((cfg.speed.rpm - 600.0) // 150.0) % 2 == parity, f"seed {SEED}"
            assert cfg.resonances
            for r in cfg.resonances:
                lo, hi = np.log(RES_RANGE_HZ[0]), np.log(RES_RANGE_HZ[1] * cfg.fs)
                stripe = int((np.log(r.freq_hz) - lo) // ((hi - lo) / RES_STRIPES))
                assert stripe % 2 == parity, f"seed {SEED}: {r.freq_hz} Hz at fs {cfg.fs}"
    assert set(train_set.labels) == set(test_set.labels) == set(CLASSES)


def test_small_training_generalises_to_unseen_pumps(
    model: MLPClassifier, test_set: LabelledReports
) -> None:
    pred = predict(model, test_set.reports)
    acc = float(np.mean([p == t for p, t in zip(pred, test_set.labels, strict=True)]))
    # 5 pumps per class, 1 s each: far from the full model's figure, far above chance (1/8).
    assert acc >= 0.6, f"accuracy {acc:.2f} on {len(pred)} held-out reports (seed {SEED})"
    bearing = [(p, t) for p, t in zip(pred, test_set.labels, strict=True)
               if t in ("bearing_outer", "bearing_inner")]
    b_acc = np.mean([p == t for p, t in bearing])
    assert b_acc >= 0.75, f"outer/inner accuracy {b_acc:.2f} (seed {SEED})"


def test_fit_is_deterministic_for_a_seed(train_set: LabelledReports) -> None:
    x = extract(train_set.reports).matrix(FEATURES)
    a = fit_mlp(x, train_set.labels, feature_names=FEATURES, seed=3)
    b = fit_mlp(x, train_set.labels, feature_names=FEATURES, seed=3)
    np.testing.assert_array_equal(a.W1, b.W1)
    np.testing.assert_array_equal(a.W2, b.W2)


def test_probabilities_are_bounded_for_out_of_range_inputs(model: MLPClassifier) -> None:
    # A machine unlike any simulated one: clipped features cannot run a logit away.
    x = np.full((3, len(FEATURES)), np.nan)
    x[1] = 1e6
    x[2] = -1e6
    p = model.proba_from_matrix(x)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_artifact_loads_and_serves_without_training_code(
    tmp_path: Path, model: MLPClassifier, test_set: LabelledReports
) -> None:
    result = TrainResult(model, {"sim_macro_f1": 0.5})
    tar = write_model(result, tmp_path / "out", model_version="t-1")
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {"sim_macro_f1": 0.5}
    req = tmp_path / "req.msgpack"
    from models.serving.handler import MSGPACK
    from tests.infra.model_server import request_body

    req.write_bytes(request_body(test_set.reports[:8]))
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top in ("simulator", "sklearn") or name.startswith("models.serving.train"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from pathlib import Path
        import msgspec
        from models.serving.bundle import load_bundle
        from models.serving.handler import invoke
        assert "simulator" not in sys.modules and "models.training.training" not in sys.modules
        from dsp.results import InvocationResponse
        b = load_bundle(Path({str(tar)!r}))
        body, _ = invoke(b, Path({str(req)!r}).read_bytes(), {MSGPACK!r}, {MSGPACK!r})
        resp = msgspec.msgpack.decode(body, type=InvocationResponse)
        print(b.classifier.kind, resp.model_version, [r.condition for r in resp.results])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    kind, version, conditions = out.stdout.split(" ", 2)
    assert (kind, version) == ("mlp", "t-1")
    assert "bearing" in conditions or "healthy" in conditions
    loaded = load_bundle(tar)
    assert isinstance(loaded.classifier, MLPClassifier)
    np.testing.assert_array_equal(loaded.classifier.W1, model.W1)


def test_pumpwatch_train_writes_bundle_metrics_and_tarball(tmp_path: Path) -> None:
    out = tmp_path / "m"
    code = main(["train", "--out", str(out), "--pumps-per-class", "1",
                 "--test-pumps-per-class", "1", "--calib-pumps-per-class", "1",
                 "--seconds", "1", "--seed", str(SEED),
                 "--quiet", "--model-version", "sim-test"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["sim_macro_f1"] <= 1.0
    assert {f"sim_f1_{c}" for c in CLASSES} <= set(metrics)
    assert 0.0 <= metrics["sim_ece"] <= 1.0 and metrics["n_calibration_reports"] > 0
    b = load_bundle(out / "model.tar.gz")
    assert b.model_version == "sim-test"
    assert b.classifier.classes == CLASSES
    # the fitted temperature travels in the bundle and the served kind applies it
    assert isinstance(b.classifier, MLPClassifier)
    assert b.classifier.temperature == pytest.approx(metrics["sim_temperature"], rel=1e-3)
    spec = json.loads((out / "bundle" / "bundle.json").read_text())["classifier"]
    assert spec.get("temperature", 1.0) == b.classifier.temperature
    training = json.loads((out / "training.json").read_text())
    assert np.array(training["confusion"]).shape == (8, 8)


def test_reports_carry_the_edge_schema(train_set: LabelledReports) -> None:
    r = train_set.reports[0]
    assert dsp.decode_report(dsp.encode_report(r)) == r  # what the edge would have sent
