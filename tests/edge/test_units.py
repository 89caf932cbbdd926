"""Sans-IO pieces without sockets: ring, publisher policy, report builder, config."""

from __future__ import annotations

import random
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


def _drain(ring: SampleRing, maxn: int) -> list[tuple[np.ndarray, int]]:
    out = []
    while (c := ring.read(maxn, timeout=0)) is not None:
        out.append((c.samples, c.t0_ns))
    return out


def test_ring_chunking_never_changes_the_stream() -> None:
    seed = random.randrange(1 << 30)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 5000)).astype(np.float32)
    ring = SampleRing(3, 700, overflow="block")
    got: list[np.ndarray] = []
    pos = 0
    while pos < x.shape[1]:
        n = int(rng.integers(1, 300))
        ring.write(x[:, pos : pos + n], round(pos * 1e9 / FS), FS)
        pos += n
        for s, t in _drain(ring, int(rng.integers(1, 500))):
            assert t == round((sum(g.shape[1] for g in got)) * 1e9 / FS), f"seed={seed}"
            got.append(s)
    np.testing.assert_array_equal(np.concatenate(got, axis=1), x, err_msg=f"seed={seed}")


def test_ring_never_mixes_runs_across_a_gap() -> None:
    ring = SampleRing(1, 100)
    ring.write(np.ones((1, 10), np.float32), 0, FS)
    ring.write(np.ones((1, 10), np.float32), 50_000_000, FS)  # 40 samples missing
    chunks = _drain(ring, 100)
    assert [(s.shape[1], t) for s, t in chunks] == [(10, 0), (10, 50_000_000)]
    assert ring.stats.runs == 2


def test_ring_drop_mode_overwrites_oldest_and_counts() -> None:
    ring = SampleRing(2, 100, overflow="drop")
    x = np.arange(250, dtype=np.float32)[None, :].repeat(2, axis=0)
    ring.write(x, 0, FS)
    assert ring.stats.dropped == 150
    chunks = _drain(ring, 1000)
    assert len(chunks) == 1
    s, t = chunks[0]
    np.testing.assert_array_equal(s[0], np.arange(150, 250))
    assert t == round(150 * 1e9 / FS)  # the reader sees the jump; the framer restarts


def _pub(tmp_path: Path, **kw: object) -> tuple[Publisher, Spool]:
    sp = Spool(tmp_path / "spool", max_bytes=1 << 24)
    pub = Publisher(sp, "dev", **kw)  # type: ignore[arg-type]
    pub.on_connect(0.0)
    return pub, sp


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
