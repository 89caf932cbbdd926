"""The decision rule (models.serving.decision), one test per rule, on signals built from physics.

Every signal is a synthetic numpy vibration (shaft line, noise, impact trains
ringing at a structural resonance) analysed by the edge's own code
(``dsp.analyze`` + ``dsp.make_report``), then scored by the handler with a real
bundle. Rule 1 (quality), 2 (physics), 3 (out of distribution), 4 (classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest

import dsp
from dsp.report import Q_CLIPPED, Q_CONSTANT, Q_DROPOUT, Q_NONFINITE
from dsp.results import Result
from models.serving.baseline import fit_baselines
from models.serving.bundle import Bundle, builtin_bundle, load_bundle, write_bundle
from models.serving.classifier import SoftmaxClassifier
from models.serving.decision import CLIPPED_SHARE
from models.serving.handler import score
from models.serving.statistics import attach_statistics
from models.training.statistics import training_statistics, write_statistics

B6205 = dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")
ORDERS = dsp.bearing_orders(9, 7.94, 39.04)
RES_HZ = 3200.0
PUMP = dsp.Asset(bearings=[B6205], vanes=6)  # an impeller: cavitation is possible


def signal(
    fs: float, *, rpm: float = 1800.0, seed: int = 0, shaft: float = 0.5, noise: float = 0.3,
    rate_order: float | None = None, amp: float = 0.0, slip: float = 0.0,
    alternate: float = 1.0, cage_order: float | None = None, seconds: float = 1.0,
) -> np.ndarray:
    """Shaft line + noise + an impact train at ``rate_order x fr x (1 - slip)`` ringing at
    3.2 kHz. ``alternate`` < 1 weakens every other impact (a ball striking the races in
    turn: a BSF line beside 2xBSF); ``cage_order`` modulates the impacts at that rate."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fs)
    t = np.arange(n) / fs
    fr = rpm / 60.0
    x = shaft * np.sin(2 * np.pi * fr * t + 0.4) + noise * rng.standard_normal(n)
    if rate_order is not None and amp > 0:
        rate = rate_order * fr * (1.0 - slip)
        times = np.arange(0.0, seconds, 1.0 / rate)
        times += rng.normal(0.0, 0.002 / rate, times.size)  # a little jitter, as slip does
        k = np.clip(np.round(times * fs).astype(int), 0, n - 1)
        a = np.full(k.size, amp)
        a[1::2] *= alternate
        if cage_order is not None:
            a *= 1.0 + 0.8 * np.cos(2 * np.pi * cage_order * fr * times)
        imp = np.zeros(n)
        np.add.at(imp, k, a)
        m = round(0.004 * fs)
        tt = np.arange(m) / fs
        ring = np.exp(-900.0 * tt) * np.sin(2 * np.pi * RES_HZ * tt)
        x += np.convolve(imp, ring)[:n]
    return x.astype(np.float32)


def report(
    x: np.ndarray, fs: float, *, rpm: float | None = 1800.0, asset: dsp.Asset | None = None,
    full_scale: float | None = None, seq: int = 0, pump: str = "p1",
    source: str = "given",
) -> dsp.Report:
    cfg = dsp.ReportConfig().at_rate(fs)
    spec = dsp.ChannelSpec(asset=asset or dsp.Asset(bearings=[B6205]), rpm=rpm,
                           rpm_source=source, full_scale=full_scale)
    (res,) = dsp.analyze(x[None, :], cfg, [spec])
    return dsp.make_report(res, cfg, spec, device="d", epoch=1, seq=seq, site="s", pump=pump,
                           channel="x", t0_ns=seq * 10**9)


def one(bundle: Bundle, r: dsp.Report) -> Result:
    (res,) = score(bundle, [r]).results
    return res


def names(res: Result) -> set[str]:
    return {e.name for e in res.evidence}


class _Impacts(TypedDict):
    rate_order: float
    amp: float


FS = 25600.0
OUTER: _Impacts = {"rate_order": ORDERS["bpfo"], "amp": 4.0}


# --- rule 1: data quality ----------------------------------------------------------------


def test_dead_channel_is_a_sensor_fault_not_healthy() -> None:
    r = report(np.full(round(FS), 0.02, dtype=np.float32), FS)
    assert r.quality.flags & Q_CONSTANT
    res = one(builtin_bundle(), r)
    assert res.condition == "sensor_fault" and res.decided_by == "quality"
    assert not res.anomalous and "sensor_fault:constant" in names(res)


