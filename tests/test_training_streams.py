"""Training reports are the edge's reports; bearing faults are sized against their machine.

The classifier's training streams must be built exactly as the edge builds
reports (the report config at the stream's own rate, the envelope band
tracked across the stream, the wire codec), and a bearing defect's
visibility must not depend on how loud the machine is.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.labels import replay_reports
from models.serving.features import check_feature_names, extract
from models.training.replay import bearing_asset, edge_reports
from models.training.train_sim import IMPACT_RATIO, background, random_pump
from simulator import SimulatedSource
from simulator.recordings import Recording
from simulator.synth import _IMPACT_PEAK, _impact_scale, impact_severity, mean_impact_factor

ASSET = bearing_asset("6205", 9, 7.94, 39.04, rated_rpm=1800.0)


@pytest.mark.parametrize("fs", [12000.0, 51200.0])
def test_training_stream_reports_equal_the_edges(fs: float) -> None:
    """edge_reports == what ``pumpwatch replay`` builds (ReportBuilder, tracked band)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(int(4 * fs)) * 0.3).astype(np.float32)
    t = np.arange(x.size) / fs
    x += (2.0 * np.sin(2 * np.pi * 29.7 * t)).astype(np.float32)
    ours = edge_reports(x, fs, asset=ASSET, rpm=1782.0, measured=False, pump="p", channel="de")
    rec = Recording(samples=x[np.newaxis], fs=fs, channels=("de",))
    theirs = replay_reports([rec], pump="p", asset=ASSET, rpm=1782.0, full_scale=None).reports
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert a.features == b.features
        assert a.envelope_band == b.envelope_band
        assert a.speed == b.speed
        assert a.spectrum == b.spectrum


def test_impact_severity_inverts_the_impact_size() -> None:
    for kind, peak in [("inner_race", 5.0), ("outer_race", 0.3), ("ball", 120.0)]:
        s = impact_severity(kind, peak)
        assert 0 < s < 1
        assert math.isclose(_IMPACT_PEAK[kind] * float(_impact_scale(np.array([s]))[0]), peak,
                            rel_tol=1e-6)
    assert impact_severity("outer_race", 1e6) == 1.0
    assert impact_severity("outer_race", 0.0) == 0.0


@pytest.mark.parametrize("cls", ["bearing_outer", "bearing_inner", "bearing_ball"])
def test_bearing_fault_visibility_does_not_follow_the_machine_level(cls: str) -> None:
    """The mean impact sits at IMPACT_RATIO x the machine's background on every machine
    (quiet rig or loud pump) unless the severity scale caps it."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        cfg, _gain = random_pump(rng, cls, split="train")
        f = cfg.faults[-1]
        mean_peak = _IMPACT_PEAK[f.kind] * float(_impact_scale(np.array([f.severity]))[0])
        ratio = mean_peak * mean_impact_factor(f) / background(cfg)
        if f.severity < 1.0 and f.severity > 0.01:
            assert IMPACT_RATIO[0] * 0.999 <= ratio <= IMPACT_RATIO[1] * 1.001


def test_ratio_features_are_level_free() -> None:
    """``A/B`` features do not move when the sensor gain does; missing stays missing."""
    rng = np.random.default_rng(5)
    cfg, _ = random_pump(rng, "bearing_inner", split="train")
    x = SimulatedSource(cfg, seed=1).read(round(cfg.fs) * 2).samples[0]
    asset = bearing_asset("6205", 9, 7.94, 39.04)
    names = ["log:band_rms[1000-2500]/rms", "log:v2x/v1x", "log:band_rms[1-2]/rms"]
    check_feature_names(names)
    cols = []
    for gain in (1.0, 7.0):
        reps = edge_reports(x * np.float32(gain), cfg.fs, asset=asset, rpm=cfg.speed.rpm,
                            measured=True, pump="p")
        cols.append(extract(reps).matrix(names))
    np.testing.assert_allclose(cols[0][:, :2], cols[1][:, :2], atol=0.02)
    assert np.isnan(cols[0][:, 2]).all()  # a band the reports do not hold
    with pytest.raises(ValueError, match="unknown feature"):
        check_feature_names(["log:v1x/nonsense"])
