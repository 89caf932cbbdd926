from __future__ import annotations

import numpy as np
import pytest

import dsp

FS = 25600.0
T = np.arange(25600) / FS


def _tone(f: float, v_rms_mm_s: float) -> np.ndarray:
    """An acceleration tone whose velocity RMS is ``v_rms_mm_s``."""
    a_peak = v_rms_mm_s * 1e-3 * np.sqrt(2) * 2 * np.pi * f
    return a_peak * np.sin(2 * np.pi * f * T + 0.3)


@pytest.mark.parametrize("f", [12.3, 24.6, 49.2, 160.0, 511.7, 987.0])
def test_velocity_rms_within_2_percent_for_a_tone_in_band(f: float) -> None:
    v = dsp.velocity_rms(_tone(f, 4.5).astype(np.float32), FS)
    assert v.shape == (1,)
    assert v[0] == pytest.approx(4.5, rel=0.02)


@pytest.mark.parametrize("f", [4.0, 5.0, 2000.0, 4000.0])
def test_tones_an_octave_outside_the_band_contribute_under_1_percent(f: float) -> None:
    inside = _tone(100.0, 2.0)
    both = inside + _tone(f, 2.0)
    v_in = dsp.velocity_rms(inside, FS)[0]
    v_both = dsp.velocity_rms(both, FS)[0]
    assert abs(v_both - v_in) / v_in < 0.01


def test_velocity_band_above_nyquist_is_rejected() -> None:
    with pytest.raises(ValueError, match="above Nyquist"):
        dsp.velocity_rms(np.zeros(1000), 1000.0, band=(10.0, 1000.0))


def test_bearing_orders_match_the_skf_6205_check_values() -> None:
    o = dsp.bearing_orders(9, 7.94, 39.04, 0.0)
    assert o["bpfi"] == pytest.approx(5.4152, abs=2e-3)
    assert o["bpfo"] == pytest.approx(3.5848, abs=2e-3)
    assert o["ftf"] == pytest.approx(0.39828, abs=2e-4)
    assert 2 * o["bsf"] == pytest.approx(4.7135, abs=3e-3)


@pytest.mark.parametrize(
    ("v", "zone"), [(1.0, "A"), (1.4, "B"), (2.79, "B"), (3.0, "C"), (4.5, "D"), (np.nan, "?")]
)
def test_iso_zones_group2_rigid(v: float, zone: str) -> None:
    assert dsp.iso_zone(v, dsp.ISO_ZONE_LIMITS[(2, "rigid")]) == zone


def _pump_signal(rng: np.random.Generator, rpm: float, *, bpfo_amp: float = 0.0) -> np.ndarray:
    fr = rpm / 60
    x = 3.0 * np.sin(2 * np.pi * fr * T) + 0.4 * np.sin(2 * np.pi * 2 * fr * T)
    x += 0.6 * np.sin(2 * np.pi * 6 * fr * T) + 0.3 * rng.standard_normal(T.size)
    if bpfo_amp:
        bpfo = dsp.bearing_orders(9, 7.94, 39.04)["bpfo"] * fr
        times = np.cumsum((1 + 0.01 * rng.standard_normal(600)) / bpfo)
        imp = np.zeros(T.size)
        imp[(times[times < 1.0] * FS).astype(int)] = bpfo_amp
        ring = np.exp(-900 * T[:400]) * np.sin(2 * np.pi * 4100 * T[:400])
        x += np.convolve(imp, ring)[: T.size]
    return x


ASSET = dsp.Asset(
    bearings=[dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04, designation="6205")],
    vanes=6,
)


