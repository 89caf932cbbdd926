"""Real recordings (CWRU), never trained on: baseline separation and physics diagnosis.

Measuring only: nothing is fitted or tuned on these files except the CWRU
baseline, fitted on the first half of the normal recording as the task
states. The simulator-trained classifier's figure on them comes from
``python -m bench.models`` (it needs the full training set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.signal

import dsp
from models.serving.diagnostics import diagnose_bearing, fixed_band_diagnosis
from models.training.anomaly import fit_pump_baselines, score_reports
from models.training.evaluation import auroc
from models.training.replay import bearing_asset, config_for, reports_from_signal
from simulator.recordings import RecordingError, read_recording

GEOMETRY = (9, 7.94, 39.04)  # SKF 6205-2RS JEM, drive end
FS = 12000.0
NORMAL_FS = 48000.0  # PROVENANCE.md caveat 1: normal_0_97 was sampled at 48 kHz


@pytest.fixture(scope="module")
def cwru(real_data: Path) -> Path:
    return real_data / "cwru"


@pytest.fixture(scope="module")
def asset() -> dsp.Asset:
    return bearing_asset("6205", *GEOMETRY, rated_rpm=1797.0)


def _kw(asset: dsp.Asset, rpm: float | None, **more: Any) -> dict[str, Any]:
    return {"asset": asset, "rpm": rpm, "pump": "cwru", "cfg": config_for(FS), **more}


def test_normal_recording_is_48k_and_decimates(cwru: Path) -> None:
    with pytest.raises(RecordingError, match="--fs"):  # no rate in its name: the reader asks
        read_recording(cwru / "normal_0_97.mat")
    rec = read_recording(cwru / "normal_0_97.mat", fs=NORMAL_FS)
    assert rec.rpm == 1796.0 and rec.n_samples == 243938 and rec.channels[0] == "DE"
    x = scipy.signal.resample_poly(rec.samples[0], 1, 4)
    kurt = float(np.mean((x - x.mean()) ** 4) / np.var(x) ** 2)
    assert 2.5 < kurt < 3.1  # PROVENANCE.md: 2.78 after decimation


def test_baseline_from_first_half_of_normal_separates_every_fault_file(
    cwru: Path, asset: dsp.Asset
) -> None:
    rec = read_recording(cwru / "normal_0_97.mat", fs=NORMAL_FS)
    x = scipy.signal.resample_poly(rec.samples[0], 1, 4)
    half = x.size // 2
    base = fit_pump_baselines(reports_from_signal(x[:half], FS, **_kw(asset, rec.rpm,
                                                                      hop_s=0.25)))
    neg, thr = score_reports(base, reports_from_signal(x[half:], FS, **_kw(asset, rec.rpm,
                                                                          hop_s=0.25)))
    assert np.all(neg < thr), f"normal second half over threshold: {neg} vs {thr}"
    files = sorted(cwru.glob("12k_Drive_End_*.mat"))
    assert len(files) == 6
    for f in files:
        r = read_recording(f)
        de = r.samples[0]
        pos, _ = score_reports(base, reports_from_signal(de, r.fs, **_kw(asset, r.rpm)))
        assert auroc(neg, pos) >= 0.99, f.name


def test_physics_diagnosis_inner_vs_outer_beats_fixed_band(
    cwru: Path, asset: dsp.Asset
) -> None:
    orders = dsp.bearing_orders(*GEOMETRY)
    ok = fixed = n = 0
    for f in sorted(cwru.glob("12k_Drive_End_[IO]R*.mat")):
        want = "bearing_inner" if "_IR" in f.name else "bearing_outer"
        r = read_recording(f)
        assert r.rpm is not None
        de = r.samples[0]  # the drive end, first channel
        reps = reports_from_signal(de, r.fs, **_kw(asset, r.rpm))
        ok += sum(diagnose_bearing(rep).label == want for rep in reps)
        m = int(r.fs)
        fixed += sum(
            fixed_band_diagnosis(de[i * m : (i + 1) * m], r.fs, rpm=r.rpm, orders=orders) == want
            for i in range(len(reps))
        )
        n += len(reps)
    assert n == 40
    assert ok / n >= 0.98, f"physics diagnosis {ok}/{n}"
    assert ok >= fixed, f"physics {ok}/{n} below the fixed-band reference {fixed}/{n}"
