"""Simulated source: determinism, block boundaries, pacing, ground truth, pump configs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from simulator import (
    FaultConfig,
    PumpConfig,
    PumpConfigError,
    SimulatedSource,
    SpeedProfile,
    fleet_configs,
    load_pump_config,
)
from simulator._pace import Pacer

SEED = 7


def faulty_fleet() -> list[PumpConfig]:
    return [
        PumpConfig.default(name="a", faults=(FaultConfig(kind="inner_race", severity=0.9),)),
        PumpConfig.default(
            name="b",
            speed=SpeedProfile(mode="drift", rpm=1480, drift_pct=2, drift_period_s=3),
            faults=(
                FaultConfig(kind="cavitation", severity=0.7, onset_s=0.3, ramp_s=0.4),
                FaultConfig(kind="looseness", severity=0.5, onset_s=0.2, ramp_s=0.5),
            ),
        ),
    ]


def test_same_seed_same_samples_other_seed_other_samples() -> None:
    a = SimulatedSource(faulty_fleet(), seed=SEED).read(20000).samples
    b = SimulatedSource(faulty_fleet(), seed=SEED).read(20000).samples
    c = SimulatedSource(faulty_fleet(), seed=SEED + 1).read(20000).samples
    assert np.array_equal(a, b), f"seed={SEED}"
    assert not np.allclose(a, c), f"seed={SEED}"


@pytest.mark.parametrize("block_size", [1, 997, 8192, 30000])
def test_block_size_does_not_change_the_stream(block_size: int) -> None:
    n = 40000 if block_size > 1 else 3000
    whole = SimulatedSource(faulty_fleet(), seed=SEED).read(n).samples
    src = SimulatedSource(faulty_fleet(), seed=SEED, block_size=block_size, duration_s=n / 25600)
    blocks = list(src.blocks())
    joined = np.concatenate([b.samples for b in blocks], axis=1)
    assert joined.shape == whole.shape, f"seed={SEED}: lost or duplicated samples"
    lsb = max(f for f in src.full_scale if f) / (2**15 - 1)
    assert np.allclose(joined, whole, atol=1.01 * lsb), f"seed={SEED} block_size={block_size}"


def test_timestamps_are_contiguous() -> None:
    src = SimulatedSource(seed=SEED, block_size=1000, duration_s=0.5, start_ns=10**18)
    blocks = list(src.blocks())
    assert sum(b.samples.shape[1] for b in blocks) == 12800
    assert blocks[0].t0_ns == 10**18
    for prev, nxt in itertools.pairwise(blocks):
        assert (
            nxt.t0_ns == prev.t0_ns + round(prev.samples.shape[1] * 1e9 / 25600)
            or abs(nxt.t0_ns - prev.t0_ns - prev.samples.shape[1] * 1e9 / 25600) <= 1
        )
    assert blocks[-1].t0_ns == 10**18 + round(12000 * 1e9 / 25600)


def test_block_carries_ground_truth() -> None:
    src = SimulatedSource(faulty_fleet(), seed=SEED, tachometer=True)
    b0 = src.read(2560)  # 0 .. 0.1 s: b is healthy yet
    assert b0.channels == ("a.de_h", "a.de_a", "b.de_h", "b.de_a")
    assert b0.samples.dtype == np.float32 and b0.samples.shape == (4, 2560)
    ta, tb = b0.truth["pumps"]["a"], b0.truth["pumps"]["b"]
    assert ta["labels"] == ["inner_race"] and ta["severities"]["inner_race"] == 0.9
    assert tb["labels"] == ["healthy"]
    assert ta["rpm"] == pytest.approx(2950.0)
    assert ta["bearing_frequencies_hz"]["bpfi"] == pytest.approx(
        PumpConfig.default().bearings[0].geometry.defect_orders()["bpfi"] * 2950 / 60
    )
    assert ta["fault_frequencies_hz"]["inner_race"] == ta["bearing_frequencies_hz"]["bpfi"]
    assert b0.rpm is not None and b0.rpm[0] == pytest.approx(2950.0)
    assert b0.truth["channel_pump"] == ["a", "a", "b", "b"]
    src.read(25600 - 2560)
    b1 = src.read(2560)  # 1.0 .. 1.1 s: both faults have finished growing
    sev = b1.truth["pumps"]["b"]["severities"]
    assert sev == {"cavitation": pytest.approx(0.7), "looseness": pytest.approx(0.5)}
    assert b1.truth["pumps"]["b"]["rpm"] != pytest.approx(1480.0, abs=1e-6)  # drifting


def test_fault_progression_schedules() -> None:
    f = FaultConfig(kind="outer_race", severity=0.8, onset_s=10, ramp_s=10)
    s = f.severity_at(np.array([0.0, 9.99, 10.0, 15.0, 20.0, 100.0]))
    assert s[:3].tolist() == [0.0, 0.0, 0.0]
    assert s[3] == pytest.approx(0.4) and s[4:].tolist() == [0.8, 0.8]
    e = FaultConfig(
        kind="outer_race", severity=0.8, onset_s=10, ramp_s=10, progression="exponential"
    )
    assert 0 < e.severity_at(np.array(15.0)) < 0.2


def test_speed_profiles_integrate_consistently() -> None:
    for sp in (
        SpeedProfile(rpm=1800),
        SpeedProfile(mode="ramp", rpm=600, rpm_end=3000, ramp_start_s=1, ramp_s=4),
        SpeedProfile(mode="drift", rpm=2950, drift_pct=3, drift_period_s=5),
    ):
        t = np.linspace(0, 8, 80001)
        rev = sp.revolutions(t)
        num = np.concatenate(
            [[0], np.cumsum((sp.rpm_at(t[1:]) + sp.rpm_at(t[:-1])) / 120 * np.diff(t))]
        )
        assert np.allclose(rev, num, atol=1e-3), sp.mode
        fast = sp.revolutions_block(12345, 1000, 25600.0)
        assert np.allclose(fast, sp.revolutions((12345 + np.arange(1000)) / 25600.0), atol=1e-5)


def test_pacing_follows_the_stream_clock() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(d: float) -> None:
        slept.append(d)
        now[0] += d

    src = SimulatedSource(
        seed=SEED, block_size=2560, duration_s=1.0, pace=10.0, clock=lambda: now[0], sleep=sleep
    )
    n = len(list(src.blocks()))
    assert n == 10
    assert now[0] == pytest.approx(100.0 + 1.0 / 10)  # 1 s of stream at x10
    p = Pacer("realtime", clock=lambda: now[0], sleep=sleep)
    p.wait(0.0)
    slept.clear()
    p.wait(0.5)
    assert slept == [pytest.approx(0.5)]
    fast = Pacer(None, clock=lambda: now[0], sleep=sleep)
    slept.clear()
    fast.wait(100.0)
    assert slept == []


def test_fleet_has_staggered_faults_and_distinct_pumps() -> None:
    fleet = fleet_configs(8, 4, seed=3)
    assert sum(len(p.sensors) for p in fleet) == 32
    onsets = sorted(f.onset_s for p in fleet for f in p.faults)
    assert len(set(onsets)) == len(onsets) >= 4
    src = SimulatedSource(fleet, seed=SEED)
    assert len(src.channels) == 32
    assert len({tuple(v) for v in src.resonances_hz.values()}) == 8


def test_toml_pump_config_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "pump.toml"
    p.write_text(
        """