def test_intermittently_dead_channel_is_detected_at_the_edge_and_a_sensor_fault() -> None:
    x = signal(FS, **OUTER)
    live = report(x, FS)
    assert not live.quality.flags & Q_DROPOUT and live.quality.dead == 0  # a live chain
    x[5000:7560] = 0.0  # 100 ms of nothing: a loose connector
    r = report(x, FS)
    assert r.quality.flags & Q_DROPOUT and r.quality.dead == 2560
    assert not r.quality.flags & Q_CONSTANT
    res = one(builtin_bundle(), r)
    assert res.condition == "sensor_fault" and res.decided_by == "quality"
    assert "sensor_fault:dropout" in names(res) and not res.anomalous
    short = signal(FS, **OUTER)
    short[5000:5100] = 0.0  # 4 ms: shorter than a dropout
    assert not report(short, FS).quality.flags & Q_DROPOUT


def test_non_finite_samples_are_a_sensor_fault() -> None:
    x = signal(FS, **OUTER)
    x[[100, 9000]] = [np.nan, np.inf]
    r = report(x, FS)
    assert r.quality.flags & Q_NONFINITE and r.quality.nonfinite == 2
    res = one(builtin_bundle(), r)
    assert res.condition == "sensor_fault" and "sensor_fault:nonfinite" in names(res)


def test_heavy_clipping_is_a_sensor_fault_a_few_clipped_impacts_are_still_diagnosed() -> None:
    x = signal(FS, **OUTER)
    heavy = report(x, FS, full_scale=0.3)  # the range is below the signal itself
    assert heavy.quality.clipped / FS >= CLIPPED_SHARE
    res = one(builtin_bundle(), heavy)
    assert res.condition == "sensor_fault" and "sensor_fault:clipped" in names(res)
    # full scale between the background and the impacts' first peaks: a few samples clip
    peaks = np.sort(np.abs(x))[::-1]
    fs_level = float(peaks[40])
    light = report(np.clip(x, -fs_level, fs_level), FS, full_scale=fs_level)
    assert light.quality.flags & Q_CLIPPED and 0 < light.quality.clipped < CLIPPED_SHARE * FS
    res = one(builtin_bundle(), light)
    assert res.condition == "bearing_outer" and res.decided_by == "physics"
    assert "quality:clipped" in names(res)


# --- rule 2: physics ---------------------------------------------------------------------


def _stubborn_classifier(say: str, *, then: str | None = None) -> SoftmaxClassifier:
    """A real softmax whose bias says ``say`` whatever the features (a confident wrong
    model); ``then``: the class it would say next (the rest of its mass)."""
    classes = ("healthy", "cavitation", "bearing_outer", "unknown")
    b = np.array([0.0, 0.0, 0.0, 0.0])
    b[classes.index(say)] = 8.0
    if then is not None:
        b[classes.index(then)] = 5.0
    return SoftmaxClassifier(feature_names=("kurtosis",), classes=classes, mean=np.zeros(1),
                             scale=np.ones(1), W=np.zeros((1, 4)), b=b)


def test_a_clear_family_names_the_defect_whatever_the_classifier_says(tmp_path: Path) -> None:
    bundle = load_bundle(write_bundle(tmp_path / "b", model_version="stubborn",
                                      classifier=_stubborn_classifier("cavitation")))
    fault = one(bundle, report(signal(FS, slip=0.02, **OUTER), FS))  # 2 % below catalog
    assert fault.condition == "bearing_outer" and fault.decided_by == "physics"
    assert fault.probabilities["cavitation"] > 0.9  # the classifier's say is kept, overruled
    fam = next(e for e in fault.evidence if e.name == "env_family:bearing_outer")
    assert "named" in fam.note and "lit: 1x" in fam.note and fam.value > 0.3
    healthy = one(bundle, report(signal(FS, seed=3), FS, asset=PUMP))
    assert healthy.condition == "cavitation" and healthy.decided_by == "classifier"


