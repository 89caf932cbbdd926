"""Recording readers and writers: round trips, real files, bad files; the replay source."""

from __future__ import annotations

import csv
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from simulator.bearings import lookup_bearing
from simulator.recordings import (
    G_TO_MS2,
    Recording,
    RecordingError,
    read_recording,
    write_npz,
    write_wav,
)
from simulator.replay import ReplaySource
from simulator.simulated import simulate_recording

SEED = 11


def sample_recording(n: int = 5000, ch: int = 3, fs: float = 25600.0) -> Recording:
    rng = np.random.default_rng(SEED)
    x = (rng.standard_normal((ch, n)) * 3).astype(np.float32)
    return Recording(x, fs, tuple(f"c{i}" for i in range(ch)), rpm=1800.0, meta={"rpm": 1800.0})


# --- round trips --------------------------------------------------------------------------


def test_npz_round_trip_keeps_samples_and_ground_truth(tmp_path: Path) -> None:
    rec = simulate_recording(seconds=0.5, seed=SEED)
    p = write_npz(tmp_path / "r.npz", rec)
    with np.load(p, allow_pickle=False) as z:
        assert z["samples"].dtype == np.float32 and z["samples"].shape == (2, 12800)
        assert float(z["fs"]) == 25600.0
        assert list(z["channels"]) == ["de_h", "de_a"]
    back = read_recording(p)
    assert np.array_equal(back.samples, rec.samples)
    assert back.fs == rec.fs and back.channels == rec.channels and back.rpm == rec.rpm
    bf = back.meta["bearing_frequencies_hz"]
    assert set(bf) == {"bpfo", "bpfi", "bsf", "ftf"}
    assert back.rpm is not None
    assert bf["bpfo"] == pytest.approx(
        lookup_bearing("6308").defect_orders()["bpfo"] * back.rpm / 60
    )
    assert back.meta["pump"]["name"] == "pump1" and back.meta["seed"] == SEED


def test_float32_wav_round_trip_is_exact(tmp_path: Path) -> None:
    rec = sample_recording()
    back = read_recording(write_wav(tmp_path / "r.wav", rec))
    assert np.array_equal(back.samples, rec.samples)
    assert back.channels == rec.channels and back.fs == rec.fs and back.rpm == 1800.0


@pytest.mark.parametrize(("fmt", "bits"), [("int16", 16), ("int24", 24)])
def test_integer_wav_round_trip_within_one_lsb(tmp_path: Path, fmt: str, bits: int) -> None:
    rec = sample_recording()
    p = write_wav(tmp_path / "r.wav", rec, sample_format=fmt, full_scale=20.0)  # type: ignore[arg-type]
    with wave.open(str(p)) as w:
        assert w.getsampwidth() == bits // 8 and w.getnchannels() == 3
    back = read_recording(p)
    lsb = 20.0 / (2 ** (bits - 1) - 1)
    assert np.abs(back.samples - rec.samples).max() <= 0.51 * lsb + 1e-6


