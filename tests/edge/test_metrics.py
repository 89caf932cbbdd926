"""The agent's /metrics (hand-written exposition) scraped while it runs against a real
Mosquitto, parsed with prometheus_client's parser; and its JSON logs, from a real process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.config import ConfigError
from edge.sources import synthetic_source

from ..infra.mosquitto import Mosquitto
from ..infra.scrape import assert_documented, scrape
from ._helpers import Collector, build, edge_config, write_toml
from .test_agent_broker import Running

ROOT = Path(__file__).resolve().parents[2]


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_agent_metrics_follow_the_status(tmp_path: Path, mosquitto: Mosquitto) -> None:
    d = edge_config(tmp_path, mosquitto.port, channels=2, source={"duration_s": 5})
    d["status"]["metrics_port"] = 0
    cfg = build(d)
    agent = Agent(cfg, synthetic_source(cfg), overflow="block")
    with Running(agent):
        wait_until(lambda: agent.publisher.stats.acked_reports == 10, 30, "10 acked reports")
        assert agent.metrics is not None
        url = f"http://127.0.0.1:{agent.metrics.port}/metrics"
        s = scrape(url)
        assert s.families["pumpwatch_edge_reports"] == "counter"
        assert s.value("pumpwatch_edge_reports_total") == 10  # 5 intervals x 2 channels
        assert s.value("pumpwatch_edge_acked_reports_total") == 10
        assert s.value("pumpwatch_edge_spool_reports") == 0
        assert s.value("pumpwatch_edge_spool_max_bytes") == cfg.spool.max_bytes
        assert s.value("pumpwatch_edge_spool_bytes") > 0
        assert s.value("pumpwatch_edge_link_state", state="connected") == 1
        assert s.value("pumpwatch_edge_link_state", state="disconnected") == 0
        assert s.value("pumpwatch_edge_mqtt_connects_total") == 1
        assert s.value("pumpwatch_edge_info", device=cfg.device, site="lab",
                       epoch=f"{agent.epoch:016x}") == 1
        assert s.value("pumpwatch_edge_lost_reports_total", reason="spool_error") == 0
        assert s.value("pumpwatch_edge_spool_republished_passed_reports_total") == 0
        assert s.value("pumpwatch_edge_spool_republish_probe_rounds_total") == 0
        per_report = s.value("pumpwatch_edge_dsp_seconds_per_report")
        assert per_report == pytest.approx(s.value("pumpwatch_edge_dsp_seconds_total") / 10)
        assert 0 < per_report < 1.0
        assert_documented(s, "pumpwatch_edge_")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url.replace("/metrics", "/other"), timeout=5)  # noqa: S310
        assert err.value.code == 404
    # stopped with the agent: nothing listens any more
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_metrics_port_is_off_by_default_and_checked(tmp_path: Path) -> None:
    assert build(edge_config(tmp_path, 1883)).status.metrics_port is None
    d = edge_config(tmp_path, 1883)
    d["status"]["metrics_port"] = 70000
    with pytest.raises(ConfigError, match=r"\[status\] metrics_port must be <= 65535, got 70000"):
        build(d)


def test_json_logs_one_object_per_line_with_fields(tmp_path: Path, mosquitto: Mosquitto) -> None:
    d = edge_config(tmp_path, mosquitto.port, channels=2, source={"duration_s": 2})
    cfg_path = write_toml(tmp_path / "edge.toml", d)
    col = Collector(mosquitto, d["device"]).start()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "--log-format", "json", "edge",
             "--config", str(cfg_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        col.stop()
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    for r in records:
        assert {"time", "level", "logger", "message"} <= r.keys()
        assert datetime.fromisoformat(r["time"]).utcoffset() is not None
    start = next(r for r in records if r["logger"] == "edge.agent"
                 and r["message"].startswith("agent "))
    assert start["device"] == d["device"] and start["site"] == "lab"
    assert re.fullmatch(r"[0-9a-f]{16}", start["epoch"])
    # a clean stop's disconnect is INFO, and a clean run says nothing at WARNING or above
    bye = [r for r in records if "disconnected" in r["message"]]
    assert bye and all(r["level"] == "INFO" for r in bye)
    assert not [r for r in records if r["level"] in ("WARNING", "ERROR", "CRITICAL")]


def test_a_metrics_port_in_use_fails_the_start_with_exit_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        d = edge_config(tmp_path, 1883)
        d["status"]["metrics_port"] = busy.getsockname()[1]
        cfg_path = write_toml(tmp_path / "edge.toml", d)
        p = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "edge", "--config", str(cfg_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert p.returncode == 2, p.stderr
    assert f"metrics listener cannot bind 127.0.0.1:{d['status']['metrics_port']}" in p.stderr
    assert "Traceback" not in p.stderr
