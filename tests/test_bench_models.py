"""bench.labels, the benchmark's "what the user sees" harness, on a small synthetic set.

The real recordings are the benchmark's (``python -m bench.models``); here the same
harness runs on synthetic bearing-fault signals at two rates through the real model
server process on a freshly trained bundle, so CI keeps it working: reports are the
ones ``pumpwatch baseline fit --from`` / ``pumpwatch replay`` build (each file at its
own rate), each result is counted, the textbook reference sees the same samples,
and the sensor-fault variants carry what they state.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

import dsp
from bench.labels import (
    CLIPPED_SHARE,
    DEFAULT_DECIDER,
    FULL_SCALE,
    IMPACTS_SHARE,
    PARTIALLY_CLIPPED_SHARE,
    VARIANTS,
    Endpoint,
    Measured,
    Stream,
    clip_impacts,
    make_variants,
    measure_stream,
    replay_reports,
    summarize,
)
from bench.models import endpoint_figures, expected_calibration_error
from bench.real_streams import CWRU_BEARING, cwru_asset
from models.serving.bundle import load_bundle
from models.serving.classifier import SoftmaxClassifier
from models.serving.mlp import MLPClassifier
from models.training.anomaly import fit_pump_baselines
from models.training.train_sim import simulate
from models.training.training import TrainConfig, TrainResult, predict, train, write_model
from pumpwatch.commands.baseline import recording_reports
from simulator.recordings import Recording

from .infra.model_server import synth_signal

SEED = 15
RPM = 1797.0
SECONDS = 3


def _rec(fs: float, *, outer: float = 0.0, inner: float = 0.0, seed: int = SEED) -> Recording:
    n = int(SECONDS * fs)
    x = synth_signal(fs, n, RPM, seed=seed, outer=outer, inner=inner)
    return Recording(samples=x[np.newaxis], fs=fs, channels=("DE",), rpm=RPM)


def _stream(name: str, truth: str, rec: Recording) -> Stream:
    return Stream(name=f"cwru/{name}", truth=truth, recordings=(rec,), pump=f"p{rec.fs:g}",
                  asset=cwru_asset(), fixed_band=truth != "healthy")


@pytest.fixture(scope="module")
def streams() -> list[Stream]:
    return [
        _stream("outer12", "bearing_outer", _rec(12000.0, outer=20.0)),
        _stream("inner48", "bearing_inner", _rec(48000.0, inner=20.0)),
        _stream("normal48", "healthy", _rec(48000.0, seed=SEED + 1)),
    ]


TINY = TrainConfig(pumps_per_class=2, test_pumps_per_class=1, seconds=1, seed=SEED)


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train(TINY)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, trained: TrainResult) -> Path:
    """A tiny trained bundle (statistics included) with each test pump's baseline."""
    out = tmp_path_factory.mktemp("bench-bundle")
    tr = trained
    reports = [r for fs in (12000.0, 48000.0)
               for r in replay_reports([_rec(fs, seed=SEED + 7)], pump=f"p{fs:g}",
                                       asset=cwru_asset(), hop_s=0.25).reports]
    write_model(tr, out, model_version="bench-test", baselines=fit_pump_baselines(reports))
    return out / "bundle"


def test_reports_are_the_ones_replay_builds_at_the_files_own_rate(tmp_path: Path) -> None:
    rec = _rec(48000.0, outer=20.0)
    path = tmp_path / "rec.npy"
    np.save(path, rec.samples[0])
    args = argparse.Namespace(
        from_files=[path], fs=48000.0, unit="m/s^2", scale=None, channel=None, resample=None,
        config=None, bearing="6205", vanes=None, rpm=RPM, pump=["p"], hop=None, force_fs=False)
    want = recording_reports(args)
    got = replay_reports([rec], pump="p", asset=cwru_asset(), rpm=RPM).reports
    assert len(got) == len(want) == SECONDS
    cfg = dsp.ReportConfig().at_rate(48000.0)
    for a, b in zip(got, want, strict=True):
        assert a.fs == 48000.0 and a.nfft == cfg.nfft  # no resampling, the edge's defaults
        assert (a.t0_ns, a.features, a.spectrum, a.envelope, a.envelope_band) == (
            b.t0_ns, b.features, b.spectrum, b.envelope, b.envelope_band)
    # a rate the file states is used as the agent uses a block's speed
    measured = replay_reports([rec], pump="p", asset=cwru_asset()).reports
    assert {r.speed.source for r in measured} == {"measured"}


def test_variants_carry_what_they_state(streams: list[Stream]) -> None:
    s = streams[0]
    n = s.recordings[0].n_samples
    by_kind = {v.kind: v for v in make_variants(s)}
    assert set(by_kind) == set(VARIANTS)
    assert {v.truth for v in by_kind.values()} == {"sensor_fault"}
    x = {k: v.recordings[0].samples[0] for k, v in by_kind.items()}
    assert np.ptp(x["dead"]) == 0
    stuck = np.mean(np.diff(x["partially_dead"]) == 0)
    assert 0.35 < stuck < 0.45
    for kind, share in (("clipped", CLIPPED_SHARE), ("partially_clipped",
                                                     PARTIALLY_CLIPPED_SHARE)):
        level = by_kind[kind].full_scale
        assert level is not None and level < FULL_SCALE
        assert np.mean(np.abs(x[kind]) >= level) == pytest.approx(share, rel=0.05)
    imp = clip_impacts(s)
    assert imp.truth == s.truth and imp.kind == "impacts" and imp.full_scale is not None
    clipped = np.sum(np.abs(imp.recordings[0].samples[0]) >= imp.full_scale)
    assert 0 < clipped <= 2 * IMPACTS_SHARE * n + 1
    # the edge flags each as built: constant, non-finite in every report, clipped counts
    def reports(v: Stream) -> list[dsp.Report]:
        return replay_reports(list(v.recordings), pump="p", asset=v.asset,
                              full_scale=v.full_scale).reports
    assert all("constant" in r.quality.names() for r in reports(by_kind["dead"]))
    assert all(r.quality.nonfinite > 0 for r in reports(by_kind["nonfinite"]))
    per_report = s.fs  # 1 s reports
    assert all(r.quality.clipped > 0.2 * per_report for r in reports(by_kind["clipped"]))
    assert all(r.quality.clipped < 0.01 * per_report for r in reports(imp))


