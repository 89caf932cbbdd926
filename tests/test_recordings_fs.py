"""``--fs`` against a file's own rate: a contradiction is an error naming both (the
diagnosis would be off by their ratio), unless ``--force-fs``; through the reader and
the ``analyze`` / ``replay`` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pumpwatch.cli import main
from simulator.recordings import Recording, RecordingError, read_recording, write_npz, write_wav

from .edge._helpers import edge_config, write_toml


def _rec(fs: float, n: int = 8192) -> Recording:
    x = np.random.default_rng(7).standard_normal((1, n)).astype(np.float32)
    return Recording(x, fs, ("a",))


def _cwru(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    x = np.random.default_rng(8).standard_normal(24000)
    scipy.io.savemat(p, {"X001_DE_time": x[:, None], "X001RPM": np.array([[1797]])})
    return p


def _files(tmp_path: Path) -> dict[str, tuple[Path, float, str]]:
    """kind -> (file stating 12 kHz, its rate, how the error names where it said so)."""
    csv = tmp_path / "r.csv"
    csv.write_text("# fs = 12000\nx\n" + "\n".join(f"{v:.4f}" for v in _rec(12000.0).samples[0]))
    return {
        "wav": (write_wav(tmp_path / "r.wav", _rec(12000.0)), 12000.0, "the WAV header"),
        "npz": (write_npz(tmp_path / "r.npz", _rec(12000.0)), 12000.0, "its 'fs' array"),
        "csv": (csv, 12000.0, "its '# fs' line"),
        "cwru": (_cwru(tmp_path, "12k_Drive_End_X_0_1.mat"), 12000.0,
                 "the file name's 12k_ prefix"),
    }


@pytest.mark.parametrize("kind", ["wav", "npz", "csv", "cwru"])
def test_contradicting_fs_is_an_error_naming_both(tmp_path: Path, kind: str) -> None:
    path, own, where = _files(tmp_path)[kind]
    with pytest.raises(RecordingError) as err:
        read_recording(path, fs=48000.0)
    msg = str(err.value)
    assert "--fs 48000 Hz" in msg and f"{own:g} Hz ({where})" in msg and "--force-fs" in msg
    assert path.name in msg
    assert read_recording(path, fs=48000.0, force_fs=True).fs == 48000.0
    assert read_recording(path, fs=own).fs == own  # agreeing is fine
    assert read_recording(path).fs == own


def test_npz_metadata_rate_counts_as_the_files_own(tmp_path: Path) -> None:
    p = tmp_path / "m.npz"
    np.savez(p, samples=_rec(1.0).samples, meta='{"fs": 25600}')
    with pytest.raises(RecordingError, match=r"25600 Hz \(its metadata's fs\)"):
        read_recording(p, fs=51200.0)
    assert read_recording(p, fs=25600.0).fs == 25600.0


def test_files_without_a_rate_take_fs(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, _rec(1.0).samples)
    assert read_recording(p, fs=48000.0).fs == 48000.0
    assert read_recording(_cwru(tmp_path, "normal_0_97.mat"), fs=48000.0).fs == 48000.0


def test_analyze_refuses_a_contradicting_fs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = _cwru(tmp_path, "12k_Drive_End_X_0_1.mat")
    assert main(["analyze", str(p), "--fs", "48000"]) == 2
    err = capsys.readouterr().err
    assert "--fs 48000 Hz contradicts the file's own rate, 12000 Hz" in err
    assert main(["analyze", str(p), "--fs", "48000", "--force-fs", "--json"]) == 0
    assert capsys.readouterr().out.strip()


def test_replay_refuses_a_wav_at_another_fs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = write_wav(tmp_path / "r.wav", _rec(25600.0))
    cfg = write_toml(tmp_path / "edge.toml", edge_config(tmp_path, 1, channels=1))
    code = main(["replay", str(wav), "--config", str(cfg), "--pump", "p1", "--fs", "12000"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--fs 12000 Hz contradicts the file's own rate, 25600 Hz (the WAV header)" in err