def test_analyze_estimates_speed_orders_and_envelope_lines() -> None:
    rng = np.random.default_rng(21)
    x = np.vstack([_pump_signal(rng, 2950), _pump_signal(rng, 1480, bpfo_amp=6.0)])
    cfg = dsp.ReportConfig()
    res = dsp.analyze(x.astype(np.float32), cfg, [dsp.ChannelSpec(asset=ASSET)] * 2)
    assert res[0].speed.source == "estimated"
    assert res[0].speed.rpm == pytest.approx(2950, abs=3)
    assert res[1].speed.rpm == pytest.approx(1480, abs=3)
    f0, f1 = res[0].features, res[1].features
    assert f0.v1x is not None and f0.v2x is not None and f0.vbpf is not None
    assert f0.v1x > 5 * f0.v2x  # the 3 m/s^2 1x line dwarfs the 0.4 m/s^2 2x
    assert f1.env_bpfo is not None and f1.env_bpfo > 5
    assert f1.env_bpfi is not None and f1.env_bpfi < 3
    assert f0.env_bpfo is not None and f0.env_bpfo < 3  # healthy channel: no line
    assert res[1].envelope_band is not None
    lo, hi = res[1].envelope_band
    assert hi - lo >= 2 * cfg.env_fmax  # wide enough to carry envelope lines up to env_fmax


def test_given_speed_is_used_and_labelled() -> None:
    rng = np.random.default_rng(2)
    x = _pump_signal(rng, 1780)[None, :].astype(np.float32)
    (r,) = dsp.analyze(x, dsp.ReportConfig(), [dsp.ChannelSpec(asset=ASSET, rpm=1797.0)])
    assert r.speed.rpm == 1797.0 and r.speed.source == "given"
    (m,) = dsp.analyze(
        x, dsp.ReportConfig(), [dsp.ChannelSpec(asset=ASSET, rpm=1797.0, rpm_source="measured")]
    )
    assert m.speed.source == "measured"


def test_bad_samples_are_flagged_and_never_raise() -> None:
    rng = np.random.default_rng(3)
    good = _pump_signal(rng, 2950).astype(np.float32)
    nonfinite = good.copy()
    nonfinite[100:110] = np.nan
    nonfinite[500] = np.inf
    clipped = np.clip(good * 3, -5.0, 5.0)
    constant = np.full_like(good, 0.25)
    x = np.vstack([good, nonfinite, clipped, constant])
    specs = [dsp.ChannelSpec(asset=ASSET, full_scale=5.0)] * 4
    res = dsp.analyze(x, dsp.ReportConfig(), specs)
    q = [r.quality for r in res]
    assert q[0].flags == 0 and q[0].names() == []
    assert q[1].names() == ["nonfinite"] and q[1].nonfinite == 11
    assert np.isfinite(res[1].features.rms) and np.isfinite(res[1].features.velocity_rms)
    assert "clipped" in q[2].names() and q[2].clipped > 100
    assert "constant" in q[3].names()
    assert res[3].features.kurtosis == 3.0 and res[3].features.velocity_rms < 1e-6
    all_nan = np.full((1, good.size), np.nan, dtype=np.float32)
    (r,) = dsp.analyze(all_nan, dsp.ReportConfig(), [dsp.ChannelSpec()])
    assert {"nonfinite", "constant"} <= set(r.quality.names())


def test_bad_config_names_every_problem() -> None:
    with pytest.raises(ValueError) as err:
        dsp.ReportConfig(nfft=1000, step_db=0, bands=((10.0, 20000.0),), rpm_range=(100, 50))
    msg = str(err.value)
    for needle in ("nfft=1000", "step_db", "bands[0]", "rpm_range"):
        assert needle in msg
    with pytest.raises(ValueError, match="hop must be"):
        dsp.ReportConfig(hop=8192)


def test_rated_speed_keeps_a_strong_harmonic_from_posing_as_1x() -> None:
    fr = 2000 / 60
    x = 0.5 * np.sin(2 * np.pi * fr * T) + 4.0 * np.sin(2 * np.pi * 1.5 * fr * T)
    x += 0.05 * np.random.default_rng(4).standard_normal(T.size)
    free = dsp.ChannelSpec(asset=dsp.Asset())
    rated = dsp.ChannelSpec(asset=dsp.Asset(rated_rpm=2000.0))
    a, b = dsp.analyze(x[None].repeat(2, 0).astype(np.float32), dsp.ReportConfig(), [free, rated])
    assert a.speed.rpm == pytest.approx(3000, abs=5)  # the larger line wins without a hint
    assert b.speed.rpm == pytest.approx(2000, abs=5) and b.speed.source == "estimated"