def test_foreign_int16_wav_scales_to_full_scale(tmp_path: Path) -> None:
    p = tmp_path / "plain.wav"
    codes = np.array([[0, 0], [16384, -32768]], dtype="<i2")
    with wave.open(str(p), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(codes.tobytes())
    rec = read_recording(p, scale=100.0)
    assert rec.fs == 8000 and rec.channels == ("ch1", "ch2")
    assert rec.samples[:, 1].tolist() == [50.0, -100.0]


def test_csv_and_tsv_with_and_without_header(tmp_path: Path) -> None:
    x = np.round(np.random.default_rng(SEED).standard_normal((500, 2)), 6)
    a = tmp_path / "a.csv"
    a.write_text("# fs = 10000\nx,y\n" + "\n".join(f"{u},{v}" for u, v in x))
    rec = read_recording(a)
    assert rec.fs == 10000 and rec.channels == ("x", "y")
    assert np.allclose(rec.samples, x.T, atol=1e-6)
    b = tmp_path / "b.tsv"
    b.write_text("\n".join(f"{u}\t{v}" for u, v in x))
    with pytest.raises(RecordingError, match="--fs"):
        read_recording(b)
    rec = read_recording(b, fs=5000, scale=[1.0, 2.0])
    assert rec.fs == 5000 and np.allclose(rec.samples[1], 2 * x[:, 1], atol=1e-5)


def test_csv_with_time_column(tmp_path: Path) -> None:
    t = np.arange(400) / 2000.0
    p = tmp_path / "t.csv"
    p.write_text("time,ax\n" + "\n".join(f"{a:.6f},{np.sin(a):.6f}" for a in t))
    rec = read_recording(p)
    assert rec.channels == ("ax",) and rec.fs == pytest.approx(2000.0)


def test_npy_layouts(tmp_path: Path) -> None:
    p = tmp_path / "x.npy"
    np.save(p, np.arange(3000.0).reshape(1000, 3))  # (samples, channels)
    rec = read_recording(p, fs=1000)
    assert rec.samples.shape == (3, 1000) and rec.samples[1, 1] == 4.0


def test_channel_selection_and_unknown_channel(tmp_path: Path) -> None:
    p = write_npz(tmp_path / "r.npz", sample_recording())
    rec = read_recording(p, channels=["c2"])
    assert rec.channels == ("c2",) and rec.samples.shape == (1, 5000)
    with pytest.raises(RecordingError, match="c9"):
        read_recording(p, channels=["c9"])


# --- bad files ------------------------------------------------------------------------------


def test_truncated_wav(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "r.wav", sample_recording(), sample_format="int16")
    raw = p.read_bytes()
    (data_at,) = [i for i in range(len(raw) - 4) if raw[i : i + 4] == b"data"][:1]
    bad = tmp_path / "trunc.wav"
    bad.write_bytes(raw[: data_at + 8 + 1000])
    with pytest.raises(RecordingError) as err:
        read_recording(bad)
    assert "trunc.wav" in str(err.value) and "truncated" in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.csv", "# fs = 100\n", "zero length"),
        ("header.csv", "# fs = 100\na,b\n", "zero length"),
        ("ragged.csv", "# fs = 100\n1,2\n3,4\n5\n", "row 3"),
        ("nan.csv", "# fs = 100\n1,2\nnan,4\n", "non-finite"),
        ("x.xyz", "1 2 3", "unknown recording type"),
        ("notwav.wav", "hello", "RIFF"),
        ("bad.mat", "MATLAB 5.0 but not really", "bad.mat"),
        ("bad.npz", "PK\x03\x04 not a zip", "bad.npz"),
    ],
)
def test_bad_files_name_the_file_and_problem(
    tmp_path: Path, name: str, content: str, needle: str
) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(RecordingError) as err:
        read_recording(p)
    assert name in str(err.value)
    assert needle in str(err.value)


def test_mat_without_cwru_variables(tmp_path: Path) -> None:
    import scipy.io

    p = tmp_path / "12k_other.mat"
    scipy.io.savemat(p, {"foo": np.zeros(10)})
    with pytest.raises(RecordingError, match="_DE_time"):
        read_recording(p)


def test_mat_picks_variables_by_suffix_and_file_number(tmp_path: Path) -> None:
    import scipy.io

    p = tmp_path / "48k_normal_1_99.mat"
    scipy.io.savemat(
        p,
        {
            "X098_DE_time": np.ones((100, 1)),
            "X099_DE_time": np.full((200, 1), 2.0),
            "X099_FE_time": np.full((200, 1), 3.0),
            "X099RPM": np.array([[1772]]),
        },
    )
    rec = read_recording(p)
    assert rec.fs == 48000 and rec.channels == ("DE", "FE") and rec.rpm == 1772
    assert rec.samples[0, 0] == pytest.approx(2 * G_TO_MS2)
    no_prefix = tmp_path / "renamed_1_99.mat"
    no_prefix.write_bytes(p.read_bytes())
    with pytest.raises(RecordingError, match="--fs"):
        read_recording(no_prefix)
    assert read_recording(no_prefix, fs=12000).fs == 12000


def test_zero_length_npy(tmp_path: Path) -> None:
    p = tmp_path / "z.npy"
    np.save(p, np.zeros((2, 0)))
    with pytest.raises(RecordingError, match="zero length"):
        read_recording(p, fs=100)


# --- real recordings -------------------------------------------------------------------------


def manifest(real_data: Path) -> list[dict[str, str]]:
    with (real_data / "manifest.csv").open() as f:
        return list(csv.DictReader(f))


def test_real_recordings_load_with_manifest_rates_and_lengths(real_data: Path) -> None:
    rows = manifest(real_data)
    assert len(rows) >= 10
    for row in rows:
        path = real_data / row["file"]
        fs_manifest = float(row["fs_hz"])
        # Only the CWRU mirror's 12k_/48k_ prefix says the rate; other files need it given.
        needs_fs = path.suffix == ".mat" and path.name[:4] not in ("12k_", "48k_")
        rec = read_recording(path, fs=fs_manifest if needs_fs else None)
        assert rec.fs == fs_manifest, row["file"]
        assert rec.n_samples == int(row["n_samples"]), row["file"]
        if row["dataset"] == "CWRU":
            assert rec.channels[0] == "DE"
            assert len(rec.channels) == len(row["channels"].split(";"))
            assert rec.rpm == float(row["rpm_in_file"])
            rms_g = float(np.sqrt(np.mean(rec.samples[0].astype(np.float64) ** 2))) / G_TO_MS2
            assert rms_g == pytest.approx(float(row["rms"]), rel=0.02), row["file"]
        else:
            assert rec.layout == "ims" and len(rec.channels) == 8
            rms_g = np.sqrt(np.mean(rec.samples.astype(np.float64) ** 2, axis=1)) / G_TO_MS2
            want = [float(v) for v in row["rms"].split(";")]
            assert np.allclose(rms_g, want, rtol=0.02), row["file"]


