"""``pumpwatch monitor run|status`` over a real SQLite store and a local registry: the files,
the status recorded on the registry version, and the status table."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cloud.monitor.histograms import BUCKET_NS
from cloud.store import Commit, HistCell, ResultRow, make_store
from pumpwatch.cli import main
from tests.test_monitor_drift import cells, values
from tests.test_store_sqlite import result

DAY = 86_400 * 1_000_000_000
T0 = 1_780_000_000 * 1_000_000_000 // DAY * DAY


def seed_store(url: str, groups: list[list[HistCell]]) -> None:
    async def go() -> None:
        s = make_store(url, synchronous="normal")
        await s.open()
        for k, cs in enumerate(groups):
            def hook(rows: Sequence[ResultRow], cs: list[HistCell] = cs) -> list[HistCell]:
                return cs
            await s.commit(Commit(results=[result(seq=k)]), histograms=hook)
        await s.close()
    asyncio.run(go())


def at(cs: list[HistCell], t_ns: int, version: str) -> list[HistCell]:
    return [(version, t, r, t_ns - t_ns % BUCKET_NS, h, f, b, v) for _v, t, r, _b, h, f, b, v in cs]


def test_run_writes_the_files_and_records_the_status_then_status_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry"
    assert main(["models", "bundle", "--out", str(tmp_path / "b"), "--model-version", "v"]) == 0
    assert main(["models", "--registry", str(reg), "register", "pumps", str(tmp_path / "b")]) == 0
    rng = np.random.default_rng(5)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    seed_store(url, [at(cells(values(rng, 3000)), T0, "pumps/1"),
                     at(cells(values(rng, 600, shift={"log:vbpf": 2.0})), T0 + DAY, "pumps/1")])
    capsys.readouterr()
    args = ["monitor", "--registry", str(reg), "--json", "run", "--store", url,
            "--since", _iso(T0 + DAY), "--until", _iso(T0 + 2 * DAY), "--out", str(tmp_path / "m")]
    assert main(args) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["model_version"] == "pumps/1" and run["status"] == "drift"
    assert run["unexplained"][0] == "log:vbpf" and run["recorded"]
    folder = tmp_path / "m" / "pumps_1"
    assert {p.name for p in folder.iterdir()} == {
        "constraint_violations.json", "monitor_report.json", "monitor_report.html"}
    assert main(["monitor", "--registry", str(reg), "--json", "status"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["versions"]
    assert row["monitor_status"] == "drift" and "log:vbpf" in row["monitor_unexplained"]
    assert row["monitor_report"].endswith("monitor_report.html")


def _iso(ns: int) -> str:
    from pumpwatch.commands._storeargs import ns_iso

    return ns_iso(ns)


async def test_dashboard_serves_the_latest_run_and_the_drift_series(tmp_path: Path) -> None:
    from tests.test_dashboard_api import checked, served

    url = f"sqlite:///{tmp_path / 'r.db'}"
    rng = np.random.default_rng(6)
    ref = at(cells(values(rng, 3000)), T0, "pumps/1")
    live = at(cells(values(rng, 600, shift={"log:v2x": 2.0})), T0 + DAY, "pumps/1")
    s = make_store(url, synchronous="normal")
    await s.open()
    from cloud.monitor.run import evaluate, summary

    rep = evaluate("pumps/1", live, since_ns=T0 + DAY, until_ns=T0 + 2 * DAY,
                   reference_cells=ref)
    await s.record_monitor_run(summary(rep, checked_ns=T0 + 2 * DAY, report_path="/r.html"))
    await s.close()
    async with served(url) as c:
        async with c.get("/api/monitoring") as resp:
            body = await checked(resp, "/api/monitoring")
        (m,) = body["models"]
        assert m["status"] == "drift" and m["unexplained"][0] == "log:v2x"
        assert m["report"] == "/r.html" and m["features"][0]["drifted"]
        async with c.get("/metrics") as resp:
            text = await resp.text()
    line = next(x for x in text.splitlines() if x.startswith(
        'pumpwatch_feature_drift{feature="log:v2x",model_version="pumps/1"}'))
    assert float(line.split()[-1]) > 0.1
    assert 'pumpwatch_model_drift_status{model_version="pumps/1"} 1.0' in text


def test_cloudwatch_publisher_against_moto() -> None:
    """PutMetricData in Model Monitor's names, against moto's CloudWatch (server mode)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from cloud.monitor.cloudwatch import publish
    from cloud.monitor.run import evaluate

    rng = np.random.default_rng(9)
    rep = evaluate("m1", cells(values(rng, 600, shift={"log:v1x": 2.0})), since_ns=0,
                   until_ns=1, reference_cells=cells(values(rng, 3000)))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        cw = boto3.client("cloudwatch", endpoint_url=f"http://{host}:{port}",
                          region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
        sent = publish(cw, rep, timestamp_s=1_780_000_000.0)
        names = {m["MetricName"] for m in cw.list_metrics(Namespace="pumpwatch/ModelMonitor")[
            "Metrics"]}
        assert len(names) == sent > 30 and "feature_baseline_drift_log:v1x" in names
        assert "pumpwatch_drift_status" in names
    finally:
        server.stop()


def test_the_local_stack_runs_the_monitor_and_shows_its_outcome(tmp_path: Path) -> None:
    """``pumpwatch up``'s schedule: a real ``pumpwatch monitor run`` subprocess over the
    stack's store; its outcome on the status line."""
    import time

    from pumpwatch.stack.plan import StackOptions
    from pumpwatch.stack.runner import Stack

    opts = StackOptions(state=tmp_path / "state")
    (opts.path("logs")).mkdir(parents=True)
    rng = np.random.default_rng(10)
    seed_store(opts.store_url, [at(cells(values(rng, 400)), time.time_ns(), "pumps/1")])
    stack = Stack(opts, out=None, live=False)
    stack.phase = "monitoring (faults develop)"
    stack.run_start_ns = time.time_ns() - 3600 * 10**9
    stack._maybe_monitor()
    proc = stack.monitor_proc  # (a local: mypy must not keep the attribute narrowed below)
    assert proc is not None
    proc.wait(60)
    stack._maybe_monitor()  # collects the outcome (and waits 5 minutes for the next run)
    assert stack.monitor_proc is None
    assert stack.monitor_text.startswith("monitor: pumps/1 insufficient_data"), \
        stack.monitor_text
    assert (opts.path("monitoring") / "pumps_1" / "constraint_violations.json").is_file()
