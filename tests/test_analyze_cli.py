"""``pumpwatch simulate`` and ``pumpwatch analyze`` end to end, on simulated and real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pumpwatch.cli import main

ENV = ("env_bpfo", "env_bpfi", "env_bsf", "env_ftf")


def analyze_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main(["analyze", *argv, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    for r in rows:
        for key in ("velocity_rms", "kurtosis", "rpm", *ENV):
            assert key in r
    return rows


def med(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def test_simulate_default_outer_race_then_analyze(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec.npz"
    assert main(["simulate", "--fault", "outer_race", "--seconds", "3", "--out", str(out)]) == 0
    assert "BPFO" in capsys.readouterr().out
    rows = analyze_json(capsys, str(out))
    assert len(rows) == 3
    assert rows[0]["rpm"] == pytest.approx(2950.0)
    assert med(rows, "env_bpfo") > 5 and med(rows, "env_bpfo") > 2 * med(rows, "env_bpfi")
    assert main(["analyze", str(out)]) == 0
    table = capsys.readouterr().out
    assert "BPFO" in table and "median" in table


def test_simulate_from_toml_to_wav_and_analyze_healthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "p.toml"
    cfg.write_text('name = "p9"\nrpm = 1780\n[[bearings]]\ndesignation = "6206"\n')
    out = tmp_path / "rec.wav"
    argv = ["simulate", "--pump", str(cfg), "--seconds", "2", "--out", str(out)]
    assert main([*argv, "--wav-format", "int16", "--seed", "5"]) == 0
    capsys.readouterr()
    rows = analyze_json(capsys, str(out), "--channel", "de_h")
    assert all(r["iso_zone"] in "AB" for r in rows)
    assert max(med(rows, k) for k in ENV) < 4


def test_analyze_bad_input_exits_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.xyz"
    bad.write_text("1")
    assert main(["analyze", str(bad)]) == 2
    assert "x.xyz" in capsys.readouterr().err
    ok = tmp_path / "rec.npz"
    main(["simulate", "--seconds", "1", "--out", str(ok)])
    capsys.readouterr()
    assert main(["analyze", str(ok), "--bearing", "9999"]) == 2
    assert "9999" in capsys.readouterr().err
    assert main(["analyze", str(ok), "--channel", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_cwru_outer_race_shows_bpfo_line(
    real_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = real_data / "cwru" / "12k_Drive_End_OR007at6_0_130.mat"
    rows = analyze_json(capsys, str(f), "--bearing", "6205")
    assert len(rows) == 10
    assert rows[0]["rpm"] == 1796.0  # from the file's X130RPM
    bpfo, bpfi = med(rows, "env_bpfo"), med(rows, "env_bpfi")
    assert bpfo > 4, rows
    assert bpfo > 2.5 * bpfi, rows


def test_cwru_normal_shows_no_line(real_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = real_data / "cwru" / "normal_0_97.mat"
    rows = analyze_json(capsys, str(f), "--fs", "48000", "--bearing", "6205")
    assert len(rows) == 5
    for k in ENV:
        assert med(rows, k) < 3, (k, rows)


def test_ims_file_analyzes(real_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = next((real_data / "ims").glob("*.tsv"))
    rows = analyze_json(capsys, str(f), "--channel", "ch5")
    assert len(rows) == 1 and rows[0]["channel"] == "ch5"


def test_analyze_csv_in_g_with_scale_and_fs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator import FaultConfig, PumpConfig
    from simulator.simulated import simulate_recording

    rec = simulate_recording(
        PumpConfig.default(faults=(FaultConfig(kind="imbalance", severity=0.8),)), 2.0, seed=3
    )
    p = tmp_path / "g.csv"
    g = rec.samples[0] / 9.80665
    p.write_text("accel_g\n" + "\n".join(f"{v:.6g}" for v in g))
    rows = analyze_json(capsys, str(p), "--fs", "25600", "--scale", "9.80665", "--rpm", "2950")
    assert len(rows) == 2
    assert all(r["iso_zone"] == "D" for r in rows)  # 1x imbalance at 0.8: ~8 mm/s
    assert rows[0]["env_bpfo"] is None  # no bearing named: no envelope lines


def test_analyze_keeps_one_envelope_band_across_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a weak outer-race defect on seed 0: chosen per record, the band hops between reports
    out = tmp_path / "rec.npz"
    argv = ["simulate", "--fault", "outer_race", "--severity", "0.45", "--seed", "0"]
    assert main([*argv, "--seconds", "12", "--out", str(out)]) == 0
    capsys.readouterr()
    rows = analyze_json(capsys, str(out))
    assert len(rows) == 12
    assert len({tuple(r["env_band_hz"]) for r in rows}) == 1, [r["env_band_hz"] for r in rows]