def test_cwru_normal_file_asks_for_its_rate(real_data: Path) -> None:
    with pytest.raises(RecordingError, match="--fs"):
        read_recording(real_data / "cwru" / "normal_0_97.mat")


# --- replay source ----------------------------------------------------------------------------


def test_replay_never_loses_or_duplicates_a_sample(tmp_path: Path) -> None:
    a = sample_recording(n=5003)
    b = Recording(a.samples[:, :777] + 1, a.fs, a.channels)
    for bs in (1, 64, 1000, 5003, 9999):
        src = ReplaySource([a, b], block_size=bs, loop=2)
        blocks = list(src.blocks())
        got = np.concatenate([blk.samples for blk in blocks], axis=1)
        want = np.concatenate([a.samples, b.samples, a.samples, b.samples], axis=1)
        assert np.array_equal(got, want), f"block_size={bs}"
        t = [blk.t0_ns for blk in blocks]
        assert t == sorted(set(t)), f"block_size={bs}: timestamps repeat"
        assert all(blk.samples.shape[1] <= bs for blk in blocks)


def test_replay_reads_files_and_marks_blocks(tmp_path: Path) -> None:
    p = write_npz(tmp_path / "r.npz", sample_recording(n=3000))
    blocks = list(ReplaySource([p, p], block_size=1024, start_ns=0).blocks())
    assert [(b.truth["offset"], b.samples.shape[1]) for b in blocks[:3]] == [
        (0, 1024),
        (1024, 1024),
        (2048, 952),
    ]
    assert blocks[3].t0_ns == round(3000 * 1e9 / 25600)
    assert blocks[0].rpm is not None and blocks[0].rpm.tolist() == [1800.0] * 3


def test_replay_forever_and_paced() -> None:
    now = [0.0]

    def sleep(d: float) -> None:
        now[0] += d

    src = ReplaySource(
        sample_recording(n=2560),
        block_size=256,
        loop=True,
        pace="realtime",
        clock=lambda: now[0],
        sleep=sleep,
    )
    it = src.blocks()
    for _ in range(25):  # 2.5 passes
        next(it)
    assert now[0] == pytest.approx(25 * 256 / 25600)


def test_replay_rejects_mismatched_recordings() -> None:
    a = sample_recording()
    b = sample_recording(fs=12000.0)
    with pytest.raises(RecordingError, match="12000"):
        ReplaySource([a, b])


def test_wav_info_chunk_is_well_formed(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "r.wav", sample_recording(n=11), sample_format="int16")
    raw = p.read_bytes()
    assert struct.unpack("<I", raw[4:8])[0] == len(raw) - 8
    with wave.open(str(p)) as w:  # the stdlib still reads it
        assert w.getnframes() == 11


@pytest.mark.parametrize("kind", ["mat", "npz", "wav"])
def test_truncated_files_name_the_file(tmp_path: Path, kind: str) -> None:
    import scipy.io

    good = tmp_path / f"12k_good.{kind}"
    x = np.random.default_rng(SEED).standard_normal(20000)
    if kind == "mat":
        scipy.io.savemat(good, {"X001_DE_time": x[:, None], "X001RPM": np.array([[1797]])})
    elif kind == "npz":
        write_npz(good, Recording(x[None, :].astype(np.float32), 1000.0, ("a",)))
    else:
        write_wav(good, Recording(x[None, :].astype(np.float32), 1000.0, ("a",)))
    assert read_recording(good).n_samples == 20000
    bad = tmp_path / f"12k_cut.{kind}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(RecordingError) as err:
        read_recording(bad)
    assert bad.name in str(err.value)


def test_ims_layout_by_upstream_name(tmp_path: Path) -> None:
    x = np.round(np.random.default_rng(SEED).standard_normal((2048, 8)) * 0.1, 3)
    p = tmp_path / "2003.10.22.12.06.24"  # upstream IMS files have no extension
    p.write_text("\n".join("\t".join(f"{v:.3f}" for v in row) for row in x))
    rec = read_recording(p)
    assert rec.layout == "ims" and rec.fs == 20000 and rec.samples.shape == (8, 2048)
    assert np.allclose(rec.samples, x.T * G_TO_MS2, atol=1e-5)
    assert read_recording(p, fs=20480, scale=1.0).fs == 20480
    bad = tmp_path / "2003.10.22.12.09.13"
    bad.write_text("1\t2\t3\n")
    with pytest.raises(RecordingError, match="8 tab-separated"):
        read_recording(bad)
