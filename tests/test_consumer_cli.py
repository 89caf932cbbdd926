"""``pumpwatch results``, ``pumpwatch baseline fit --store`` and ``pumpwatch cloud`` wiring."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path

import pytest

import dsp
from cloud.consumer import ConfigError, config_from_dict, load_config
from cloud.store import (
    ArchivedReport,
    Commit,
    DeadLetter,
    EvidenceRow,
    ResultRow,
    SQLiteStore,
)
from models.serving.baseline import Baselines
from pumpwatch.cli import main
from tests.infra.pipeline import encoded_reports, write_toml

T0 = 1_764_000_000_000_000_000  # 2025-11-24T16:00:00Z


def _fill(db: Path) -> None:
    raws = encoded_reports("dev1", 5, range(40), pumps=("pA", "pB"), t0_ns=T0)
    now = time.time_ns()
    results, archive = [], []
    for raw in raws:
        r = dsp.decode_report(raw)
        results.append(ResultRow(
            device=r.device, epoch=r.epoch, seq=r.seq, site=r.site, pump=r.pump,
            channel=r.channel, t0_ns=r.t0_ns, condition="healthy",
            probabilities={"healthy": 0.8}, anomaly_score=0.5, anomaly_threshold=2.0,
            anomalous=False, baseline="fleet", iso_zone="A", velocity_rms=1.0, rpm=2950.0,
            evidence=[EvidenceRow("x", 1.0)], model_version="m1", target="ep",
            published_ns=now - 5_000_000, received_ns=now,
            extra={"centroid_distance": 0.5} if r.seq == 0 else {},
        ))
        archive.append(ArchivedReport(
            device=r.device, epoch=r.epoch, seq=r.seq, site=r.site, pump=r.pump,
            channel=r.channel, t0_ns=r.t0_ns, received_ns=now, report=raw,
        ))

    async def go() -> None:
        s = SQLiteStore(str(db))
        await s.open()
        await s.commit(Commit(results=results, archive=archive, dead_letters=[
            DeadLetter(key=b"k" * 16, part=-1, received_ns=now, topic="pumpwatch/devices/x/reports",
                       kind="spoofed", reason="batch device 'y' differs", payload=b"\x90"),
        ]))
        await s.close()

    asyncio.run(go())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "r.db"
    _fill(path)
    return path


def test_results_formats(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{db}"
    assert main(["results", "--store", url, "--pump", "pA", "--format", "json",
                 "--oldest-first"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20
    assert {r["pump"] for r in rows} == {"pA"}
    assert rows[0]["evidence"] == [{"name": "x", "value": 1.0, "note": ""}]
    # a model's own result fields, merged into its row
    assert rows[0]["centroid_distance"] == 0.5 and rows[0]["extra_fields"] == ["centroid_distance"]
    assert rows[1]["extra_fields"] == [] and "extra" not in rows[0]

    since = "2025-11-24T16:00:10Z"
    assert main(["results", "--store", url, "--pump", "pB", "--since", since,
                 "--until", "2025-11-24T16:00:20", "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["seq"]) for r in table] == [19, 17, 15, 13, 11]  # newest first
    assert table[-1]["time"] == "2025-11-24T16:00:11.000Z"
    assert float(table[0]["latency_ms"]) > 0

    assert main(["results", "--store", url, "--pump", "pA", "--limit", "3"]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 4  # header + 3
    assert "condition" in out.out
    assert "3 result(s)" in out.err


def test_results_default_to_the_stacks_store_newest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # right after ./run.sh: the stack's state/pumpwatch.db, found with no --store
    monkeypatch.delenv("PUMPWATCH_STORE", raising=False)
    monkeypatch.delenv("PUMPWATCH_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").mkdir()
    _fill(tmp_path / "state" / "pumpwatch.db")
    assert main(["results", "--pump", "pA", "--limit", "3", "--format", "json"]) == 0
    assert [r["seq"] for r in json.loads(capsys.readouterr().out)] == [38, 36, 34]
    assert main(["results", "--pump", "pA", "--limit", "2", "--oldest-first",
                 "--format", "json"]) == 0
    assert [r["seq"] for r in json.loads(capsys.readouterr().out)] == [0, 2]
    # $PUMPWATCH_STATE moves it, as it moves the stack's state directory
    (tmp_path / "state").rename(tmp_path / "elsewhere")
    monkeypatch.setenv("PUMPWATCH_STATE", str(tmp_path / "elsewhere"))
    assert main(["results", "--limit", "1", "--format", "json"]) == 0
    assert [r["seq"] for r in json.loads(capsys.readouterr().out)] == [39]


def test_dead_letters_listing(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{db}"
    assert main(["results", "--store", url, "--dead-letters", "--format", "json"]) == 0
    (dl,) = json.loads(capsys.readouterr().out)
    assert (dl["kind"], dl["part"], dl["bytes"]) == ("spoofed", -1, 1)
    assert main(["results", "--store", url, "--dead-letters"]) == 0
    out = capsys.readouterr()
    assert "spoofed" in out.out
    assert "1 dead letter(s)" in out.err


def test_results_from_config_and_missing_store(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_toml(tmp_path / "c.toml", {"store": {"url": f"sqlite:///{db}"}})
    assert main(["results", "--config", str(conf), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 40
    assert main(["results", "--store", f"sqlite:///{tmp_path / 'nope.db'}"]) == 1
    assert "cannot open" in capsys.readouterr().err


def test_baseline_fit_from_the_archive(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bl"
    code = main(["baseline", "fit", "--pump", "pA", "--store", f"sqlite:///{db}",
                 "--since", "2025-11-24T16:00:00Z", "--until", "2025-11-25", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    b = Baselines.load(out / "baselines.npz")
    assert b.pumps == ("pA",)
    assert int(b.n_fit[0]) == 20
    # too few reports for a pump: says so and fails
    code = main(["baseline", "fit", "--pump", "pA", "--store", f"sqlite:///{db}",
                 "--until", "2025-11-24T16:00:05Z", "--out", str(out)])
    assert code == 1
    assert main(["baseline", "fit", "--out", str(out)]) == 2


def test_cloud_config_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_toml(tmp_path / "ok.toml", {
        "mqtt": {"host": "broker", "client_id": "c1"},
        "endpoint": {"name": "ep", "target_model": "fleet.tar.gz"},
        "route": [{"site": "plant-*", "pump": "*", "target_model": "plant.tar.gz"},
                  {"pump": "special", "endpoint": "ep2"}],
    })
    cfg = load_config(good)
    assert cfg.mqtt.subscription == "$share/pumpwatch/pumpwatch/devices/+/reports"
    assert str(cfg.route("plant-1", "p9")) == "ep/plant.tar.gz"
    assert str(cfg.route("lab", "special")) == "ep2/fleet.tar.gz"
    assert str(cfg.route("lab", "p1")) == "ep/fleet.tar.gz"
    assert main(["cloud", "--config", str(good), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["mqtt"]["client_id"] == "c1"

    bad = write_toml(tmp_path / "bad.toml", {"mqtt": {"hots": "typo"}})
    assert main(["cloud", "--config", str(bad)]) == 2
    with pytest.raises(ConfigError, match="hots"):
        load_config(bad)
    with pytest.raises(ConfigError, match="max_bytes"):
        config_from_dict({"batch": {"max_bytes": 4096}})
    with pytest.raises(ConfigError, match="receive_maximum"):
        config_from_dict({"mqtt": {"receive_maximum": 0}})


def test_documented_example_config_is_valid() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "consumer.md").read_text()
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    import tomllib

    cfg = config_from_dict(tomllib.loads(block))
    assert cfg.mqtt.client_id == "pumpwatch-consumer-1"
    assert str(cfg.route("plant-a3", "x")) == "pumpwatch/plant-a.tar.gz"
    assert str(cfg.route("lab", "P-901")) == "pumpwatch-canary"
    # and the defaults are what the doc says
    assert cfg == config_from_dict({
        "mqtt": {"client_id": "pumpwatch-consumer-1"},
        "route": [{"site": "plant-a*", "target_model": "plant-a.tar.gz"},
                  {"pump": "P-9*", "endpoint": "pumpwatch-canary"}],
    })


def test_a_metrics_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """``pumpwatch cloud`` with its /metrics port taken: one line naming the port, exit 2."""
    import os
    import socket
    import subprocess
    import sys

    from tests.infra.pipeline import ROOT, consumer_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = consumer_config(broker_port=1, endpoint_url="http://127.0.0.1:1",
                              db=tmp_path / "r.db", topic_root="pw",
                              metrics={"port": port})
        p = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "cloud", "--config",
             str(write_toml(tmp_path / "c.toml", cfg))],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=60,
        )
    assert p.returncode == 2, p.stderr
    assert f"metrics port 127.0.0.1:{port} is in use" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
