"""Labelled reports from the simulator: the classifier's and the baselines' training data.

Theory of operation. Each *sample pump* is a random :class:`simulator.PumpConfig`
(speed, vanes, bearing, two or three structural resonances, noise floor) with
at most one fault of a known class, rendered for a few seconds and turned into
1 s reports by the edge's own dsp (:mod:`models.training.replay`). Nuisances
vary on purpose, so the classifier has to learn patterns, not levels:

- speed 600-3600 rpm with slow drift; the report's speed is either the
  true speed ("given", a tachometer) or the edge's own estimate;
- sample rate 12, 20.48 or 25.6 kHz (different sensors and report layouts);
- structural resonances 1.5 kHz .. 0.9 Fmax (where bearing impacts ring);
- sensor noise floor 0.005-0.1 m/s^2 and a sensor gain error of 0.5-2x;
- operating point ("load"): blade-pass growth from running off the best
  efficiency point, severity 0-0.25 on every pump, faulted or not;
- two sensor axes per pump (horizontal and axial).

Held-out split (``split="test"``): unseen seeds (a different seed stream),
unseen speeds (the rpm axis is cut into 150-rpm stripes; training uses even
stripes, test odd ones) and unseen resonances (log-frequency cut into eight
stripes, likewise). The same 8 conditions appear in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

import dsp
from simulator import (
    BEARINGS,
    FaultConfig,
    PumpBearing,
    PumpConfig,
    Resonance,
    SensorConfig,
    SimulatedSource,
    SpeedProfile,
)

from .replay import bearing_asset, config_for, reports_from_signal

Split = Literal["train", "test"]
Progress = Callable[[int, int], None]

#: Classifier classes and the simulator fault that produces each ("healthy": none).
CLASS_FAULTS: dict[str, str | None] = {
    "healthy": None,
    "imbalance": "imbalance",
    "misalignment": "misalignment",
    "looseness": "looseness",
    "bearing_outer": "outer_race",
    "bearing_inner": "inner_race",
    "bearing_ball": "ball",
    "cavitation": "cavitation",
}
CLASSES: tuple[str, ...] = tuple(CLASS_FAULTS)
SAMPLE_RATES: tuple[float, ...] = (12000.0, 20480.0, 25600.0)
RPM_RANGE = (600.0, 3600.0)
RPM_STRIPE = 150.0
RES_STRIPES = 8
SEVERITY = (0.4, 1.0)
_DESIGNATIONS = tuple(d for d in BEARINGS if d != "ZA-2115")
_SPLIT_SALT = {"train": 0x7A1, "test": 0x7E5}


@dataclass(frozen=True, slots=True)
class LabelledReports:
    reports: list[dsp.Report]
    labels: list[str]  # one class per report
    groups: list[int]  # sample-pump index per report (keep a pump's reports together)


def _striped(rng: np.random.Generator, lo: float, hi: float, stripe: float, parity: int) -> float:
    """A value in [lo, hi) whose stripe index (width ``stripe``) has the given parity."""
    while True:
        v = float(rng.uniform(lo, hi))
        if int((v - lo) // stripe) % 2 == parity:
            return v


def _resonances(rng: np.random.Generator, fs: float, parity: int) -> tuple[Resonance, ...]:
    top = min(9000.0, 0.9 * fs / 2.56)
    lo, hi = math.log(1500.0), math.log(top)
    width = (hi - lo) / RES_STRIPES
    k = int(rng.integers(2, 4))
    freqs = sorted(math.exp(_striped(rng, lo, hi, width, parity)) for _ in range(k))
    gains = [1.0, *rng.uniform(0.4, 0.9, k - 1)]
    return tuple(
        Resonance(f, float(rng.uniform(0.03, 0.08)), float(g))
        for f, g in zip(freqs, gains, strict=True)
    )


def random_pump(
    rng: np.random.Generator, cls: str, *, split: Split, name: str = "p"
) -> tuple[PumpConfig, float]:
    """One sample pump of class ``cls`` and its sensor gain error."""
    parity = 0 if split == "train" else 1
    fs = float(rng.choice(SAMPLE_RATES))
    rpm = _striped(rng, *RPM_RANGE, RPM_STRIPE, parity)
    speed = SpeedProfile(
        mode="drift", rpm=rpm, drift_pct=float(rng.uniform(0.0, 0.5)),
        drift_period_s=float(rng.uniform(30.0, 300.0)),
    )
    bearing = BEARINGS[str(rng.choice(_DESIGNATIONS))]
    faults = [
        FaultConfig(kind="flow", severity=float(rng.uniform(0.0, 0.25)))  # operating point
    ]
    kind = CLASS_FAULTS[cls]
    if kind is not None:
        faults.append(FaultConfig(kind=kind, severity=float(rng.uniform(*SEVERITY))))  # type: ignore[arg-type]
    cfg = PumpConfig(
        name=name,
        fs=fs,
        speed=speed,
        vanes=int(rng.integers(3, 9)),
        bearings=(PumpBearing(bearing, "DE"),),
        sensors=(
            SensorConfig(name="de_h", axis="horizontal"),
            SensorConfig(name="de_a", axis="axial"),
        ),
        resonances=_resonances(rng, fs, parity),
        noise_floor=float(math.exp(rng.uniform(math.log(0.005), math.log(0.1)))),
        faults=tuple(faults),
    )
    gain = float(math.exp(rng.uniform(math.log(0.5), math.log(2.0))))
    return cfg, gain


def pump_reports(
    cfg: PumpConfig,
    *,
    seed: int,
    seconds: int,
    gain: float = 1.0,
    tachometer: bool = True,
    start_s: int = 0,
    channels: tuple[int, ...] | None = None,
) -> list[dsp.Report]:
    """``seconds`` 1 s reports per channel of a simulated pump (from ``start_s`` on)."""
    src = SimulatedSource(cfg, seed=seed)
    n = round(cfg.fs)
    if start_s:
        src.read(start_s * n)
    block = src.read(seconds * n)
    truth = block.truth["pumps"][cfg.name]
    b = cfg.bearings[0].geometry
    asset = bearing_asset(
        b.designation, b.n_balls, b.ball_d_mm, b.pitch_d_mm, b.contact_deg,
        vanes=cfg.vanes, rated_rpm=round(cfg.speed.rpm, -1), kind=cfg.kind,
    )
    rpm = float(truth["rpm"]) if tachometer else None
    out: list[dsp.Report] = []
    for c, sensor in enumerate(cfg.sensors):
        if channels is not None and c not in channels:
            continue
        x = block.samples[c] * np.float32(gain)
        out += reports_from_signal(
            x, cfg.fs, asset=asset, rpm=rpm, pump=cfg.name, channel=sensor.name,
            cfg=config_for(cfg.fs), full_scale=None, seq0=len(out),
        )
    return out


def simulate(
    pumps_per_class: int,
    *,
    seed: int = 0,
    split: Split = "train",
    seconds: int = 2,
    classes: tuple[str, ...] = CLASSES,
    progress: Progress | None = None,
) -> LabelledReports:
    """Labelled reports of ``pumps_per_class`` random pumps per class."""
    rng = np.random.default_rng([seed, _SPLIT_SALT[split]])
    reports: list[dsp.Report] = []
    labels: list[str] = []
    groups: list[int] = []
    total = pumps_per_class * len(classes)
    for i in range(total):
        cls = classes[i % len(classes)]
        cfg, gain = random_pump(rng, cls, split=split, name=f"{split}{i}")
        pump_seed = int(rng.integers(0, 2**31)) ^ _SPLIT_SALT[split]
        reps = pump_reports(
            cfg, seed=pump_seed, seconds=seconds, gain=gain, tachometer=bool(rng.random() < 0.5)
        )
        reports += reps
        labels += [cls] * len(reps)
        groups += [i] * len(reps)
        if progress is not None:
            progress(i + 1, total)
    return LabelledReports(reports, labels, groups)


@dataclass(frozen=True, slots=True)
class AnomalySet:
    """Per pump: healthy reports to fit, healthy and faulted reports to score."""

    fit: list[list[dsp.Report]]
    healthy: list[list[dsp.Report]]
    faulty: list[list[dsp.Report]]
    fault_kinds: list[str]


def simulate_anomaly(
    n_pumps: int,
    *,
    seed: int = 0,
    fit_s: int = 16,
    test_s: int = 4,
    progress: Progress | None = None,
) -> AnomalySet:
    """Healthy and faulted windows of the *same* pumps (same seed: same structure and noise).

    Each pump (held-out split parameters) runs healthy for ``fit_s`` seconds
    (the baseline period), then ``test_s`` more healthy seconds are scored,
    against the same seconds of the same pump with one fault (each fault
    class in turn, severity 0.4-1).
    """
    rng = np.random.default_rng([seed, 0xA40])
    faults = [c for c in CLASSES if c != "healthy"]
    fit: list[list[dsp.Report]] = []
    healthy: list[list[dsp.Report]] = []
    faulty: list[list[dsp.Report]] = []
    kinds: list[str] = []
    for i in range(n_pumps):
        cfg, gain = random_pump(rng, "healthy", split="test", name=f"a{i}")
        pump_seed = int(rng.integers(0, 2**31))
        cls = faults[i % len(faults)]
        kind = CLASS_FAULTS[cls]
        assert kind is not None
        bad = cfg.with_faults(
            *cfg.faults,
            FaultConfig(kind=kind, severity=float(rng.uniform(*SEVERITY))),  # type: ignore[arg-type]
        )
        both = pump_reports(cfg, seed=pump_seed, seconds=fit_s + test_s, gain=gain, channels=(0,))
        fit.append(both[:fit_s])
        healthy.append(both[fit_s:])
        faulty.append(
            pump_reports(
                bad, seed=pump_seed, seconds=test_s, gain=gain, start_s=fit_s, channels=(0,)
            )
        )
        kinds.append(cls)
        if progress is not None:
            progress(i + 1, n_pumps)
    return AnomalySet(fit, healthy, faulty, kinds)
