"""The edge keeps each channel's envelope band across the reports of a stream: the agent's
reports on a steady simulated machine carry one band, whatever the block size or the
channel grouping, and a restart searches afresh."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

import dsp
from edge.agent import Agent
from edge.config import EdgeConfig
from edge.pipeline import ReportBuilder
from edge.ring import SampleRing
from edge.sources import simulated_source
from simulator import FaultConfig, PumpConfig
from simulator.recordings import write_npz
from simulator.simulated import SimulatedSource, simulate_recording

from ..infra.mosquitto import Mosquitto
from ._helpers import Collector, build, edge_config, write_toml

ROOT = Path(__file__).resolve().parents[2]

SECONDS = 16


def _config(tmp_path: Path, port: int, **source: Any) -> dict[str, Any]:
    # seed 0 with a weak outer-race defect: a machine whose per-record band choice hops
    d = edge_config(
        tmp_path, port, channels=2,
        source={"kind": "simulated", "seed": 0, "duration_s": SECONDS, **source},
    )
    d["pumps"][0]["simulate"] = {"faults": [{"kind": "outer_race", "severity": 0.45}]}
    return d


def _samples(cfg: EdgeConfig) -> NDArray[np.float32]:
    src = simulated_source(cfg)
    assert isinstance(src, SimulatedSource)
    return src.read(SECONDS * round(cfg.report.fs)).samples


def _per_record_switches(cfg: EdgeConfig, x: NDArray[np.float32]) -> list[int]:
    n = cfg.report.interval_samples
    specs = ReportBuilder(cfg, 1).specs
    bands = [
        [r.envelope_band for r in dsp.analyze(x[:, i * n : (i + 1) * n], cfg.report, specs)]
        for i in range(x.shape[1] // n)
    ]
    return [sum(a[c] != b[c] for a, b in itertools.pairwise(bands)) for c in range(2)]


def _framed(cfg: EdgeConfig, x: NDArray[np.float32], block: int) -> list[bytes]:
    """Reports as the agent computes them: blocks -> the ring's intervals (views) ->
    ReportBuilder.build_part per channel group."""
    b = ReportBuilder(cfg, 7)
    n = cfg.report.interval_samples
    groups = [(lo, min(lo + b.chunk, b.n_channels)) for lo in range(0, b.n_channels, b.chunk)]
    ring = SampleRing(b.n_channels, n + block, overflow="block")
    out: list[tuple[int, bytes]] = []
    for start in range(0, x.shape[1], block):
        ring.write(x[:, start : start + block], round(start * 1e9 / cfg.report.fs), cfg.report.fs)
        while (iv := ring.take(n, timeout=0)) is not None:
            seq0 = round(iv.t0_ns * cfg.report.fs / 1e9) // n * b.n_channels
            for lo, hi in groups:
                recs = b.build_part(lo, iv.rows(lo, hi), iv.t0_ns, seq0=seq0,
                                    after_restart=iv.after_restart)
                out += [(s, p) for _e, s, p in recs]
            ring.release()
    return [p for _s, p in sorted(out)]


def test_block_size_and_channel_grouping_never_change_the_reports(tmp_path: Path) -> None:
    d = _config(tmp_path, 1883)
    cfg = build(d)
    x = _samples(cfg)[:, : 12 * cfg.report.interval_samples]
    whole = _framed(cfg, x, x.shape[1])
    assert len(whole) == 24
    for block, chunk in [(2560, 16), (997, 1), (cfg.report.interval_samples + 1, 1), (1, 16)]:
        if block == 1:
            x1 = x[:, : 3 * cfg.report.interval_samples]  # one sample at a time: 3 intervals
            assert _framed(build({**d, "pipeline": {"chunk_channels": chunk}}), x1, 1) == (
                _framed(cfg, x1, x1.shape[1])
            )
            continue
        got = _framed(build({**d, "pipeline": {"chunk_channels": chunk}}), x, block)
        assert got == whole, f"block={block} chunk_channels={chunk}"
    bands = [dsp.decode_report(p).envelope_band for p in whole]
    assert len(set(bands[0::2])) == 1 and len(set(bands[1::2])) == 1


def test_a_restart_window_searches_afresh(tmp_path: Path) -> None:
    cfg = build(_config(tmp_path, 1883))
    x = _samples(cfg)
    n = cfg.report.interval_samples
    b = ReportBuilder(cfg, 1)
    for i in range(6):
        b.build(x[:, i * n : (i + 1) * n], i, after_restart=i == 0)
    assert all(s is not None and s.searches >= 4 for s in b.band_states)
    b.build(x[:, 6 * n : 7 * n], 6, after_restart=True)
    assert all(s is not None and s.searches == 1 for s in b.band_states)
    b.reset_tracking()
    assert b.band_states == [None, None]


def test_the_agents_reports_carry_one_band_on_a_steady_machine(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    d = _config(tmp_path, mosquitto.port, pace="fast")
    cfg = build(d)
    # the same samples, chosen per record (the dsp before band tracking), hop between bands
    assert min(_per_record_switches(cfg, _samples(cfg))) >= 3
    col = Collector(mosquitto, cfg.device).start()
    try:
        agent = Agent(cfg, simulated_source(cfg), exit_when_drained=True, overflow="block")
        assert agent.run() == 0
        assert col.wait_for(2 * SECONDS, 10)
    finally:
        col.stop()
    reps = sorted({r.identity: r for r in col.reports}.values(), key=lambda r: r.seq)
    assert len(reps) == 2 * SECONDS
    for ch in ("c0", "c1"):
        bands = [r.envelope_band for r in reps if r.channel == ch]
        assert len(bands) == SECONDS and len(set(bands)) == 1, f"{ch}: {bands}"


def test_replay_reports_carry_one_band(tmp_path: Path, mosquitto: Mosquitto) -> None:
    pump = PumpConfig.default(faults=(FaultConfig(kind="outer_race", severity=0.45),))
    rec = write_npz(tmp_path / "rec.npz", simulate_recording(pump, 12.0, seed=0))
    d = edge_config(tmp_path, mosquitto.port, channels=2)
    cfg = write_toml(tmp_path / "edge.toml", d)
    col = Collector(mosquitto, d["device"]).start()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "replay", str(rec), "--pump", "p1",
             "--config", str(cfg)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert p.returncode == 0, p.stderr
        assert col.wait_for(24, 10)
    finally:
        col.stop()
    for ch in ("c0", "c1"):
        bands = [r.envelope_band for r in col.reports if r.channel == ch]
        assert len(bands) >= 12 and len(set(bands)) == 1, f"{ch}: {bands}"
