"""Physics evidence: envelope families name the bearing defect; results say why."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

import dsp
from models.serving.bundle import builtin_bundle
from models.serving.diagnostics import diagnose_bearing, fixed_band_diagnosis
from models.serving.handler import score
from models.training.evaluation import auroc, confusion, macro_f1
from simulator import FaultConfig, PumpConfig, SensorConfig, SpeedProfile, lookup_bearing
from simulator.pump import PumpBearing

SEED = 23
KINDS = {"outer_race": "bearing_outer", "inner_race": "bearing_inner", "ball": "bearing_ball"}


def _reports(kind: str | None, rpm: float, severity: float = 0.7) -> list[dsp.Report]:
    from models.training.train_sim import pump_reports

    cfg = PumpConfig(
        name=f"d-{kind}", speed=SpeedProfile(rpm=rpm),
        bearings=(PumpBearing(lookup_bearing("6308")),),
        sensors=(SensorConfig(name="de_h"),),
        faults=(FaultConfig(kind=kind, severity=severity),) if kind else (),  # type: ignore[arg-type]
    )
    return pump_reports(cfg, seed=SEED, seconds=2)


@pytest.mark.parametrize("rpm", [1480.0, 2950.0])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_envelope_family_names_the_defect(kind: str, rpm: float) -> None:
    for r in _reports(kind, rpm):
        d = diagnose_bearing(r)
        assert d.label == KINDS[kind], f"{kind} at {rpm} rpm: {d.scores} (seed {SEED})"
        assert d.evidence and d.evidence[0].name == f"env_family:{KINDS[kind]}"
        assert "Hz" in d.evidence[0].note and "lit: " in d.evidence[0].note


def test_healthy_pump_names_no_defect() -> None:
    for r in _reports(None, 2950.0):
        assert diagnose_bearing(r).label is None, f"seed {SEED}"


def test_results_carry_the_family_evidence() -> None:
    reps = _reports("inner_race", 1780.0)
    res = score(builtin_bundle(), reps).results
    names = {e.name for r in res for e in r.evidence}
    assert "env_family:bearing_inner" in names
    assert "env_bpfi" in names


def test_impossible_geometry_or_no_envelope_never_crashes() -> None:
    r = _reports("outer_race", 2950.0)[0]
    bad = msgspec.structs.replace(
        r, asset=dsp.Asset(bearings=[dsp.Bearing(n_balls=8, ball_d_mm=50.0, pitch_d_mm=40.0)])
    )
    assert diagnose_bearing(bad).label is None
    assert diagnose_bearing(msgspec.structs.replace(r, envelope=None)).label is None
    assert diagnose_bearing(msgspec.structs.replace(r, speed=dsp.Speed(0.0, "unknown"))).label \
        is None
    assert len(score(builtin_bundle(), [bad]).results) == 1


def test_fixed_band_reference_on_a_clean_impact_train() -> None:
    fs, rpm = 12000.0, 1800.0
    orders = dsp.bearing_orders(9, 7.94, 39.04)
    rng = np.random.default_rng(SEED)
    n = int(fs)
    x = 0.05 * rng.standard_normal(n)
    period = fs / (orders["bpfo"] * rpm / 60.0)
    ring = np.exp(-np.arange(200) / 20.0) * np.sin(2 * np.pi * 3500.0 * np.arange(200) / fs)
    for k in np.arange(0, n - 200, period):
        i = int(k + rng.normal(0, 0.01 * period))
        if 0 <= i < n - 200:
            x[i : i + 200] += ring
    assert fixed_band_diagnosis(x, fs, rpm=rpm, orders=orders) == "bearing_outer"


def test_metrics() -> None:
    assert auroc([0, 1, 2], [3, 4]) == 1.0
    assert auroc([0, 1], [0, 1]) == 0.5
    assert auroc([3, 4], [0, 1]) == 0.0
    rng = np.random.default_rng(SEED)
    a, b = rng.normal(size=40), rng.normal(0.5, size=30)
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in b for q in a])
    assert auroc(a, b) == pytest.approx(brute)
    t = ["a", "a", "b", "b"]
    assert macro_f1(t, ["a", "a", "b", "b"], ["a", "b"]) == 1.0
    assert macro_f1(t, ["a", "unknown", "b", "b"], ["a", "b"]) == pytest.approx((2 / 3 + 1.0) / 2)
    assert confusion(t, ["a", "b", "b", "b"], ["a", "b"]).tolist() == [[1, 1], [0, 2]]