def test_cavitation_is_ruled_out_on_a_machine_without_an_impeller(tmp_path: Path) -> None:
    """Rule 4 conditions the classifier on the machine: cavitation needs an impeller, so
    on an asset that states no vanes (a motor, a test rig) the classifier's cavitation
    is ruled out and its other classes decide, at their odds; on a pump it stands."""
    leaning = load_bundle(write_bundle(tmp_path / "l", model_version="leaning",
                                       classifier=_stubborn_classifier("cavitation",
                                                                       then="healthy")))
    x = signal(FS, seed=3)
    rig = one(leaning, report(x, FS))  # bearings only: no impeller stated
    assert rig.condition == "healthy" and rig.decided_by == "classifier", rig.evidence
    assert rig.probabilities["cavitation"] > 0.9  # what the classifier said is kept
    ruled = next(e for e in rig.evidence if e.name == "ruled_out")
    assert "cavitation" in ruled.note and ruled.value > 0.9
    pump = one(leaning, report(x, FS, asset=PUMP))
    assert pump.condition == "cavitation" and "ruled_out" not in names(pump)
    # a classifier with nothing else to say is unsure once cavitation is ruled out
    stubborn = load_bundle(write_bundle(tmp_path / "s", model_version="stubborn",
                                        classifier=_stubborn_classifier("cavitation")))
    assert one(stubborn, report(x, FS)).condition == "unknown"


@pytest.mark.parametrize("fs", [12000.0, 25600.0, 51200.0])
def test_inner_race_with_shaft_sidebands_at_any_rate(fs: float) -> None:
    x = signal(fs, rate_order=ORDERS["bpfi"], amp=4.0, cage_order=1.0, slip=0.015, seed=4)
    res = one(builtin_bundle(), report(x, fs))
    assert res.condition == "bearing_inner" and res.decided_by == "physics", res.evidence


def test_ball_fault_named_from_bsf_lines_and_cage_modulation() -> None:
    # 2xBSF impacts, alternate ones weaker (BSF line), modulated at the cage rate (FTF)
    x = signal(FS, rate_order=2 * ORDERS["bsf"], amp=4.0, alternate=0.4,
               cage_order=ORDERS["ftf"], slip=0.02, seed=5)
    res = one(builtin_bundle(), report(x, FS))
    assert res.condition == "bearing_ball" and res.decided_by == "physics", res.evidence
    fam = next(e for e in res.evidence if e.name == "env_family:bearing_ball")
    assert "BSF" in fam.note and "FTF" in fam.note


def test_healthy_machine_names_no_defect() -> None:
    for seed in range(6):
        res = one(builtin_bundle(), report(signal(FS, seed=10 + seed, shaft=0.1), FS))
        assert res.condition == "healthy" and res.decided_by == "classifier", seed
        assert not any(e.name.startswith("env_family:") for e in res.evidence)


def test_shaft_order_coincidence_does_not_count_alone() -> None:
    # BPFO = 3.0 and BPFI = 5.0 orders exactly: n = 8, d / D = 0.25
    odd = dsp.Asset(bearings=[dsp.Bearing(n_balls=8, ball_d_mm=10.0, pitch_d_mm=40.0)])
    # impacts once per revolution (looseness / a rub): envelope lines at every shaft order
    x = signal(FS, rpm=1500.0, rate_order=1.0, amp=4.0, seed=6)
    res = one(builtin_bundle(), report(x, FS, rpm=1500.0, asset=odd))
    assert res.condition not in ("bearing_outer", "bearing_inner"), res.evidence
    assert res.decided_by != "physics"
    assert not any("named" in e.note for e in res.evidence if e.name.startswith("env_family:"))



def with_envelope(r: dsp.Report, lines_db: dict[float, float], *, seed: int = 0) -> dsp.Report:
    """``r`` with its envelope spectrum replaced: a smooth noise floor (gamma, 16 degrees
    of freedom: no line of its own reaches 2x its median) plus a line of ``lines_db[f]``
    dB over the floor's median at each ``f`` Hz (2 Hz lines to 500 Hz). What a single
    noisy report's floor does is the simulated false-alarm test's business."""
    import msgspec

    from dsp import quantize

    rng = np.random.default_rng(seed)
    n, df = 250, 2.0
    power = rng.gamma(16.0, 1.0, n)
    power /= np.median(power)
    for f, level in lines_db.items():
        power[round(f / df)] = 10 ** (level / 10)
    codes, off = quantize.quantize_db(quantize.to_db(power), 1.0)
    env = dsp.Spectrum(df=df, n=n, step_db=1.0, offset_db=float(off),
                       data=quantize.pack_codes(codes))
    return msgspec.structs.replace(r, envelope=env)


