"""``python -m bench.edge`` at a tiny size: one invocation runs TLS off and on and the
other channel counts, prints every key of issue 21, and measures a process that holds
the agent, not the bench's broker helper or PKI code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.edge import ShiftingSource, _intervals, make_config
from tests.infra.bench import run_bench
from tests.infra.fixtures import MOSQUITTO_MISSING
from tests.infra.mosquitto import mosquitto_available
from tests.infra.require import need

KEYS = [
    "realtime_channels_per_core",
    "realtime_channels_per_core_tls",
    "fft_limit_channels_per_core",
    "limit_share",
    "rss_mb",
    "rss_mb_tls",
    "cpu_s_per_channel_s_4",
    "cpu_s_per_channel_s_8",
    "cpu_s_per_channel_s_16",
]


def test_bench_edge_smoke() -> None:
    need("mosquitto", None if mosquitto_available() else MOSQUITTO_MISSING)
    result = run_bench(
        "edge", "--channels", "8", "--seconds", "3", "--repeat", "1", "--scales", "4,16",
        "--band-change-s", "1",
    )
    for key in KEYS:
        assert isinstance(result.get(key), float) and result[key] > 0, key
    assert result["published_eq_acked"] and result["malloc_tuned"]
    # the measured process is the agent's: the broker and its certificates live elsewhere
    assert result["bench_only_modules"] == [] and not result["broker_helper"]
    assert result["source_mb"] < 2.0
    # the ring holds one interval plus ring_s, as a live agent's does
    assert result["ring_capacity"] == 2 * 25600


def test_bench_signal_moves_every_channels_resonance(tmp_path: Path) -> None:
    """Each channel plays the 3.2 kHz loop, then the 7.5 kHz one, flipping every
    change_s on its own schedule, from a source that holds tables, not the stream."""
    cfg = make_config(tmp_path, 1883, 24, 1.0)
    change_s = 0.5
    src = ShiftingSource(cfg, seconds=2.0, change_s=change_s)
    assert src.nbytes < 2 * 2**20
    a, b = src._tables
    seen: list[set[str]] = [set() for _ in range(24)]
    i = 0
    for blk in src.blocks():
        n = blk.samples.shape[1]
        for c in range(24):
            j = (i + src._shift[c]) % src._n
            row = blk.samples[c]
            on_a = np.array_equal(row, a[src._row[c], j : j + n])
            on_b = np.array_equal(row, b[src._row[c], j : j + n])
            assert on_a != on_b
            seen[c].add("a" if on_a else "b")
        i += n
    assert i == round(2.0 * cfg.report.fs)
    assert all(s == {"a", "b"} for s in seen)


def test_bench_intervals_are_the_stream_the_agent_reads(tmp_path: Path) -> None:
    """The dsp-only and FFT-limit passes read the signal the agent reads: each interval
    is the source's blocks in order, copied out of its one reused block buffer (views
    of it would make every block of an interval the last one)."""
    cfg = make_config(tmp_path, 1883, 4, 2.0)
    n = cfg.report.interval_samples
    stream = np.concatenate(
        [blk.samples.copy() for blk in ShiftingSource(cfg, seconds=2.0, change_s=1.0).blocks()],
        axis=1,
    )
    got = list(_intervals(cfg, 2, 1.0))
    assert len(got) == 2
    for k, x in enumerate(got):
        assert np.array_equal(x, stream[:, k * n : (k + 1) * n])
