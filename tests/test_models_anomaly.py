"""Per-pump baselines: held-out calibration, separation, files in, served through bundles."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

import dsp
from models.serving.baseline import FLEET, Baselines
from models.serving.bundle import load_bundle, write_bundle
from models.serving.handler import score
from models.training.anomaly import (
    BASELINE_FEATURES,
    BaselineConfig,
    fit_pump_baselines,
    score_reports,
    shrunk_whitener,
)
from models.training.evaluation import auroc
from models.training.train_sim import AnomalySet, pump_reports, random_pump, simulate_anomaly
from pumpwatch.cli import main
from simulator.recordings import read_recording

SEED = 5


@pytest.fixture(scope="module")
def aset() -> AnomalySet:
    return simulate_anomaly(7, seed=SEED, fit_s=9, test_s=2)


def test_healthy_vs_faulted_windows_of_the_same_pumps(aset: AnomalySet) -> None:
    neg: list[float] = []
    pos: list[float] = []
    alarms = 0
    for fit, healthy, faulty, kind in zip(
        aset.fit, aset.healthy, aset.faulty, aset.fault_kinds, strict=True
    ):
        b = fit_pump_baselines(fit)
        sh, th = score_reports(b, healthy)
        sf, tf = score_reports(b, faulty)
        assert np.all(sf >= tf), f"{kind}: missed faulted windows {sf} < {tf} (seed {SEED})"
        alarms += int(np.sum(sh >= th))
        neg += sh.tolist()
        pos += sf.tolist()
    assert auroc(neg, pos) >= 0.99, f"seed {SEED}"
    assert alarms <= 1, f"{alarms} false alarms in {len(neg)} healthy windows (seed {SEED})"


def test_threshold_comes_from_held_out_reports() -> None:
    rng = np.random.default_rng(SEED)
    cfg, gain = random_pump(rng, "healthy", split="test", name="pX")
    reps = pump_reports(cfg, seed=SEED, seconds=9, gain=gain, channels=(0,))
    b = fit_pump_baselines(reps, BaselineConfig(margin=1.0, min_threshold=0.0))
    # Refit on the first two thirds only: the held-out third's scores set the threshold.
    first = fit_pump_baselines(reps[:6], BaselineConfig(calibrate_share=1e-9, min_threshold=0.0,
                                                        margin=1.0, min_reports=3))
    assert first.pumps == ("pX",)
    held_out, _ = score_reports(first, reps[6:])
    assert b.threshold[0] == pytest.approx(np.quantile(held_out, 0.995), rel=0.3)
    assert int(b.n_fit[0]) == 9


def test_pumps_with_too_few_reports_are_skipped_and_fleet_row(aset: AnomalySet) -> None:
    reports = aset.fit[0] + aset.fit[1][:3]
    b = fit_pump_baselines(reports, BaselineConfig(min_reports=6), fleet=True)
    assert b.pumps == (aset.fit[0][0].pump, FLEET)
    with pytest.raises(ValueError, match="false_alarm_rate"):
        fit_pump_baselines(reports, BaselineConfig(false_alarm_rate=0.0))


def test_bundle_serves_own_and_fleet_scores(tmp_path: Path, aset: AnomalySet) -> None:
    b = fit_pump_baselines(aset.fit[0] + aset.fit[1])
    bundle = load_bundle(write_bundle(tmp_path / "b", model_version="bl-1", baselines=b))
    stranger = msgspec.structs.replace(aset.healthy[2][0], pump="never-seen")
    resp = score(bundle, [aset.healthy[0][0], aset.faulty[1][0], stranger])
    own, bad, other = resp.results
    assert own.baseline == "pump" and not own.anomalous
    assert bad.baseline == "pump" and bad.anomalous
    assert any(e.name.startswith("z:") for e in bad.evidence)
    assert other.baseline == "fleet"  # no baseline for this pump: generic score, flagged


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_baseline_fit_from_recordings(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(SEED)
    cfg, _ = random_pump(rng, "healthy", split="train", name="rec")
    from simulator import SimulatedSource

    x = SimulatedSource(cfg, seed=SEED).read(round(cfg.fs) * 8).samples[0]
    files = []
    for k, part in enumerate(np.split(x, 2)):
        f = tmp_path / f"part{k}{suffix}"
        if suffix == ".npy":
            np.save(f, part)
        else:
            np.savetxt(f, part[:, None], delimiter=",", fmt="%.6g")
        files.append(str(f))
    assert read_recording(files[0], fs=cfg.fs).n_samples == x.size // 2
    b = cfg.bearings[0].geometry
    out = tmp_path / "out"
    code = main(["baseline", "fit", "--pump", "P-7", "--from", *files, "--fs", str(cfg.fs),
                 "--bearing", f"{b.n_balls},{b.ball_d_mm},{b.pitch_d_mm}",
                 "--rpm", str(cfg.speed.rpm), "--hop", "0.5", "--out", str(out)])
    assert code == 0
    base = Baselines.load(out / "baselines.npz")
    assert base.pumps == ("P-7",)
    # one 8 s stream (the second file follows the first), half-overlapping 1 s reports
    assert int(base.n_fit[0]) == 15
    # no source, two sources, --from without exactly one pump: usage errors
    assert main(["baseline", "fit", "--out", str(out)]) == 2
    assert main(["baseline", "fit", "--from", files[0], "--out", str(out)]) == 2


def test_unreadable_recording_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"not numpy")
    assert main(["baseline", "fit", "--pump", "p", "--from", str(bad), "--fs", "1000",
                 "--out", str(tmp_path / "o")]) == 1
    assert main(["baseline", "fit", "--pump", "p", "--from", str(tmp_path / "none.npy"),
                 "--out", str(tmp_path / "o")]) == 1


def test_scores_are_finite_for_every_report(aset: AnomalySet) -> None:
    b = fit_pump_baselines(aset.fit[3])
    s, t = score_reports(b, aset.faulty[3] + aset.healthy[3])
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(t))
    assert isinstance(aset.fit[3][0], dsp.Report)


def test_mahalanobis_counts_correlated_features_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(SEED)
    common = rng.normal(size=(400, 1))
    x = np.hstack([common + 0.1 * rng.normal(size=(400, 1)) for _ in range(3)])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    w, lam = shrunk_whitener(x, mean, scale)
    assert 0.0 <= lam < 0.2, f"400 reports of 3 features need little shrinkage, got {lam}"
    along = np.array([[2.0, 2.0, 2.0]]) * scale + mean  # all three move together: one cause
    against = np.array([[2.0, -2.0, 2.0]]) * scale + mean  # breaks the healthy correlation
    d = [float(np.linalg.norm(w @ ((v - mean) / scale)[0])) for v in (along, against)]
    assert d[0] < 2.5 < 10.0 < d[1], d
    few = x[:4]
    assert shrunk_whitener(few, few.mean(axis=0), few.std(axis=0) + 1e-3)[1] > 0.3

    # the artifact keeps the whitening; merging with a plain baseline keeps both exact
    aset = simulate_anomaly(1, seed=SEED, fit_s=9, test_s=1)
    b = fit_pump_baselines(aset.fit[0])
    k = len(BASELINE_FEATURES)
    assert b.whiten is not None and b.whiten.shape == (1, k, k)
    b.save(tmp_path / "b.npz")
    back = Baselines.load(tmp_path / "b.npz")
    assert back.whiten is not None
    np.testing.assert_array_equal(back.whiten, b.whiten)
    plain = fit_pump_baselines(
        [msgspec.structs.replace(r, pump="plain") for r in aset.fit[0]],
        BaselineConfig(correlation=False),
    )
    assert plain.whiten is None
    both = b.merged(plain)
    s1, _ = score_reports(b, aset.healthy[0])
    s2, _ = score_reports(both, aset.healthy[0])
    np.testing.assert_allclose(s1, s2)
    s3, _ = score_reports(plain, [msgspec.structs.replace(r, pump="plain")
                                  for r in aset.healthy[0]])
    s4, _ = score_reports(both, [msgspec.structs.replace(r, pump="plain")
                                 for r in aset.healthy[0]])
    np.testing.assert_allclose(s3, s4)