def test_joint_evidence_names_a_family_without_a_4x_anchor() -> None:
    """Three lines of one family at 3x (5 dB) off the shaft orders, none at 4x: a family
    (joint evidence); two such lines are not, whatever their comb."""
    fr = 1800.0 / 60.0
    bpfo = ORDERS["bpfo"] * fr
    base = report(signal(FS, seed=12, shaft=0.1), FS)
    three = with_envelope(base, {bpfo: 5.0, 2 * bpfo: 5.0, 3 * bpfo: 5.0})
    res = one(builtin_bundle(), three)
    assert res.condition == "bearing_outer" and res.decided_by == "physics", res.evidence
    fam = next(e for e in res.evidence if e.name == "env_family:bearing_outer")
    assert "named" in fam.note and "1x 3.2x" in fam.note and "3x 3.2x" in fam.note
    two = one(builtin_bundle(), with_envelope(base, {bpfo: 5.0, 2 * bpfo: 5.0}))
    assert two.decided_by != "physics", two.evidence


def test_joint_evidence_for_a_ball_fault_from_its_own_lines() -> None:
    """BSF, 2xBSF and a cage sideband at 3x: the rolling-element family is named."""
    fr = 1800.0 / 60.0
    bsf, ftf = ORDERS["bsf"] * fr, ORDERS["ftf"] * fr
    base = report(signal(FS, seed=13, shaft=0.1), FS)
    res = one(builtin_bundle(), with_envelope(base, {bsf: 5.0, 2 * bsf: 5.0,
                                                     2 * bsf + ftf: 5.0}))
    assert res.condition == "bearing_ball" and res.decided_by == "physics", res.evidence


def test_joint_evidence_false_alarm_rate_on_simulated_machines() -> None:
    """The joint rule's stated false-alarm rate: on simulated healthy machines and
    machines with other faults (a fresh seed, not the one the rule was checked on) it
    names no bearing family that the anchored rule alone would not."""
    from models.serving import _diagnose_batch as db
    from models.training.train_sim import simulate

    sim = simulate(3, seed=23, split="test", seconds=2)
    calls = db.diagnose_bearings(sim.reports)
    joint = [c.label for c, y in zip(calls, sim.labels, strict=True)
             if c.label is not None and c.label != y and "joint" in " ".join(
                 e.note for e in c.evidence)]
    assert len(sim.reports) > 80
    assert len(joint) <= 0.01 * len(sim.reports), joint


def test_weak_family_is_named_only_on_an_anomalous_machine(tmp_path: Path) -> None:
    """One principal line 3x (5 dB) off the shaft orders, no other family's: named only
    where the machine's baseline calls it anomalous and the classifier names no fault."""
    fr = 1800.0 / 60.0
    bsf2, bpfi = 2 * ORDERS["bsf"] * fr * 0.99, ORDERS["bpfi"] * fr
    quiet = [report(signal(FS, seed=70 + s, shaft=0.1), FS, seq=s, pump="w") for s in range(12)]
    bundle = load_bundle(write_bundle(tmp_path / "w", model_version="weak-1",
                                      classifier=_stubborn_classifier("healthy"),
                                      baselines=fit_baselines(quiet[:10], min_reports=5)))
    calm = one(bundle, with_envelope(quiet[11], {bsf2: 5.0}))
    assert not calm.anomalous and calm.condition == "healthy", calm.evidence
    fam = next(e for e in calm.evidence if e.name == "env_family:bearing_ball")
    assert "weak" in fam.note and "2xBSF 3.2x" in fam.note
    loud = report(signal(FS, seed=90, shaft=0.1, noise=1.5), FS, seq=30, pump="w")
    res = one(bundle, with_envelope(loud, {bsf2: 5.0}))
    assert res.anomalous and res.condition == "bearing_ball", res.evidence
    assert res.decided_by == "physics"
    assert "weak bearing_ball" in next(e.note for e in res.evidence if e.name == "decision")
    # two families each with a lit principal line (an inner race's BPFI and its upper
    # shaft sideband beside it, not yet a clear family): no weak call, the classifier decides
    both = one(bundle, with_envelope(loud, {bsf2: 5.0, bpfi: 5.0, bpfi + fr: 5.0}))
    assert both.anomalous and both.condition == "healthy" and both.decided_by == "classifier"
    # a classifier that names a fault it is sure of keeps it
    sure = load_bundle(write_bundle(tmp_path / "c", model_version="weak-2",
                                    classifier=_stubborn_classifier("cavitation"),
                                    baselines=fit_baselines(quiet[:10], min_reports=5)))
    loud_pump = report(signal(FS, seed=90, shaft=0.1, noise=1.5), FS, seq=30, pump="w",
                       asset=PUMP)  # cavitation needs an impeller
    res = one(sure, with_envelope(loud_pump, {bsf2: 5.0}))
    assert res.condition == "cavitation" and res.decided_by == "classifier"


