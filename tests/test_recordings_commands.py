"""One recording, four file formats, every command that reads recordings: same samples,
same reports.

The same samples are written as an int16 WAV (``write_wav(..., full_scale=490)``),
an NPY, a CWRU-style ``.mat`` (``X097_DE_time`` in g, ``X097RPM``) and an IMS-style
text file (8 tab-separated columns in g, 20,480 rows, named by its timestamp), then
read through ``pumpwatch analyze --json`` (its printed features), ``pumpwatch replay``
(the reports the real agent publishes to a real Mosquitto broker) and ``pumpwatch
baseline fit --from`` (the fitted ``baselines.npz``, compared with a fit of the
replayed reports). What each command read is observed only through its normal output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

import dsp
from models.serving.baseline import Baselines
from models.training.anomaly import BaselineConfig, fit_pump_baselines
from pumpwatch.cli import main
from simulator.recordings import G_TO_MS2, IMS_FS, Recording, read_recording, write_wav

from .edge._helpers import Collector, write_toml
from .infra.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
SEED = 14
FS = IMS_FS  # every file at the IMS rate, so the IMS layout needs no --fs
N = 20_480  # one IMS snapshot
RPM = 1796.0
INTERVAL_S = 0.25  # 4 reports per snapshot
FEATURES = ("velocity_rms", "kurtosis", "rms", "crest", "env_bpfo", "env_bpfi", "env_bsf",
            "env_ftf")
FORMATS = ("wav", "npy", "mat", "ims")


@dataclass(frozen=True)
class Files:
    paths: dict[str, Path]
    samples: np.ndarray  # float32, m/s^2: what every file holds in its first channel
    other: np.ndarray  # a different signal, in the .mat's FE and the IMS file's ch4


def _signal(rng: np.random.Generator) -> np.ndarray:
    """A pump-like vibration, m/s^2: shaft harmonics, an outer-race impulse train, noise."""
    t = np.arange(N) / FS
    f1 = RPM / 60
    x = 2.0 * np.sin(2 * np.pi * f1 * t) + 0.7 * np.sin(2 * np.pi * 2 * f1 * t + 0.3)
    bpfo = 3.5848 * f1
    ring = np.exp(-t[:200] * 800) * np.sin(2 * np.pi * 3500 * t[:200])
    for k in np.arange(0, t[-1], 1 / bpfo):
        i = int(k * FS)
        x[i : i + 200] += 6.0 * ring[: N - i]
    return x + 0.5 * rng.standard_normal(N)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("recs")
    rng = np.random.default_rng(SEED)
    x, other = _signal(rng), _signal(rng)[::-1].copy()
    wav = write_wav(
        d / "rec.wav",
        Recording(samples=x[np.newaxis].astype(np.float32), fs=FS, channels=("DE",)),
        sample_format="int16",
        full_scale=490.0,
    )
    s = read_recording(wav).samples[0]  # the quantized samples, m/s^2: the reference
    np.save(d / "rec.npy", s)
    g = s.astype(np.float64) / G_TO_MS2  # CWRU and IMS files are in g
    scipy.io.savemat(
        d / "20k_Drive_End_X097.mat",
        {"X097_DE_time": g[:, np.newaxis], "X097_FE_time": other[:, np.newaxis] / G_TO_MS2,
         "X097RPM": np.array([[RPM]])},
    )
    cols = np.tile(g[:, np.newaxis], (1, 8))
    cols[:, 3] = other / G_TO_MS2
    ims = d / "2003.10.22.12.06.24"  # upstream IMS names: a timestamp, no extension
    np.savetxt(ims, cols, fmt="%.17g", delimiter="\t")
    paths = {"wav": wav, "npy": d / "rec.npy", "mat": d / "20k_Drive_End_X097.mat", "ims": ims}
    return Files(paths=paths, samples=s, other=other.astype(np.float32))


def _fs_args(fmt: str) -> list[str]:
    return ["--fs", str(FS)] if fmt == "npy" else []  # an NPY carries no rate


def _edge_toml(tmp_path: Path, port: int, name: str) -> tuple[Path, str]:
    device = f"gw-{name}"
    d = {
        "device": device,
        "site": "lab",
        "report": {"interval_s": INTERVAL_S},  # else the edge's defaults
        "source": {"kind": "replay"},
        # no consumer here: reports settle on PUBACK (no end-to-end confirmation to wait for)
        "mqtt": {"host": "127.0.0.1", "port": port, "confirm": False},
        "spool": {"path": str(tmp_path / f"spool-{name}")},
        "pumps": [{"id": "p1", "bearings": ["6205"], "channels": ["de"]}],
    }
    return write_toml(tmp_path / f"edge-{name}.toml", d), device


def _replay(cfg: Path, device: str, broker: Mosquitto, n: int, *args: str) -> list[dsp.Report]:
    """``pumpwatch replay`` in its own process; the ``n`` reports the broker delivered."""
    col = Collector(broker, device).start()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "replay", *args, "--config", str(cfg),
             "--pump", "p1", "--rpm", str(RPM)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert p.returncode == 0, p.stderr
        assert col.wait_for(n, 10), f"replay published {len(set(col.identities()))} reports"
    finally:
        col.stop()
    unique = {r.identity: r for r in col.reports}
    return sorted(unique.values(), key=lambda r: r.t0_ns)


def _analyze(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    code = main(["analyze", str(path), "--json", "--bearing", "6205", "--rpm", str(RPM),
                 "--interval", str(INTERVAL_S), *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return [json.loads(line) for line in out.out.splitlines()]


def _baseline(out: Path, path: Path, *args: str) -> Baselines:
    code = main(["baseline", "fit", "--pump", "p1", "--from", str(path), "--rpm", str(RPM),
                 "--min-reports", "4", "--out", str(out), *args])
    assert code == 0
    return Baselines.load(out / "baselines.npz")


def _features(r: dsp.Report) -> dict[str, Any]:
    return {k: getattr(r.features, k) for k in FEATURES}


def _assert_same_baselines(a: Baselines, b: Baselines) -> None:
    assert a.pumps == b.pumps and a.feature_names == b.feature_names
    assert np.array_equal(a.n_fit, b.n_fit)
    for name in ("mean", "scale", "threshold"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, err_msg=name)


def test_every_format_reads_the_same_samples(files: Files) -> None:
    for fmt, path in files.paths.items():
        rec = read_recording(path, fs=FS if fmt == "npy" else None)
        assert rec.fs == FS, fmt
        np.testing.assert_allclose(rec.samples[0], files.samples, rtol=1e-6, err_msg=fmt)
    # the int16 WAV holds +-490 m/s^2 at digital full scale: read back in m/s^2, not codes/32767
    wav = read_recording(files.paths["wav"]).samples[0].astype(np.float64)
    x = files.samples.astype(np.float64)
    assert 1.0 < float(np.sqrt(np.mean(wav**2))) < 5.0
    assert float(np.max(np.abs(wav - x))) <= 490.0 / 32767


def test_channel_selection_is_one_implementation(files: Files, tmp_path: Path) -> None:
    """``--channel``: a name, a 0-based column or a .mat variable suffix, for every command."""
    mat, ims = files.paths["mat"], files.paths["ims"]
    for spelling in ("FE", "fe", "1", "_FE_time", "X097_FE_time"):
        rec = read_recording(mat, channels=[spelling])
        assert rec.channels == ("FE",), spelling
        np.testing.assert_allclose(rec.samples[0], files.other, rtol=1e-6)
    for spelling in ("ch4", "3"):
        assert read_recording(ims, channels=[spelling]).channels == ("ch4",)
    cfg = str(_edge_toml(tmp_path, 1883, "ch")[0])  # 0.25 s reports: 4 per snapshot
    a = _baseline(tmp_path / "fe", mat, "--channel", "_FE_time", "--config", cfg)
    b = _baseline(tmp_path / "ch4", ims, "--channel", "3", "--config", cfg)
    _assert_same_baselines(a, b)
    de = _baseline(tmp_path / "de", mat, "--config", cfg)  # default: the first (DE)
    assert not np.allclose(de.mean, a.mean)


def test_every_command_builds_the_same_reports_from_every_format(
    files: Files, tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    replayed: dict[str, list[dsp.Report]] = {}
    for fmt, path in files.paths.items():
        cfg, device = _edge_toml(tmp_path, mosquitto.port, fmt)
        replayed[fmt] = _replay(cfg, device, mosquitto, 4, str(path), *_fs_args(fmt))
    ref = replayed["wav"]
    assert len(ref) == 4 and all(r.fs == FS for r in ref)
    assert all(r.features.velocity_rms > 1.0 for r in ref)  # m/s^2, not full-scale units
    fit_cfg = BaselineConfig(min_reports=4)
    expected = fit_pump_baselines(ref, fit_cfg)
    for fmt, path in files.paths.items():
        # replay: the same reports (features and spectra) whatever the file format
        got = replayed[fmt]
        assert [_features(r) for r in got] == [_features(r) for r in ref], fmt
        assert [r.spectrum.data for r in got] == [r.spectrum.data for r in ref], fmt
        # analyze: the same features, interval by interval
        rows = _analyze(capsys, path, *_fs_args(fmt))
        assert len(rows) == len(ref), fmt
        for row, rep in zip(rows, ref, strict=True):
            for k in FEATURES:
                assert row[k] == pytest.approx(getattr(rep.features, k), rel=1e-5), (fmt, k)
        # baseline fit --from: the edge's reports for that pump (its --config), so the
        # baseline equals one fitted on what the replayed agent published
        cfg, _ = _edge_toml(tmp_path, mosquitto.port, f"fit-{fmt}")
        fitted = _baseline(tmp_path / f"bl-{fmt}", path, "--config", str(cfg), *_fs_args(fmt))
        _assert_same_baselines(fitted, expected)


def test_baseline_fit_uses_the_edge_default_report_config(
    files: Files, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """Without --config: the edge's default report config (1 s, nfft 4096, ...), as a
    replay through a config with no [report] table computes it."""
    wav = files.paths["wav"]
    d = {
        "device": "gw-default", "site": "lab", "source": {"kind": "replay"},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "confirm": False},
        "spool": {"path": str(tmp_path / "spool")},
        "pumps": [{"id": "p1", "bearings": ["6205"], "channels": ["de"]}],
    }
    cfg = write_toml(tmp_path / "edge.toml", d)
    # six snapshots played as one stream: 6 x 1.024 s -> 6 one-second reports
    reps = _replay(cfg, "gw-default", mosquitto, 6, *[str(wav)] * 6)
    assert len(reps) == 6 and {(r.duration_s, r.nfft) for r in reps} == {(1.0, 4096)}
    fit_cfg = BaselineConfig(min_reports=4)
    out = tmp_path / "bl"
    code = main(["baseline", "fit", "--pump", "p1", "--from", *[str(wav)] * 6, "--rpm",
                 str(RPM), "--bearing", "6205", "--min-reports", "4", "--out", str(out)])
    assert code == 0
    _assert_same_baselines(Baselines.load(out / "baselines.npz"),
                           fit_pump_baselines(reps, fit_cfg))
