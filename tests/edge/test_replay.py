"""``pumpwatch replay``: recordings through the same agent, own epoch, exits when drained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from simulator.recordings import Recording, write_npz

from ..infra.mosquitto import Mosquitto
from ._helpers import Collector, edge_config, write_toml

ROOT = Path(__file__).resolve().parents[2]


def _replay(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pumpwatch", "replay", *args, "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_replay_npz_at_its_own_rate(tmp_path: Path, mosquitto: Mosquitto) -> None:
    fs = 12000.0
    rng = np.random.default_rng(1)
    t = np.arange(int(4.5 * fs)) / fs
    x = np.stack(
        [np.sin(2 * np.pi * 29.5 * t), np.cos(2 * np.pi * 59 * t)]
    ) + 0.1 * rng.standard_normal((2, t.size))
    rec = write_npz(
        tmp_path / "rec.npz", Recording(samples=x.astype(np.float32), fs=fs, channels=("a", "b"))
    )
    d = edge_config(tmp_path, mosquitto.port, channels=3)
    cfg = write_toml(tmp_path / "edge.toml", d)
    col = Collector(mosquitto, d["device"]).start()
    try:
        p = _replay(cfg, str(rec), "--pump", "p1", "--rpm", "1770")
        assert p.returncode == 0, p.stderr
        assert col.wait_for(8, 5)
    finally:
        col.stop()
    reps = col.reports
    assert len({r.identity for r in reps}) == 8  # 4 whole intervals x 2 mapped channels
    assert {r.channel for r in reps} == {"c0", "c1"}  # the pump's names, not the file's
    assert all(r.fs == fs and r.speed.rpm == 1770 and r.speed.source == "given" for r in reps)
    assert "replaying 1 file(s)" in p.stderr and "acknowledged" in p.stderr


def test_replay_real_cwru_recording(tmp_path: Path, mosquitto: Mosquitto, real_data: Path) -> None:
    f = real_data / "cwru" / "12k_Drive_End_IR007_0_105.mat"
    d = edge_config(tmp_path, mosquitto.port, channels=1)
    cfg = write_toml(tmp_path / "edge.toml", d)
    col = Collector(mosquitto, d["device"]).start()
    try:
        p = _replay(cfg, str(f), "--pump", "p1", "--speed", "50")
        assert p.returncode == 0, p.stderr
        assert col.wait_for(10, 5)
    finally:
        col.stop()
    reps = sorted(col.reports, key=lambda r: r.seq)
    assert len(reps) == 10 and [r.seq for r in reps] == list(range(10))
    assert reps[0].asset.bearings[0].designation == "6205"
    assert all(r.envelope is not None for r in reps)


def test_replay_channel_selects_and_maps_recording_channels(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    fs = 12000.0
    rng = np.random.default_rng(2)
    t = np.arange(int(3.5 * fs)) / fs
    # three recording channels of very different amplitude, so which fed what shows
    x = np.stack([a * np.sin(2 * np.pi * 29.5 * t) for a in (0.1, 1.0, 10.0)])
    x = (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)
    rec = write_npz(tmp_path / "rec.npz", Recording(samples=x, fs=fs, channels=("a", "b", "c")))
    d = edge_config(tmp_path, mosquitto.port, channels=3)
    cfg = write_toml(tmp_path / "edge.toml", d)
    col = Collector(mosquitto, d["device"]).start()
    try:
        # recording channel "c" as pump channel c2; column 0 ("a") unnamed: the pump's
        # channel at its position in the --channel list, the second (c1)
        p = _replay(cfg, str(rec), "--pump", "p1", "--rpm", "1770",
                    "--channel", "c=c2", "--channel", "0")
        assert p.returncode == 0, p.stderr
        assert col.wait_for(6, 5)
    finally:
        col.stop()
    by = {r.channel: r for r in col.reports}
    assert set(by) == {"c2", "c1"}
    assert by["c2"].features.rms > 50 * by["c1"].features.rms
    # a pump channel the config does not have: exit 2 before anything is published
    bad = _replay(cfg, str(rec), "--pump", "p1", "--channel", "b=nope")
    assert bad.returncode == 2
    assert "pump p1 has no channel 'nope'" in bad.stderr
    missing = _replay(cfg, str(rec), "--pump", "p1", "--channel", "zz")
    assert missing.returncode == 2 and "no channel 'zz'" in missing.stderr