def test_weak_family_rate_on_simulated_machines() -> None:
    """The weak candidate's stated rates (a fresh seed): on healthy machines and machines
    with other faults at most 10 % of reports carry one (about 5 % on large draws; the rule
    needs the baseline's flag as well), and on bearing faults no family is clear for it
    names the true defect."""
    from models.serving import _diagnose_batch as db
    from models.training.train_sim import simulate

    sim = simulate(8, seed=29, split="test", seconds=2)
    calls = db.diagnose_bearings(sim.reports)
    null = [c.weak for c, y in zip(calls, sim.labels, strict=True) if not y.startswith("bearing")]
    faults = [(c.weak, y) for c, y in zip(calls, sim.labels, strict=True)
              if y.startswith("bearing") and c.label is None and c.weak is not None]
    assert len(null) > 100
    assert sum(w is not None for w in null) <= 0.10 * len(null), null
    assert faults and all(w == y for w, y in faults), faults


def test_speed_evidence_rated_fallback_widens_the_window() -> None:
    # no shaft line (the edge falls back to the rated speed, 4 % above the true speed)
    x = signal(FS, rpm=1800.0, shaft=0.0, slip=0.01, **OUTER)
    rated = dsp.Asset(bearings=[B6205], rated_rpm=1870.0)
    r = report(x, FS, rpm=None, asset=rated)
    assert r.speed.rpm == 1870.0
    res = one(builtin_bundle(), r)
    assert res.condition == "bearing_outer", res.evidence
    sp = next(e for e in res.evidence if e.name == "speed_used")
    assert "rated" in sp.note and "+-6.0 % (speed)" in sp.note


def test_a_clear_shaft_line_is_preferred_over_a_given_speed_that_disagrees() -> None:
    x = signal(FS, rpm=1800.0, shaft=2.0, **OUTER)
    r = report(x, FS, rpm=1680.0)  # configured 6.7 % low: the window alone would miss BPFO
    res = one(builtin_bundle(), r)
    sp = next(e for e in res.evidence if e.name == "speed_used")
    assert "shaft line" in sp.note and abs(sp.value - 1800.0) < 20.0, sp
    assert res.condition == "bearing_outer" and res.decided_by == "physics"
    agree = one(builtin_bundle(), report(x, FS, rpm=1800.0))
    assert "given" in next(e.note for e in agree.evidence if e.name == "speed_used")


# --- rule 3: out of distribution, rule 4: classifier ---------------------------------------

_FEATS = ("log:rms", "log:velocity_rms", "kurtosis")


def _gated_bundle(tmp_path: Path, train: list[dsp.Report], baseline: list[dsp.Report]) -> Path:
    """A softmax that calls quiet machines imbalance, with training statistics from ``train``."""
    classes = ("healthy", "imbalance", "unknown")
    # log:rms below the training mean -> imbalance, confidently (a classifier extrapolating)
    clf = SoftmaxClassifier(feature_names=_FEATS, classes=classes,
                            mean=np.array([-1.2, 0.0, 0.0]),
                            scale=np.ones(3), W=np.array([[2.0, -6.0, 0], [0, 0, 0],
                                                          [0, 0, 0]]),
                            b=np.array([2.0, 0.0, -4.0]))
    d = write_bundle(tmp_path / "gated", model_version="gated-1", classifier=clf,
                     baselines=fit_baselines(baseline, min_reports=5))
    from models.serving.features import extract

    x = extract(train).matrix(_FEATS)
    write_statistics(d, training_statistics(x, _FEATS, ["healthy"] * len(train), classes))
    attach_statistics(d)
    return d


