"""The agent as a real process: kill -9 mid-stream and restart; config errors exit 2."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.pipeline import COMPUTING, ProgressMark
from edge.spool import Spool

from ..infra.mosquitto import Mosquitto
from ._helpers import Collector, edge_config, write_toml

ROOT = Path(__file__).resolve().parents[2]


def _start(cfg_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pumpwatch",
            "--log-level",
            "INFO",
            "edge",
            "--config",
            str(cfg_path),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_agent_kill_9_and_restart_loses_no_spooled_report(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    d = edge_config(tmp_path, mosquitto.port, channels=16, status_interval_s=1.0)
    # run 1 publishes slowly (3 messages/s of <= 16 KiB) so a backlog is spooled at the kill
    slow = {**d, "mqtt": {**d["mqtt"], "publish_rate": 3.0, "max_message_bytes": 16384}}
    cfg_path = write_toml(tmp_path / "edge.toml", slow)
    col = Collector(mosquitto, d["device"]).start()
    try:
        first = _start(cfg_path, tmp_path / "run1.log")
        assert col.wait_for(20, 20), (tmp_path / "run1.log").read_text()
        time.sleep(rng.uniform(0.0, 1.0))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # the broker publishes the agent's will: retained status "offline, connection lost"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
            st.get("reason") == "connection lost" for st in col.status
        ):
            time.sleep(0.05)
        assert any(
            st["state"] == "offline" and st["reason"] == "connection lost" for st in col.status
        )
        # what the dead agent left behind
        with Spool(tmp_path / "spool", max_bytes=1 << 30) as sp:
            left = {r.key for r in sp.peek(10**6)}
        mark = ProgressMark(tmp_path / "spool")
        prev = mark.read()
        mark.close()
        assert prev is not None
        epoch1 = prev[0]
        received_before = {k for k in col.identities() if k[0] == epoch1}
        spooled_by_run1 = left | received_before
        cfg_path = write_toml(tmp_path / "edge.toml", d)
        second = _start(cfg_path, tmp_path / "run2.log")
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                now_got = set(col.identities())
                if spooled_by_run1 <= now_got and any(e != epoch1 for e, _ in now_got):
                    break
                time.sleep(0.1)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
        log2 = (tmp_path / "run2.log").read_text()
        print(
            f"agent kill -9: {len(received_before)} delivered before, {len(left)} left spooled, "
            f"killed {'while computing' if prev[3] == COMPUTING else 'between intervals'}"
        )
        got = set(col.identities())
        missing = spooled_by_run1 - got
        assert not missing, f"seed={seed}: {len(missing)} spooled reports never arrived"
        # run 1's reports form one gap-free run from seq 0: only unspooled ones (the tail) lost
        seqs = sorted(s for e, s in got if e == epoch1)
        assert seqs == list(range(len(seqs))), f"seed={seed}: holes in epoch {epoch1:x}"
        if prev[3] == COMPUTING:
            lost = prev[2] - prev[1]
            assert f"stopped while computing {lost} reports" in log2
            assert seqs[-1] < prev[2]
        assert left and f"recovered {len(left)} unacknowledged reports" in log2
        epochs = {e for e, _ in got}
        assert len(epochs) == 2, "the restarted agent draws a new epoch"
    finally:
        col.stop()


def test_invalid_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    d = edge_config(tmp_path, 1883)
    d["device"] = "bad/name"
    d["report"] = {"nfft": 1000, "lines": 99999}
    d["mqtt"]["port"] = 0
    d["spool"]["max_bytes"] = "lots"
    d["pumps"][0]["bearings"] = ["nonesuch"]
    d["pumps"][0]["channels"] = []
    d["surprise"] = 1
    cfg_path = write_toml(tmp_path / "edge.toml", d)
    p = subprocess.run(
        [sys.executable, "-m", "pumpwatch", "edge", "--config", str(cfg_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    err = p.stderr
    src = f"{cfg_path}: "
    for needle in (
        "device must be 1-64 characters",
        "[report] nfft must be a power of two",
        "[report] lines",
        "[mqtt] port must be >= 1, got 0",
        "[spool] max_bytes must be a size",
        "[pumps.p1.bearings.0] unknown bearing designation 'nonesuch'",
        "[pumps.p1] channels needs at least 1 item(s), got 0",
        "surprise: unknown key",
    ):
        assert src + needle in err, f"{needle!r} not in:\n{err}"
    assert err.count(src) >= 8
