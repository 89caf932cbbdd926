"""Labelled reports from the simulator: the classifier's and the baselines' training data.

Theory of operation. Each *sample machine* is a random
:class:`simulator.PumpConfig` with at most one fault of a known class,
rendered for a few seconds and turned into 1 s reports by the edge's own dsp
(:mod:`models.training.replay`). Nuisances vary on purpose and widely, so the
classifier has to learn fault patterns, not "looks like the simulator's
pump" -- a healthy machine may look like many things:

- machine type: a centrifugal pump (3-8 vanes, healthy shaft lines 0.3-2x
  nominal, structural response 0.3-3 m/s^2), a small electric motor or a test
  rig (no impeller, so no blade pass and no flow or cavitation; low 1x:
  shaft lines 0.1-1x nominal, i.e. a few tenths of a mm/s; structural
  response 0.05-3 m/s^2). A quiet rig whose modes sit at a few kHz puts most
  of its acceleration energy there at 0.1-0.5 mm/s: a legitimate healthy
  machine, so broadband high-frequency energy alone is not cavitation;
- speed 600-3600 rpm with slow drift; the report's speed is the true speed
  (a tachometer), a given speed a few percent off (1-4 %: a nameplate or
  drive setpoint), or the edge's own estimate; the asset's rated speed is up
  to 4 % off the true speed (the edge falls back on it when no 1x stands out);
- sample rate 12, 20, 20.48, 25.6, 48 or 51.2 kHz (different sensors and
  report layouts);
- 1-4 structural resonances anywhere from 400 Hz to 0.45 fs, damping ratio
  0.01-0.1 (Q 5-50), relative gain 0.2-1 (where bearing impacts ring);
- bearing-fault visibility: a defect's impacts ring on average (over their
  load-zone, shaft- and cage-rate modulation) at 5-200x the machine's own
  broadband background (structural response and noise floor, m/s^2 RMS;
  log-uniform, the same on every machine type), from an incipient defect
  barely above it to a severe one; the severity follows from that peak
  (:func:`simulator.synth.impact_severity`). Drawn on the absolute severity
  scale instead (impacts of 14-550 m/s^2), a fault on a quiet rig would
  always tower over its background and one on a loud pump never would: the
  classifier would learn "a quiet machine with low shaft lines is healthy"
  and miss a weak defect on a small rig;
- bearing kinematics 0.5-3 % off catalog (rolling-element slip); outer-race
  defects anywhere from the load-zone centre to opposite it (steady or
  1x-modulated impacts); ball faults with cage modulation 0.4-1 deep (FTF
  sidebands), an inner-race strike 0.3-1 of the outer one (near 1 the
  1xBSF spin line all but vanishes; lower, it rivals 2xBSF) and a spin-axis
  wander of 0-0.9 (strikes that miss on random spins: weaker spin lines
  beside the cage modulation, as real ball faults show);
- sensor mounting: ideal, stud, adhesive or magnet (mounted resonance
  +-30 % of the mount's nominal, Q 5-30); noise floor 0.002-0.1 m/s^2 and a
  sensor gain error of 0.5-2x;
- operating point ("load", pumps only): blade-pass growth from running off
  the best efficiency point, severity 0-0.25 on every pump, faulted or not;
  cavitation's impulsive, blade-pass-pulsed broadband energy rises with it;
- two sensor axes per machine (horizontal and axial).

Held-out split (``split="test"``): unseen seeds (a different seed stream),
unseen speeds (the rpm axis is cut into 150-rpm stripes; training uses even
stripes, test odd ones) and unseen resonances (log-frequency cut into nine
stripes, likewise). The same 8 conditions appear in both. The calibration
split (``split="calib"``, for the temperature) has its own seed stream and
either parity per machine: a served model meets machines the simulator did
not model exactly, so its confidence is calibrated on seen and unseen
speeds and resonances alike (an in-distribution split sharpens it, and the
held-out split then finds it over-confident).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

import dsp
from simulator import (
    BEARINGS,
    MOUNTS,
    FaultConfig,
    PumpBearing,
    PumpConfig,
    Resonance,
    SensorConfig,
    SimulatedSource,
    SpeedProfile,
)
from simulator.pump import Axis, Mount
from simulator.synth import impact_severity, mean_impact_factor

from .replay import bearing_asset, edge_reports

Split = Literal["train", "test", "calib"]
Machine = Literal["pump", "motor", "rig"]
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
SAMPLE_RATES: tuple[float, ...] = (12000.0, 20000.0, 20480.0, 25600.0, 48000.0, 51200.0)
RPM_RANGE = (600.0, 3600.0)
RPM_STRIPE = 150.0
RES_RANGE_HZ = (400.0, 0.45)  # lowest mode (Hz), highest as a fraction of fs
RES_STRIPES = 9  # odd: the training (even) stripes hold both ends of the range
SEVERITY = (0.4, 1.0)  # shaft-line and flow faults (ISO zones C-D at 1)
IMPACT_RATIO = (5.0, 200.0)  # bearing impacts' peak / the machine's broadband RMS
SLIP_PCT = (0.5, 3.0)  # rolling-element slip: lines this far off catalog
GIVEN_RPM_ERROR = (0.01, 0.03)  # a given (not measured) speed is off by this fraction
RATED_RPM_ERROR = 0.04  # the asset's rated speed is within this fraction of the true one
MACHINES: tuple[Machine, ...] = ("pump", "motor", "rig")
_MACHINE_P = (0.5, 0.25, 0.25)
_KIND = {"pump": "centrifugal pump", "motor": "electric motor", "rig": "test rig"}
# log-uniform ranges per machine type: healthy shaft-line level (x nominal, ~0.8 mm/s at 1x)
# and broadband structural response (m/s^2 RMS)
_SHAFT_LEVEL = {"pump": (0.3, 2.0), "motor": (0.1, 1.0), "rig": (0.1, 0.6)}
_STRUCTURE_RMS = {"pump": (0.3, 3.0), "motor": (0.05, 1.5), "rig": (0.2, 3.0)}
_MOUNTS: tuple[Mount, ...] = ("ideal", "stud", "adhesive", "magnet")
_DESIGNATIONS = tuple(d for d in BEARINGS if d != "ZA-2115")
BEARING_KINDS = ("outer_race", "inner_race", "ball")
_SPLIT_SALT = {"train": 0x7A1, "test": 0x7E5, "calib": 0xCA1}


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


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _resonances(rng: np.random.Generator, fs: float, parity: int) -> tuple[Resonance, ...]:
    """1-4 modes anywhere from 400 Hz to 0.45 fs (log-frequency stripes of ``parity``)."""
    lo, hi = math.log(RES_RANGE_HZ[0]), math.log(RES_RANGE_HZ[1] * fs)
    width = (hi - lo) / RES_STRIPES
    k = int(rng.integers(1, 5))
    freqs = sorted(math.exp(_striped(rng, lo, hi, width, parity)) for _ in range(k))
    gains = [1.0, *(_log_uniform(rng, 0.2, 1.0) for _ in range(k - 1))]
    rng.shuffle(gains)  # the strongest mode is anywhere, not always the lowest
    return tuple(
        Resonance(f, _log_uniform(rng, 0.01, 0.1), float(g))
        for f, g in zip(freqs, gains, strict=True)
    )


def _sensor(rng: np.random.Generator, name: str, axis: Axis) -> SensorConfig:
    mount: Mount = _MOUNTS[int(rng.integers(len(_MOUNTS)))]
    if mount == "ideal":
        return SensorConfig(name=name, axis=axis)
    hz, _ = MOUNTS[mount]
    return SensorConfig(name=name, axis=axis, mount=mount,
                        mount_hz=hz * float(rng.uniform(0.7, 1.3)),
                        mount_q=_log_uniform(rng, 5.0, 30.0))


def _fault(rng: np.random.Generator, kind: str, background: float) -> FaultConfig:
    """One fault of ``kind``; a bearing defect's impacts are sized against ``background``
    (the machine's broadband RMS, m/s^2) by :data:`IMPACT_RATIO`."""
    sev = float(rng.uniform(*SEVERITY))
    if kind == "outer_race":  # anywhere from the load-zone centre to opposite it
        f = FaultConfig(kind="outer_race", severity=sev,
                        position_deg=float(rng.uniform(0.0, 180.0)))
    elif kind == "ball":
        f = FaultConfig(kind="ball", severity=sev, cage_depth=float(rng.uniform(0.4, 1.0)),
                        race_ratio=float(rng.uniform(0.3, 1.0)),
                        spin_wander=float(rng.uniform(0.0, 0.9)))
    else:
        f = FaultConfig(kind=kind, severity=sev)  # type: ignore[arg-type]
    if kind in BEARING_KINDS:  # the mean impact rings at IMPACT_RATIO x the background
        peak = _log_uniform(rng, *IMPACT_RATIO) * background / mean_impact_factor(f)
        f = dataclasses.replace(f, severity=max(impact_severity(kind, peak), 0.01))
    return f


def random_pump(
    rng: np.random.Generator, cls: str, *, split: Split, name: str = "p",
    machine: Machine | None = None,
) -> tuple[PumpConfig, float]:
    """One sample machine of class ``cls`` and its sensor gain error.

    ``machine`` (default: drawn; cavitation only on pumps) is the machine type.
    """
    # calibration: either parity, so the temperature sees seen and unseen speeds/resonances
    parity = 0 if split == "train" else 1 if split == "test" else int(rng.integers(2))
    kind = CLASS_FAULTS[cls]
    if machine is None:
        machine = "pump" if kind == "cavitation" else MACHINES[
            int(rng.choice(len(MACHINES), p=_MACHINE_P))]
    fs = float(rng.choice(SAMPLE_RATES))
    rpm = _striped(rng, *RPM_RANGE, RPM_STRIPE, parity)
    speed = SpeedProfile(
        mode="drift", rpm=rpm, drift_pct=float(rng.uniform(0.0, 0.5)),
        drift_period_s=float(rng.uniform(30.0, 300.0)),
    )
    bearing = BEARINGS[str(rng.choice(_DESIGNATIONS))]
    faults: list[FaultConfig] = []
    if machine == "pump":  # operating point
        faults.append(FaultConfig(kind="flow", severity=float(rng.uniform(0.0, 0.25))))
    cfg = PumpConfig(
        name=name,
        fs=fs,
        speed=speed,
        vanes=int(rng.integers(3, 9)) if machine == "pump" else 0,
        bearings=(PumpBearing(bearing, "DE", float(rng.uniform(*SLIP_PCT))),),
        sensors=(_sensor(rng, "de_h", "horizontal"), _sensor(rng, "de_a", "axial")),
        resonances=_resonances(rng, fs, parity),
        noise_floor=_log_uniform(rng, 0.002, 0.1),
        shaft_level=_log_uniform(rng, *_SHAFT_LEVEL[machine]),
        structure_rms=_log_uniform(rng, *_STRUCTURE_RMS[machine]),
        kind=_KIND[machine],
        faults=tuple(faults),
    )
    if kind is not None:
        cfg = cfg.with_faults(*cfg.faults, _fault(rng, kind, background(cfg)))
    gain = _log_uniform(rng, 0.5, 2.0)
    return cfg, gain


def background(cfg: PumpConfig) -> float:
    """A machine's broadband background (m/s^2 RMS): structural response and noise floor."""
    return math.hypot(cfg.structure_rms, cfg.noise_floor)


def pump_reports(
    cfg: PumpConfig,
    *,
    seed: int,
    seconds: int,
    gain: float = 1.0,
    tachometer: bool = True,
    start_s: int = 0,
    channels: tuple[int, ...] | None = None,
    given_rpm_error: float = 0.0,
    rated_rpm_error: float = 0.0,
) -> list[dsp.Report]:
    """``seconds`` 1 s reports per channel of a simulated pump (from ``start_s`` on).

    ``tachometer``: the report is given a speed (else the edge estimates it),
    ``given_rpm_error`` off the true one (0: a tachometer; a few percent: a
    nameplate or drive setpoint). The asset's rated speed is the nominal
    speed ``rated_rpm_error`` off, rounded to 10 rpm.
    """
    src = SimulatedSource(cfg, seed=seed)
    n = round(cfg.fs)
    if start_s:
        src.read(start_s * n)
    block = src.read(seconds * n)
    truth = block.truth["pumps"][cfg.name]
    b = cfg.bearings[0].geometry
    asset = bearing_asset(
        b.designation, b.n_balls, b.ball_d_mm, b.pitch_d_mm, b.contact_deg,
        vanes=cfg.vanes or None, rated_rpm=round(cfg.speed.rpm * (1 + rated_rpm_error), -1),
        kind=cfg.kind,
    )
    rpm = float(truth["rpm"]) * (1 + given_rpm_error) if tachometer else None
    out: list[dsp.Report] = []
    for c, sensor in enumerate(cfg.sensors):
        if channels is not None and c not in channels:
            continue
        x = block.samples[c] * np.float32(gain)
        out += edge_reports(
            x, cfg.fs, asset=asset, rpm=rpm, measured=given_rpm_error == 0.0, pump=cfg.name,
            channel=sensor.name, seq0=len(out),
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
    """Labelled reports of ``pumps_per_class`` random pumps per class.

    Only reports that carry their class's evidence are kept (:func:`evident`);
    a machine none of whose reports does is redrawn, so every class keeps
    ``pumps_per_class`` machines.
    """
    rng = np.random.default_rng([seed, _SPLIT_SALT[split]])
    reports: list[dsp.Report] = []
    labels: list[str] = []
    groups: list[int] = []
    total = pumps_per_class * len(classes)
    for i in range(total):
        cls = classes[i % len(classes)]
        reps: list[dsp.Report] = []
        for _ in range(REDRAWS):  # a machine none of whose reports shows its class: redrawn
            cfg, gain = random_pump(rng, cls, split=split, name=f"{split}{i}")
            pump_seed = int(rng.integers(0, 2**31)) ^ _SPLIT_SALT[split]
            given, given_error, rated_error = report_speed(rng)
            reps = pump_reports(
                cfg, seed=pump_seed, seconds=seconds, gain=gain, tachometer=given,
                given_rpm_error=given_error, rated_rpm_error=rated_error,
            )
            reps = [r for r in reps if evident(r, cls)]
            if reps:
                break
        reports += reps
        labels += [cls] * len(reps)
        groups += [i] * len(reps)
        if progress is not None:
            progress(i + 1, total)
    return LabelledReports(reports, labels, groups)


#: A bearing-fault report names its class only when the defect's envelope line stands at
#: least this many times above the envelope floor (about 10 dB, the usual detection rule).
EVIDENCE_MIN = 3.0
REDRAWS = 20  # tries per machine to draw one whose class shows (see evident)
_EVIDENCE = {"bearing_outer": "env_bpfo", "bearing_inner": "env_bpfi", "bearing_ball": "env_bsf"}


def evident(report: dsp.Report, cls: str) -> bool:
    """Whether ``report`` carries the evidence of its class ``cls``.

    A bearing defect's class is learnable only from the envelope line it
    rings at: a weak defect (in its load zone's shadow, or barely above a
    loud machine's background) whose line stays below :data:`EVIDENCE_MIN`
    times the floor looks like a healthy machine in every feature, and
    labelled as a fault it teaches the classifier to name faults on reports
    without any fault signature. Such reports are left out of the simulated
    sets (every split alike); the anomaly baseline, not the class name, is
    what catches a defect that weak. Other classes are always kept.
    """
    key = _EVIDENCE.get(cls)
    if key is None:
        return True
    v = getattr(report.features, key)
    return v is not None and v >= EVIDENCE_MIN


def report_speed(rng: np.random.Generator) -> tuple[bool, float, float]:
    """How a sample's reports get their speed: (given?, given error, rated error).

    A third each: a tachometer (exact), a given speed 1-4 % off (either
    sign), no speed (the edge estimates it); the rated speed is within 4 %.
    """
    mode = int(rng.integers(3))
    err = float(rng.uniform(*GIVEN_RPM_ERROR)) * float(rng.choice([-1.0, 1.0]))
    rated = float(rng.uniform(-RATED_RPM_ERROR, RATED_RPM_ERROR))
    return mode < 2, err if mode == 1 else 0.0, rated


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
        cls = faults[i % len(faults)]
        kind = CLASS_FAULTS[cls]
        assert kind is not None
        cfg, gain = random_pump(rng, "healthy", split="test", name=f"a{i}",
                                machine="pump" if kind == "cavitation" else None)
        pump_seed = int(rng.integers(0, 2**31))
        bad = cfg.with_faults(*cfg.faults, _fault(rng, kind, background(cfg)))
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