def test_out_of_distribution_is_healthy_only_when_everything_else_says_so(
    tmp_path: Path,
) -> None:
    train = [report(signal(FS, seed=s), FS, seq=s, pump="t") for s in range(8)]
    quiet = [report(signal(FS, seed=40 + s, shaft=0.01, noise=0.004), FS, seq=s, pump="q")
             for s in range(12)]
    bundle = load_bundle(_gated_bundle(tmp_path, train, quiet[:10]))
    assert bundle.support is not None and bundle.support.names == _FEATS
    inside = one(bundle, train[0])
    assert inside.decided_by == "classifier" and inside.condition == "healthy"
    # a machine unlike the training data, typical for its own baseline, zone A, no signature
    res = one(bundle, quiet[11])
    assert res.probabilities["imbalance"] > 0.5  # what the classifier would have said
    assert res.condition == "healthy" and res.decided_by == "ood" and not res.anomalous
    assert any(n.startswith("ood:log:rms") for n in names(res))
    # the same kind of machine, now anomalous for its own baseline: unknown, not a fault name
    loud = report(signal(FS, seed=60, shaft=0.01, noise=0.03), FS, seq=20, pump="q")
    res = one(bundle, loud)
    assert res.anomalous and res.condition == "unknown" and res.decided_by == "ood"
    # legacy / physics-only bundles: no gate
    assert builtin_bundle().support is None


def test_held_out_simulated_reports_stay_inside_the_support() -> None:
    from models.serving.features import extract
    from models.serving.statistics import TrainingStatistics, _feature
    from models.serving.support import Support
    from models.training.train_sim import simulate
    from models.training.training import FEATURES

    # a training set of a few hundred reports spans the simulator's machines; the gate's
    # support is its per-feature range widened by one robust spread
    train = simulate(10, seed=1, split="train").reports
    test = simulate(2, seed=2, split="test").reports
    stats = training_statistics(extract(train).matrix(FEATURES), FEATURES,
                                ["healthy"] * len(train), ["healthy"])
    feats = {f["name"]: _feature(f) for f in stats["features"] if f["inferred_type"] != "String"}
    support = Support.from_statistics(TrainingStatistics(len(train), feats, {}, {}))
    assert support is not None
    out, which = support.outside(extract(test))
    share = float(out.mean())
    assert share < 0.05, (share, [w for w in which if w][:5])
    far = extract([msgspec_scaled(test[0], 1000.0)])
    assert support.outside(far)[0].all()


def msgspec_scaled(r: dsp.Report, k: float) -> dsp.Report:
    """The report of a machine ``k`` x louder in every band (an unseen kind of machine)."""
    import msgspec

    f = r.features
    f2 = msgspec.structs.replace(f, rms=f.rms * k, peak=f.peak * k,
                                 velocity_rms=f.velocity_rms * k,
                                 band_rms=[b * k for b in f.band_rms])
    return msgspec.structs.replace(r, features=f2)


@pytest.mark.parametrize("fs", [12000.0, 51200.0])
@pytest.mark.parametrize("kind", ["outer_race", "inner_race", "ball"])
def test_simulated_bearing_faults_are_named_by_physics_at_any_rate(kind: str, fs: float) -> None:
    """The simulator's pumps (bearing kinematics, load zone, resonances) at both ends of
    the supported rates: the family search does not depend on the sample rate."""
    from models.training.train_sim import pump_reports
    from simulator import FaultConfig, PumpConfig, SensorConfig, SpeedProfile, lookup_bearing
    from simulator.pump import PumpBearing

    want = {"outer_race": "bearing_outer", "inner_race": "bearing_inner",
            "ball": "bearing_ball"}[kind]
    cfg = PumpConfig(name="r", fs=fs, speed=SpeedProfile(rpm=1797.0),
                     bearings=(PumpBearing(lookup_bearing("6205")),),
                     sensors=(SensorConfig(name="de_h"),),
                     faults=(FaultConfig(kind=kind, severity=0.5),))  # type: ignore[arg-type]
    for res in score(builtin_bundle(), pump_reports(cfg, seed=7, seconds=2)).results:
        assert res.condition == want and res.decided_by == "physics", res.evidence