def test_endpoint_labels_through_the_real_server(
    streams: list[Stream], bundle_dir: Path
) -> None:
    orders = dsp.bearing_orders(*CWRU_BEARING[1:])
    clf = load_bundle(bundle_dir).classifier
    assert isinstance(clf, MLPClassifier | SoftmaxClassifier)
    # two separate 1.5 s acquisitions: one report each (played as one stream: three)
    snaps = tuple(Recording(samples=synth_signal(20000.0, 30000, RPM, seed=SEED + k)[None],
                            fs=20000.0, channels=("ch1",)) for k in (3, 4))
    two = Stream(name="ims/two", truth="healthy", recordings=snaps, pump="p20000",
                 asset=cwru_asset(), rpm=RPM)
    everything = [*streams, clip_impacts(streams[0]), *make_variants(streams[0]), two]
    measured: list[Measured] = []
    with Endpoint(bundle_dir) as ep:
        for s in everything:
            measured.append(measure_stream(ep, s, orders=orders,
                                           classify=lambda r: predict(clf, r)))
    out = summarize(measured)
    rows = out["per_file"]
    assert list(rows) == [s.name for s in everything]
    n = sum(r["reports"] for r in rows.values())
    assert rows["ims/two"]["reports"] == 2
    assert out["endpoint_reports"] == n == SECONDS * (len(everything) - 1) + 2
    healthy_two = rows["ims/two"]["endpoint_labels"].get("healthy", 0)
    assert out["ims_endpoint_healthy_share"] == round(healthy_two / 2, 4)
    assert sum(out["endpoint_decided_by"].values()) == n
    for m in measured:  # results that do not say which rule decided count as the classifier
        assert len(m.decided) == len(m.labels) == rows[m.stream.name]["reports"]
    # the textbook method sees each report interval's own samples: clear synthetic faults
    assert rows["cwru/outer12"]["fixed_band_labels"] == {"bearing_outer": SECONDS}
    assert rows["cwru/inner48"]["fixed_band_labels"] == {"bearing_inner": SECONDS}
    assert out["cwru_fixed_band_accuracy"] == out["cwru_fixed_band_accuracy_ir_or"] == 1.0
    assert out["cwru_fixed_band_accuracy_ball"] is None  # no ball file here
    # summed figures are the per-file counts
    variants = [rows[k] for k in rows if rows[k]["kind"] in VARIANTS]
    sf = sum(r["endpoint_labels"].get("sensor_fault", 0) for r in variants)
    assert out["sensor_fault_recall"] == round(sf / sum(r["reports"] for r in variants), 4)
    healthy = rows["cwru/normal48"]["endpoint_labels"].get("healthy", 0)
    assert out["cwru_normal_healthy_share"] == round(healthy / SECONDS, 4)
    ir_or = [rows["cwru/outer12"], rows["cwru/inner48"]]
    ok = sum(r["endpoint_labels"].get(r["truth"], 0) for r in ir_or)
    assert out["cwru_endpoint_accuracy_ir_or"] == round(ok / (2 * SECONDS), 4)
    assert rows["cwru/outer12"]["classifier_labels"]  # the classifier alone, real streams only
    assert "classifier_labels" not in rows["cwru/outer12:dead"]
    labels = {c for r in rows.values() for c in r["endpoint_labels"]}
    assert labels <= {*clf.classes, "unknown", "sensor_fault"}
    assert set(out["endpoint_decided_by"]) <= {DEFAULT_DECIDER, "quality", "physics", "ood"}



def test_expected_calibration_error() -> None:
    classes = ("a", "b")
    sure_right = np.array([[1.0, 0.0]] * 4)
    assert expected_calibration_error(sure_right, ["a"] * 4, classes) == 0.0
    assert expected_calibration_error(sure_right, ["b"] * 4, classes) == 1.0
    # 0.75 confident and right 3 times in 4: calibrated
    p = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(p, ["a", "a", "a", "b"], classes) == pytest.approx(0.0)
    assert expected_calibration_error(p, ["a", "b", "b", "b"], classes) == pytest.approx(0.5)


def test_simulator_split_through_the_endpoint(trained: TrainResult, tmp_path: Path) -> None:
    held_out = simulate(TINY.test_pumps_per_class, seed=TINY.seed, split="test",
                        seconds=TINY.seconds)
    out = endpoint_figures(None, trained, held_out, tmp_path / "model", True)
    assert (tmp_path / "model" / "bundle" / "statistics.json").is_file()
    assert sum(out["sim_endpoint_decided_by"].values()) == len(held_out.reports)
    assert 0.0 <= out["sim_endpoint_unknown_share"] <= 1.0
    assert 0.0 < out["sim_endpoint_macro_f1"] <= 1.0
    assert "cwru_endpoint_accuracy_ir_or" not in out  # no real files given