name = "p7"
vanes = 5
[speed]
mode = "ramp"
rpm = 1000
rpm_end = 1500
ramp_s = 20
[[bearings]]
designation = "6310"
[[bearings]]
n_balls = 9
ball_d_mm = 7.94
pitch_d_mm = 39.04
location = "NDE"
[[sensors]]
name = "x"
adc_bits = 0
[[resonances]]
freq_hz = 4000.0
damping = 0.05
[[faults]]
kind = "ball"
severity = 0.5
bearing = 1
"""
    )
    cfg = load_pump_config(p)
    assert cfg.name == "p7" and cfg.vanes == 5 and cfg.speed.mode == "ramp"
    assert cfg.bearings[0].geometry.designation == "6310"
    assert cfg.bearings[1].geometry.n_balls == 9 and cfg.bearings[1].location == "NDE"
    assert cfg.sensors[0].full_scale_ms2 is None
    assert cfg.faults[0].bearing == 1
    asset = cfg.asset_descriptor()
    assert asset["vanes"] == 5 and asset["bearings"][0]["designation"] == "6310"
    b = SimulatedSource(cfg, seed=SEED).read(1000)
    assert b.channels == ("p7.x",)
    assert b.truth["pumps"]["p7"]["resonances_hz"] == [4000.0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vanez = 5", "vanez"),
        ("[[faults]]\nkind = 'rust'\nseverity = 0.5", "rust"),
        ("[[faults]]\nkind = 'imbalance'\nseverity = 1.5", "severity"),
        ("[[bearings]]\ndesignation = '9999'", "9999"),
        ("rpm = [", "TOML"),
    ],
)
def test_bad_pump_config_names_file_and_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(PumpConfigError) as err:
        load_pump_config(p)
    assert str(p) in str(err.value)
    assert needle in str(err.value)


def test_default_pump_needs_no_config() -> None:
    b = SimulatedSource().read(256)
    assert b.samples.shape == (2, 256)
    assert np.isfinite(b.samples).all()


def test_config_dict_round_trip() -> None:
    import json

    from simulator import pump_config_from_dict

    for cfg in [PumpConfig.default(), *fleet_configs(4, 3, seed=2)]:
        assert pump_config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_fleet_toml(tmp_path: Path) -> None:
    from simulator import load_fleet_config

    p = tmp_path / "fleet.toml"
    p.write_text('[fleet]\npumps = 3\nchannels_per_pump = 2\nseed = 4\n[[pump]]\nname = "feed"\n')
    pumps = load_fleet_config(p)
    assert [q.name for q in pumps] == ["feed", "pump1", "pump2", "pump3"]
    p.write_text("[fleet]\nbogus = 1\n")
    with pytest.raises(PumpConfigError, match="bogus"):
        load_fleet_config(p)


def test_example_configs_load() -> None:
    from simulator import load_fleet_config

    here = Path(__file__).resolve().parent.parent / "simulator" / "examples"
    cfg = load_pump_config(here / "pump.toml")
    assert cfg.name == "cw-pump-2" and [f.kind for f in cfg.faults] == ["outer_race", "imbalance"]
    fleet = load_fleet_config(here / "fleet.toml")
    assert len(fleet) == 5 and fleet[0].name == "booster"


def test_scalar_and_vector_schedules_agree() -> None:
    t = np.linspace(0, 30, 301)
    for f in (
        FaultConfig(kind="ball", severity=0.7, onset_s=5, ramp_s=10, progression="exponential"),
        FaultConfig(kind="flow", severity=0.4, onset_s=3),
    ):
        assert np.allclose([f.severity_scalar(float(x)) for x in t], f.severity_at(t))
    for sp in (
        SpeedProfile(mode="ramp", rpm=600, rpm_end=3000, ramp_start_s=1, ramp_s=4),
        SpeedProfile(mode="drift", rpm=2950, drift_pct=3, drift_period_s=5),
    ):
        assert np.allclose([sp.revolutions_at(float(x)) for x in t], sp.revolutions(t))
