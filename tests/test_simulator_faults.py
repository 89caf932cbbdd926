"""Fault physics: each fault's line sits at its expected frequency and grows with severity.

The checks use plain numpy spectra (Hann window, 2 s records -> 0.5 Hz lines)
and a squared-envelope spectrum of everything above 1.5 kHz (all simulated
resonances lie above 2 kHz), independent of the dsp package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from simulator import FaultConfig, PumpConfig, SimulatedSource

SEED = 20261127
FS = 25600.0
SECONDS = 2
DF = 1 / SECONDS  # line spacing, Hz


def render(
    kind: str | None, severity: float, seed: int = SEED
) -> tuple[NDArray[np.float64], dict[str, Any], SimulatedSource]:
    faults = () if kind is None else (FaultConfig(kind=kind, severity=severity),)  # type: ignore[arg-type]
    src = SimulatedSource(PumpConfig.default(faults=faults), seed=seed)
    b = src.read(int(FS * SECONDS))
    return b.samples.astype(np.float64), b.truth["pumps"]["pump1"], src


def amplitude_spectrum(x: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.hanning(x.shape[-1])
    return 2 * np.abs(np.fft.rfft(x * w, axis=-1)) / w.sum()


def envelope_spectrum(x: NDArray[np.float64]) -> NDArray[np.float64]:
    X = np.fft.rfft(x, axis=-1)
    f = np.fft.rfftfreq(x.shape[-1], 1 / FS)
    X[..., f < 1500.0] = 0
    analytic = np.fft.ifft(np.concatenate([X, np.zeros_like(X[..., 1:-1])], axis=-1) * 2, axis=-1)
    env = np.abs(analytic) ** 2
    env -= env.mean(axis=-1, keepdims=True)
    return amplitude_spectrum(env)


def peak_near(spec: NDArray[np.float64], f: float, rel: float = 0.03) -> tuple[float, float]:
    """(frequency, height) of the largest line within +-rel of f."""
    k0, k1 = int((f * (1 - rel)) / DF), int(np.ceil(f * (1 + rel) / DF)) + 1
    k = k0 + int(np.argmax(spec[k0:k1]))
    return k * DF, float(spec[k])


SYNC_CASES = [
    # kind, channel, order of shaft speed (None: blade pass)
    ("imbalance", 0, 1.0),
    ("misalignment", 1, 2.0),  # axial
    ("looseness", 0, 0.5),
    ("flow", 0, None),
]


@pytest.mark.parametrize(("kind", "ch", "order"), SYNC_CASES)
def test_synchronous_fault_line_at_order_and_growing(
    kind: str, ch: int, order: float | None
) -> None:
    heights = []
    for sev in (0.0, 0.3, 0.6, 1.0):
        x, truth, _ = render(kind if sev else None, sev)
        f_expected = (order if order else 6.0) * truth["rpm"] / 60.0
        spec = amplitude_spectrum(x[ch])
        if sev:
            f, _ = peak_near(spec, f_expected)
            assert abs(f - f_expected) <= DF, f"seed={SEED} {kind} sev={sev}: line at {f} Hz"
        heights.append(float(spec[round(f_expected / DF)]))
    assert all(np.diff(heights) > 0), f"seed={SEED} {kind}: line heights {heights} must grow"


BEARING_CASES = [
    ("outer_race", "bpfo", 1.0),
    ("inner_race", "bpfi", 1.0),
    ("ball", "bsf", 2.0),
    ("cage", "ftf", 1.0),
]


@pytest.mark.parametrize(("kind", "key", "mult"), BEARING_CASES)
def test_bearing_fault_envelope_line_at_defect_frequency_and_growing(
    kind: str, key: str, mult: float
) -> None:
    heights = []
    for sev in (0.5, 0.75, 1.0):
        x, truth, _ = render(kind, sev)
        f_expected = mult * truth["bearing_frequencies_hz"][key]
        spec = envelope_spectrum(x[0])
        f, h = peak_near(spec, f_expected)
        assert abs(f - f_expected) <= DF, (
            f"seed={SEED} {kind} sev={sev}: line at {f}, want {f_expected}"
        )
        lo, hi = int(f_expected * 0.8 / DF), int(f_expected * 1.2 / DF)
        assert h > 5 * np.median(spec[lo:hi]), f"seed={SEED} {kind} sev={sev}: no line standing out"
        heights.append(h)
    assert all(np.diff(heights) > 0), f"seed={SEED} {kind}: envelope lines {heights} must grow"


def test_inner_race_has_shaft_rate_sidebands() -> None:
    x, truth, _ = render("inner_race", 0.8)
    spec = envelope_spectrum(x[0])
    bpfi, fr = truth["bearing_frequencies_hz"]["bpfi"], truth["rpm"] / 60.0
    _, center = peak_near(spec, bpfi, rel=0.005)
    for side in (bpfi - fr, bpfi + fr):
        f, h = peak_near(spec, side, rel=0.01)
        assert abs(f - side) <= DF, f"seed={SEED}"
        assert h > 0.1 * center, f"seed={SEED}: sideband at {side:.1f} Hz too weak"


def test_outer_race_has_no_shaft_rate_modulation() -> None:
    x, truth, _ = render("outer_race", 0.8)
    spec = envelope_spectrum(x[0])
    bpfo, fr = truth["bearing_frequencies_hz"]["bpfo"], truth["rpm"] / 60.0
    _, center = peak_near(spec, bpfo, rel=0.005)
    _, side = peak_near(spec, bpfo + fr, rel=0.005)
    assert side < 0.1 * center, f"seed={SEED}"


def test_cavitation_raises_high_frequency_energy_and_kurtosis() -> None:
    f = np.fft.rfftfreq(int(FS * SECONDS), 1 / FS)
    band = (f > 2500) & (f < 10000)
    energy, kurt = [], []
    for sev in (0.0, 0.4, 0.8):
        x, _, _ = render("cavitation" if sev else None, sev)
        P = np.abs(np.fft.rfft(x[0])) ** 2
        energy.append(P[band].sum())
        d = x[0] - x[0].mean()
        kurt.append(float(np.mean(d**4) / np.mean(d**2) ** 2))
    assert all(np.diff(energy) > 0), f"seed={SEED}: {energy}"
    assert kurt[2] > kurt[0] + 1, f"seed={SEED}: kurtosis {kurt}"


def test_severe_bearing_fault_clips_the_sensor_mild_does_not() -> None:
    x, _, src = render("outer_race", 1.0)
    fs_ms2 = src.full_scale[0]
    assert fs_ms2 is not None
    assert np.sum(np.abs(x[0]) >= fs_ms2 * (1 - 1e-6)) > 0, (
        f"seed={SEED}: no clipping at severity 1"
    )
    x, _, _ = render("outer_race", 0.5)
    assert np.abs(x[0]).max() < 0.5 * fs_ms2, f"seed={SEED}"


def test_samples_are_quantized_to_the_adc_step() -> None:
    x, _, src = render(None, 0.0)
    fs_ms2 = src.full_scale[0]
    assert fs_ms2 is not None
    step = fs_ms2 / (2**15 - 1)
    codes = x[0] / step
    assert np.allclose(codes, np.round(codes), atol=1e-2)


def test_resonances_vary_between_pumps() -> None:
    bands = {tuple(render(None, 0.0, seed=s)[1]["resonances_hz"]) for s in range(5)}
    assert len(bands) == 5


def test_healthy_pump_is_in_iso_zone_a_or_b_and_near_gaussian() -> None:
    x, truth, _ = render(None, 0.0)
    d = x[0] - x[0].mean()
    k = float(np.mean(d**4) / np.mean(d**2) ** 2)
    assert 2.4 < k < 3.6, f"seed={SEED}: kurtosis {k}"
    assert truth["labels"] == ["healthy"]


def test_dsp_sees_the_simulated_outer_race_fault() -> None:
    dsp = pytest.importorskip("dsp")
    cfg = PumpConfig.default(faults=(FaultConfig(kind="outer_race", severity=0.8),))
    src = SimulatedSource(cfg, seed=SEED)
    b = src.read(25600)
    ad = cfg.asset_descriptor()
    asset = dsp.Asset(**{**ad, "bearings": [dsp.Bearing(**bb) for bb in ad["bearings"]]})
    (r, _) = dsp.analyze(
        b.samples, dsp.ReportConfig(), [dsp.ChannelSpec(asset=asset, rpm=2950.0)] * 2
    )
    f = r.features
    assert f.env_bpfo > 5 and f.env_bpfo > 2 * f.env_bpfi, f"seed={SEED}: {f}"
