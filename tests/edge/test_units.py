"""Sans-IO pieces without sockets: ring, publisher policy, report builder, config."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

import dsp
from edge.config import ConfigError, config_from_dict, parse_size
from edge.pipeline import ReportBuilder
from edge.publisher import Publisher
from edge.ring import SampleRing
from edge.spool import Spool

from ._helpers import build, edge_config

FS = 1000.0


def _intervals(ring: SampleRing, n: int) -> list[tuple[np.ndarray, int, bool]]:
    """Every whole interval the ring has now, each copied out (rows taken in two
    groups, as the agent takes them by channel group: each used before the next
    rows() call) and released."""
    out = []
    while (iv := ring.take(n, timeout=0)) is not None:
        half = ring.channels // 2
        first = iv.rows(0, half).copy()
        x = np.concatenate([first, iv.rows(half, ring.channels)])
        out.append((x, iv.t0_ns, iv.after_restart))
        ring.release()
    return out


def test_ring_intervals_never_depend_on_how_the_stream_was_written() -> None:
    seed = random.randrange(1 << 30)
    rng = np.random.default_rng(seed)
    n = 97
    x = rng.standard_normal((3, 40 * n + 13)).astype(np.float32)
    for cuts in ("random", "single"):
        ring = SampleRing(3, n + 41, overflow="block")
        got: list[np.ndarray] = []
        pos = 0
        while pos < x.shape[1]:
            k = 1 if cuts == "single" else int(rng.integers(1, 42))
            ring.write(x[:, pos : pos + k], round(pos * 1e9 / FS), FS)
            pos += k
            for s, t, fresh in _intervals(ring, n):
                assert t == round(len(got) * n * 1e9 / FS), f"seed={seed}"
                assert fresh == (not got), f"seed={seed}"
                got.append(s)
        assert len(got) == 40, f"seed={seed}"
        np.testing.assert_array_equal(
            np.concatenate(got, axis=1), x[:, : 40 * n], err_msg=f"seed={seed} {cuts}"
        )
        assert ring.stats.depth == 13 and ring.stats.restarts == 0


def test_ring_intervals_are_views_of_the_ring_and_one_copy_when_they_wrap() -> None:
    ring = SampleRing(4, 150, overflow="block")
    x = np.arange(4 * 200, dtype=np.float32).reshape(4, 200)
    ring.write(x[:, :100], 0, FS)
    iv = ring.take(100, timeout=0)
    assert iv is not None and not iv.wraps
    rows = iv.rows(1, 3)
    assert np.shares_memory(rows, ring._buf)  # no second copy of the samples
    np.testing.assert_array_equal(rows, x[1:3, :100])
    ring.release()
    ring.write(x[:, 100:200], round(100 * 1e9 / FS), FS)  # 100..149, then 0..49 physically
    iv = ring.take(100, timeout=0)
    assert iv is not None and iv.wraps and iv.t0_ns == round(100 * 1e9 / FS)
    a = iv.rows(0, 2)
    assert not np.shares_memory(a, ring._buf)
    np.testing.assert_array_equal(a, x[0:2, 100:200])
    b = iv.rows(2, 4)
    assert np.shares_memory(a, b)  # one reused scratch buffer, group by group
    np.testing.assert_array_equal(b, x[2:4, 100:200])
    ring.release()


def test_ring_never_splices_intervals_across_a_gap() -> None:
    ring = SampleRing(2, 200)
    one = np.ones((2, 30), np.float32)
    ring.write(one, 0, FS)
    ring.write(one, 30_000_000, FS)  # continues: 60 samples of one run
    ring.write(one, 100_000_000, FS)  # 40 samples missing
    ring.write(one, 130_000_000, FS)
    got = _intervals(ring, 50)
    # 0..49 of the first run; its last 10 samples discarded; 50 of the second run
    assert [(t, fresh) for _x, t, fresh in got] == [(0, True), (100_000_000, True)]
    assert ring.stats.runs == 2 and ring.stats.discarded == 10 and ring.stats.restarts == 1
    ring.write(one[:, :10], 170_000_000, FS)  # a rate change starts a run too
    ring.write(one[:, :10], 180_000_000, FS / 2)
    ring.close()
    assert ring.take(50, timeout=0) is None and ring.drained


def test_ring_drop_mode_drops_oldest_and_counts() -> None:
    ring = SampleRing(2, 100, overflow="drop")
    x = np.arange(250, dtype=np.float32)[None, :].repeat(2, axis=0)
    ring.write(x, 0, FS)
    assert ring.stats.dropped == 150
    ((s, t, fresh),) = _intervals(ring, 100)
    np.testing.assert_array_equal(s[0], np.arange(150, 250))
    assert t == round(150 * 1e9 / FS) and fresh  # the reader sees the jump


def test_ring_drop_mode_never_overwrites_the_leased_interval() -> None:
    ring = SampleRing(2, 100, overflow="drop")
    x = np.arange(400, dtype=np.float32)[None, :].repeat(2, axis=0)
    ring.write(x[:, :60], 0, FS)
    iv = ring.take(60, timeout=0)
    assert iv is not None
    ring.write(x[:, 60:200], round(60 * 1e9 / FS), FS)  # 40 fit; 100 arrive while leased
    np.testing.assert_array_equal(iv.rows(0, 2)[0], np.arange(60))  # untouched
    assert ring.stats.dropped == 100
    ring.release()
    ring.write(x[:, 200:260], round(200 * 1e9 / FS), FS)  # after the gap: a new run
    got = _intervals(ring, 60)
    assert [(t, fresh) for _x, t, fresh in got] == [(round(200 * 1e9 / FS), True)]
    np.testing.assert_array_equal(got[0][0][0], np.arange(200, 260))
    assert ring.stats.discarded == 40  # 60..99: a run too short for an interval


def test_ring_drop_mode_under_a_live_writer_never_tears_an_interval() -> None:
    """A writer thread that never waits for the ring (paced like a sensor) and a reader
    slower than it: every interval taken is exactly the source's samples at its time
    (sample k carries the value k), however many were lost meanwhile."""
    ring = SampleRing(3, 700, overflow="drop")
    total, n = 20_000, 400

    def write() -> None:
        for k in range(0, total, 50):
            x = np.arange(k, k + 50, dtype=np.float32)[None, :].repeat(3, axis=0)
            ring.write(x, round(k * 1e9 / FS), FS)
            time.sleep(0.0002)  # the sensor's pace, not a synchronisation
        ring.close()

    t = threading.Thread(target=write)
    t.start()
    taken = 0
    while (iv := ring.take(n, timeout=5.0)) is not None:
        first = round(iv.t0_ns * FS / 1e9)
        want = np.arange(first, first + n, dtype=np.float32)
        for lo, hi in ((0, 2), (2, 3)):
            rows = iv.rows(lo, hi)
            time.sleep(0.002)  # DSP's time with the lease held: the writer runs on
            np.testing.assert_array_equal(rows, np.broadcast_to(want, rows.shape))
        ring.release()
        taken += 1
    t.join()
    assert taken >= 5 and ring.drained
    assert ring.stats.dropped > 0  # the reader was slower: samples were lost, not spliced
    assert ring.stats.restarts > 0


def _pub(tmp_path: Path, **kw: object) -> tuple[Publisher, Spool]:
    sp = Spool(tmp_path / "spool", max_bytes=1 << 24)
    pub = Publisher(sp, "dev", **kw)  # type: ignore[arg-type]
    pub.on_connect(0.0)
    return pub, sp


_RING_MAPPING = """
import gc, sys
from edge.memory import keep_large_blocks
from edge.ring import SampleRing

