"""The widened simulator: each physical property the training distribution relies on is there.

Checks use plain numpy spectra, independent of dsp, except where the
property is what the edge's report says (velocity RMS, the given speed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from models.training.replay import config_for
from models.training.train_sim import (
    CLASSES,
    GIVEN_RPM_ERROR,
    RATED_RPM_ERROR,
    SAMPLE_RATES,
    pump_reports,
    random_pump,
    report_speed,
    simulate,
)
from simulator import (
    FaultConfig,
    PumpBearing,
    PumpConfig,
    PumpConfigError,
    Resonance,
    SensorConfig,
    SimulatedSource,
    lookup_bearing,
)
from simulator.synth import load_zone_factor

SEED = 20261201
ONE = (SensorConfig(name="de_h", axis="horizontal", adc_bits=0),)


def render(
    cfg: PumpConfig, seconds: float, seed: int = SEED
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    b = SimulatedSource(cfg, seed=seed).read(int(cfg.fs * seconds))
    return b.samples.astype(np.float64), b.truth["pumps"][cfg.name]


def psd(x: NDArray[np.float64], fs: float) -> tuple[NDArray[np.floating], NDArray[np.float64]]:
    w = np.hanning(x.size)
    return np.fft.rfftfreq(x.size, 1 / fs), np.abs(np.fft.rfft((x - x.mean()) * w)) ** 2


def envelope(
    x: NDArray[np.float64], fs: float, lo: float
) -> tuple[NDArray[np.floating], NDArray[np.float64]]:
    """Amplitude spectrum of the squared envelope of everything above ``lo`` Hz."""
    X = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / fs)
    X[f < lo] = 0
    analytic = np.fft.ifft(np.concatenate([X, np.zeros_like(X[1:-1])]) * 2)
    e = np.abs(analytic) ** 2
    e -= e.mean()
    w = np.hanning(e.size)
    return np.fft.rfftfreq(e.size, 1 / fs), 2 * np.abs(np.fft.rfft(e * w)) / w.sum()


def peak(
    f: NDArray[np.floating], s: NDArray[np.float64], at: float, rel: float
) -> tuple[float, float]:
    m = (f >= at * (1 - rel)) & (f <= at * (1 + rel))
    k = int(np.argmax(np.where(m, s, -np.inf)))
    return float(f[k]), float(s[k])


def floor(f: NDArray[np.floating], s: NDArray[np.float64], at: float, rel: float = 0.1) -> float:
    m = (f >= at * (1 - rel)) & (f <= at * (1 + rel))
    return float(np.median(s[m]))


def test_training_resonances_reach_above_0_4_fs_and_stay_below_0_45_fs() -> None:
    rng = np.random.default_rng(SEED)
    ratios = [r.freq_hz / cfg.fs for _ in range(60)
              for cfg, _ in [random_pump(rng, "healthy", split="train")]
              for r in cfg.resonances or ()]
    assert max(ratios) > 0.4 and max(ratios) <= 0.45, f"seed={SEED}: {max(ratios)}"
    assert min(ratios) * 12000 < 1000, f"seed={SEED}: no low modes"


def test_a_resonance_above_0_4_fs_rings_in_the_signal() -> None:
    fs = 25600.0
    cfg = PumpConfig(fs=fs, sensors=ONE, resonances=(Resonance(0.43 * fs, 0.02, 1.0),))
    x, truth = render(cfg, 2)
    f, p = psd(x[0], fs)
    near = (f > 0.41 * fs) & (f < 0.45 * fs)
    assert truth["resonances_hz"] == [pytest.approx(0.43 * fs)]
    assert p[near].sum() > 0.5 * p[f > 1000].sum(), f"seed={SEED}"


def test_quiet_hf_dominated_healthy_machine_has_the_stated_energy_split() -> None:
    """A small rig: no impeller, low 1x, modes at a few kHz (0.1-0.5 mm/s, mostly > 2.5 kHz)."""
    dsp = pytest.importorskip("dsp")
    fs = 12000.0
    cfg = PumpConfig(fs=fs, vanes=0, shaft_level=0.3, structure_rms=1.0, kind="test rig",
                     sensors=ONE, resonances=(Resonance(3200.0, 0.03, 1.0),
                                              Resonance(4400.0, 0.05, 0.6)))
    x, truth = render(cfg, 2)
    assert truth["labels"] == ["healthy"]
    f, p = psd(x[0], fs)
    share = p[f > 2500].sum() / p[f > 0].sum()
    assert share > 0.9, f"seed={SEED}: {share:.2f} of the energy above 2.5 kHz"
    ad = cfg.asset_descriptor()
    assert ad["vanes"] is None  # no blade pass to look for
    asset = dsp.Asset(**{**ad, "bearings": [dsp.Bearing(**b) for b in ad["bearings"]]})
    rep, = dsp.analyze(x[:, : int(fs)].astype(np.float32), config_for(fs),
                       [dsp.ChannelSpec(asset=asset, rpm=2950.0)])
    assert 0.1 <= rep.features.velocity_rms <= 0.5, f"seed={SEED}: {rep.features.velocity_rms}"


def test_healthy_training_machines_include_quiet_rigs_and_motors() -> None:
    rng = np.random.default_rng(SEED)
    kinds = {random_pump(rng, "healthy", split="train")[0].kind for _ in range(40)}
    assert kinds == {"centrifugal pump", "electric motor", "test rig"}, f"seed={SEED}"
    cav = {random_pump(rng, "cavitation", split="train")[0].vanes for _ in range(10)}
    assert min(cav) >= 3, "cavitation only on machines with an impeller"
    with pytest.raises(PumpConfigError, match="no impeller"):
        PumpConfig(vanes=0, faults=(FaultConfig(kind="cavitation", severity=0.5),))


def test_bearing_slip_offsets_the_defect_line_by_the_stated_percent() -> None:
    fs, slip = 25600.0, 2.0
    geo = lookup_bearing("6308")
    cfg = PumpConfig(fs=fs, sensors=ONE, bearings=(PumpBearing(geo, "DE", slip),),
                     resonances=(Resonance(4000.0, 0.04, 1.0),),
                     faults=(FaultConfig(kind="outer_race", severity=0.7),))
    x, truth = render(cfg, 4)
    catalog = geo.defect_frequencies_hz(truth["rpm"])["bpfo"]
    assert truth["fault_frequencies_hz"]["outer_race"] == pytest.approx(catalog * 0.98)
    f, e = envelope(x[0], fs, 1500.0)
    at, h = peak(f, e, catalog, 0.05)
    assert at == pytest.approx(catalog * (1 - slip / 100), abs=0.5), f"seed={SEED}"
    assert h > 5 * floor(f, e, catalog), f"seed={SEED}"


def test_outer_race_load_zone_position_sets_the_1x_modulation() -> None:
    fs = 25600.0
    assert load_zone_factor(0.0) == 1.0 and load_zone_factor(120.0) == 0.0

    def sidebands(position: float) -> tuple[float, float]:
        cfg = PumpConfig(fs=fs, sensors=ONE, resonances=(Resonance(4000.0, 0.04, 1.0),),
                         faults=(FaultConfig(kind="outer_race", severity=0.8,
                                             position_deg=position),))
        x, truth = render(cfg, 4)
        f, e = envelope(x[0], fs, 1500.0)
        bpfo, fr = truth["fault_frequencies_hz"]["outer_race"], truth["rpm"] / 60
        _, center = peak(f, e, bpfo, 0.005)
        _, side = peak(f, e, bpfo + fr, 0.005)
        return side / center, center

    in_zone, strong = sidebands(0.0)
    outside, weak = sidebands(150.0)
    assert in_zone < 0.2, f"seed={SEED}: a defect in the load zone rings steadily ({in_zone})"
    assert outside > 0.3, f"seed={SEED}: outside it the rotating load modulates at 1x"
    assert weak < 0.5 * strong, f"seed={SEED}"


def test_ball_fault_shows_cage_sidebands_and_a_weak_spin_line() -> None:
    fs = 25600.0
    cfg = PumpConfig(fs=fs, sensors=ONE, resonances=(Resonance(4000.0, 0.04, 1.0),),
                     faults=(FaultConfig(kind="ball", severity=0.8, cage_depth=1.0,
                                         race_ratio=0.8),))
    x, truth = render(cfg, 8)
    o = cfg.bearings[0].defect_orders()
    fr = truth["rpm"] / 60
    bsf2, ftf = 2 * o["bsf"] * fr, o["ftf"] * fr
    f, e = envelope(x[0], fs, 1500.0)
    _, center = peak(f, e, bsf2, 0.003)
    base = floor(f, e, bsf2)
    assert center > 5 * base, f"seed={SEED}"
    for side in (bsf2 - ftf, bsf2 + ftf):
        _, h = peak(f, e, side, 0.003)
        assert h > 3 * base, f"seed={SEED}: no cage sideband at {side:.1f} Hz"
    _, spin = peak(f, e, bsf2 / 2, 0.003)
    # strikes on both races nearly alike: the 1xBSF (spin) line is the weaker one
    assert spin < 0.5 * center, f"seed={SEED}"
    _, cage = peak(f, e, ftf, 0.01)
    assert cage > 3 * floor(f, e, ftf, 0.5), f"seed={SEED}: no cage-rate line"



def test_ball_spin_axis_wander_weakens_the_spin_lines_not_the_cage_modulation() -> None:
    """Strikes that miss on random spins (``spin_wander``): the 2xBSF line loses height
    over its floor, by about the stated line-power factor, while the cage-rate line
    relative to 2xBSF does not fall (the load-zone modulation stays)."""
    fs = 25600.0

    def lines(wander: float) -> tuple[float, float]:
        cfg = PumpConfig(fs=fs, sensors=ONE, resonances=(Resonance(4000.0, 0.04, 1.0),),
                         faults=(FaultConfig(kind="ball", severity=0.6, cage_depth=0.8,
                                             race_ratio=0.8, spin_wander=wander),))
        x, truth = render(cfg, 8)
        o = cfg.bearings[0].defect_orders()
        fr = truth["rpm"] / 60
        f, e = envelope(x[0], fs, 1500.0)
        _, center = peak(f, e, 2 * o["bsf"] * fr, 0.003)
        _, cage = peak(f, e, o["ftf"] * fr, 0.01)
        return center / floor(f, e, 2 * o["bsf"] * fr), cage / center

    steady, steady_cage = lines(0.0)
    wandering, wandering_cage = lines(0.9)
    assert wandering < 0.6 * steady, f"seed={SEED}: {wandering:.1f} vs {steady:.1f}"
    assert wandering_cage > 0.8 * steady_cage, f"seed={SEED}"
    with pytest.raises(PumpConfigError, match="spin_wander"):
        FaultConfig(kind="ball", severity=0.5, spin_wander=1.5)

def test_magnet_mount_peaks_at_its_resonance_and_rolls_off_above() -> None:
    fs = 25600.0
    res = (Resonance(1500.0, 0.5 - 1e-3, 1.0),)  # broad: flat forcing over the band
    ideal = PumpConfig(fs=fs, sensors=ONE, resonances=res, noise_floor=0.5)
    mag = PumpConfig(fs=fs, resonances=res, noise_floor=0.5, sensors=(SensorConfig(
        name="de_h", axis="horizontal", adc_bits=0, mount="magnet", mount_hz=6000.0,
        mount_q=10.0),))
    f, p0 = psd(render(ideal, 2)[0][0], fs)
    _, p1 = psd(render(mag, 2)[0][0], fs)

    def gain(lo: float, hi: float) -> float:
        m = (f > lo) & (f < hi)
        return float(np.sqrt(p1[m].sum() / p0[m].sum()))

    assert gain(100, 500) == pytest.approx(1.0, rel=0.1)
    assert gain(5900, 6100) > 5, f"seed={SEED}: mounted resonance"
    assert gain(11000, 12000) < 0.6, f"seed={SEED}: roll-off above it"


def test_cavitation_is_impulsive_blade_pass_pulsed_and_rises_with_the_operating_point() -> None:
    fs = 25600.0

    def run(op: float) -> tuple[NDArray[np.float64], dict[str, Any]]:
        faults = [FaultConfig(kind="cavitation", severity=0.6)]
        if op:
            faults.append(FaultConfig(kind="flow", severity=op))
        return render(PumpConfig(fs=fs, sensors=ONE, vanes=5, faults=tuple(faults)), 4)

    x0, truth = run(0.0)
    x1, _ = run(0.3)
    f, p0 = psd(x0[0], fs)
    _, p1 = psd(x1[0], fs)
    hf = f > 2500
    assert p1[hf].sum() > 1.5 * p0[hf].sum(), f"seed={SEED}: rises with the operating point"
    fe, e = envelope(x0[0], fs, 2500.0)
    bpf = truth["blade_pass_hz"]
    _, h = peak(fe, e, bpf, 0.01)
    assert h > 5 * floor(fe, e, bpf, 0.3), f"seed={SEED}: no blade-pass pulsing"


def test_training_sample_rates_span_12_to_51_2_khz() -> None:
    assert min(SAMPLE_RATES) == 12000.0 and max(SAMPLE_RATES) == 51200.0
    rng = np.random.default_rng(SEED)
    seen = {random_pump(rng, "healthy", split="train")[0].fs for _ in range(60)}
    assert seen == set(SAMPLE_RATES), f"seed={SEED}: {sorted(seen)}"
    cfg = PumpConfig(fs=51200.0, sensors=ONE)
    reps = pump_reports(cfg, seed=SEED, seconds=1)
    assert reps[0].fs == 51200.0


def test_the_report_given_speed_is_off_the_true_speed_by_the_drawn_error() -> None:
    cfg, _ = random_pump(np.random.default_rng(SEED), "healthy", split="train")
    exact = pump_reports(cfg, seed=SEED, seconds=1, channels=(0,))
    off = pump_reports(cfg, seed=SEED, seconds=1, channels=(0,), given_rpm_error=0.03,
                       rated_rpm_error=-0.04)
    assert off[0].speed.rpm == pytest.approx(exact[0].speed.rpm * 1.03)
    assert off[0].asset.rated_rpm == pytest.approx(round(cfg.speed.rpm * 0.96, -1))
    rng = np.random.default_rng(SEED)
    draws = [report_speed(rng) for _ in range(300)]
    errors = [abs(e) for given, e, _ in draws if given and e]
    assert errors and GIVEN_RPM_ERROR[0] <= min(errors) <= max(errors) <= GIVEN_RPM_ERROR[1]
    assert sum(1 for given, e, _ in draws if given and not e) > 50  # tachometers
    assert sum(1 for given, _, _ in draws if not given) > 50  # estimated by the edge
    assert max(abs(r) for _, _, r in draws) <= RATED_RPM_ERROR


def test_simulate_is_reproducible_with_the_widened_draws() -> None:
    a = simulate(1, seed=SEED, split="calib", seconds=1, classes=CLASSES[:2])
    b = simulate(1, seed=SEED, split="calib", seconds=1, classes=CLASSES[:2])
    assert [r.features.rms for r in a.reports] == [r.features.rms for r in b.reports]