def region(addr):
    for line in open("/proc/self/maps"):
        parts = line.split()
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if lo <= addr < hi:
            return parts[5] if len(parts) > 5 else "", hi - lo
    return None

assert keep_large_blocks()  # as the agent runs: blocks under 32 MiB come from the heap
ring = SampleRing(16, 25_600)  # 1.6 MB
addr, size = ring._buf.ctypes.data, ring._buf.nbytes
name, extent = region(addr)
assert name != "[heap]", name
assert extent >= size, (extent, size)
del ring
gc.collect()
after = region(addr)
assert after is None or after[0] == "[heap]" or after[1] < size, after  # unmapped
print("ok")
"""


def test_ring_samples_live_in_a_mapping_of_their_own_not_the_malloc_heap() -> None:
    """With the agent's malloc tuning a ring under 32 MiB would sit in the heap among
    the DSP temporaries (a freed one left a hole they fragmented: +10 MB peak RSS);
    it is a mapping of its own, gone when the ring is (read from /proc/self/maps: the
    gateways this runs on are Linux)."""
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run(
        [sys.executable, "-c", _RING_MAPPING], cwd=root, capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_publisher_packs_batches_under_the_size_cap(tmp_path: Path) -> None:
    pub, sp = _pub(tmp_path, max_message_bytes=10_000, rate=1e6, inflight=100)
    sp.append([(1, i, msgspec.msgpack.encode(bytes(1500))) for i in range(20)])
    outs = pub.poll(0.0)
    assert all(len(o.payload) <= 10_000 for o in outs)
    assert sum(len(o.keys) for o in outs) == 20
    assert [k for o in outs for k in o.keys] == [(1, i) for i in range(20)]
    assert len(dsp.decode_batch(outs[0].payload).reports) == len(outs[0].keys)


def test_publisher_window_rate_and_failure_hold(tmp_path: Path) -> None:
    pub, sp = _pub(
        tmp_path,
        max_message_bytes=8192,
        rate=10.0,
        inflight=3,
        failure_backoff_s=4.0,
        rng=lambda: 0.5,
    )
    sp.append([(1, i, bytes(3000)) for i in range(40)])  # 2 per message
    first = pub.poll(0.0)
    assert len(first) == 1  # burst of rate/10 = 1 token
    assert pub.poll(0.01) == []  # no token yet
    for i, o in enumerate(first):
        pub.sent(o, i)
    more = pub.poll(0.5)  # tokens again, but the window allows only 2 more
    assert len(more) == 1 or len(more) == 2
    for i, o in enumerate(more, start=10):
        pub.sent(o, i)
    while pub.inflight_messages < 3:
        (o,) = pub.poll(10.0)
        pub.sent(o, 99)
    assert pub.poll(20.0) == []  # window full
    pub.on_ack(0, True, "Success", 20.0)
    assert sp.stats.acked == 2
    pub.on_ack(10, False, "Not authorized (0x87)", 20.0)
    assert pub.stats.last_error and "0x87" in pub.stats.last_error
    assert pub.held(23.9) and not pub.held(24.1)
    assert pub.poll(21.0) == []  # held: no hot retry
    again = pub.poll(30.0)
    assert again and again[0].keys == more[0].keys  # refused reports go out first again


def test_report_builder_chunks_give_identical_reports(tmp_path: Path) -> None:
    d = edge_config(tmp_path, 1883, channels=5)
    rng = np.random.default_rng(3)
    cfg = build(d)
    x = rng.standard_normal((5, cfg.report.interval_samples)).astype(np.float32)
    whole = ReportBuilder(cfg, 7).build(x, 0)
    d["pipeline"] = {"chunk_channels": 2}
    parts = ReportBuilder(build(d), 7).build(x, 0)
    assert [p for _e, _s, p in whole] == [p for _e, _s, p in parts]
    assert [s for _e, s, _p in parts] == [0, 1, 2, 3, 4]


def test_config_lists_every_problem_and_resolves_bearings(tmp_path: Path) -> None:
    d = edge_config(tmp_path, 1883)
    d["pumps"][0]["bearings"] = [
        "6205",
        {"n_balls": 8, "ball_d_mm": 10, "pitch_d_mm": 50, "location": "NDE"},
    ]
    cfg = build(d)
    b = cfg.pumps[0].asset.bearings
    assert (b[0].n_balls, b[0].designation) == (9, "6205") and b[1].location == "NDE"
    d["mqtt"]["inflight"] = 0
    d["status"]["interval_s"] = -1
    d["pumps"][0]["vanes"] = 500
    with pytest.raises(ConfigError) as e:
        config_from_dict(d)
    text = e.value.report()
    assert "[mqtt] inflight must be >= 1, got 0" in text
    assert "[status] interval_s must be > 0.0, got -1" in text
    assert "[pumps.p1] vanes must be <= 64, got 500" in text
    assert parse_size("1 GiB") == 1 << 30 and parse_size("512MB") == 512 * 10**6


def test_example_config_is_valid() -> None:
    from edge.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "edge" / "example.toml")
    assert cfg.device == "gw-plant-a-01" and cfg.spool.max_bytes == 1 << 30
    assert cfg.mqtt.max_message_bytes == 128 * 1024
    assert [b.designation for b in cfg.pumps[0].asset.bearings] == ["6308", "6306"]
    assert cfg.topic("reports") == "pumpwatch/devices/gw-plant-a-01/reports"


BAD_NAMES = ["+", "#", "a/b", "x#", "a\x00b", "../../etc/passwd", "<b>x</b>", "a b", "",
             "é", "x" * 65, "gw1\n", "p\x12"]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("where", ["device", "site", "pump", "channel"])
def test_names_outside_the_rule_are_refused(tmp_path: Path, where: str, bad: str) -> None:
    """DESIGN.md's name rule: 1-64 of A-Z a-z 0-9 _ . : - (a name is a topic level)."""
    d = edge_config(tmp_path, 1883)
    if where in ("device", "site"):
        d[where] = bad
    elif where == "pump":
        d["pumps"][0]["id"] = bad
    else:
        d["pumps"][0]["channels"][0] = bad
    with pytest.raises(ConfigError) as e:
        config_from_dict(d)
    assert "1-64 characters" in e.value.report()
    ok = "gw-1.a_b:c-" + "x" * 53  # 64 characters from every allowed class
    d = edge_config(tmp_path, 1883, device=ok)
    d["site"], d["pumps"][0]["id"] = ok, ok
    assert build(d).device == ok


def test_the_agent_says_at_start_which_pumps_it_reads_as_having_no_impeller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pump without vanes is a machine without an impeller to the model (cavitation is
    never named): the agent logs that once at start, for that pump only."""
    from edge.agent import Agent
    from edge.sources import synthetic_source

    d = edge_config(tmp_path, 1)
    d["pumps"].append({**d["pumps"][0], "id": "rig", "vanes": None,
                       "channels": ["r0"]})
    del d["pumps"][1]["vanes"]
    cfg = build(d)
    with caplog.at_level(logging.INFO, logger="edge.agent"):
        Agent(cfg, synthetic_source(cfg)).spool.close()
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("config:")]
    assert notes == ["config: pump rig states no vanes: read as a machine without an "
                     "impeller (a motor or test rig: no blade-pass line, and the model never "
                     "names cavitation); state vanes for a pump"]
