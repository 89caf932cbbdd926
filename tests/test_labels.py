"""Closed alarms are labels: ``pumpwatch labels export`` (a real subprocess over a real
SQLite store) writes them with the archived report bytes; the export reads back into
training features and labels, and the same verdicts give the label-based quality that
``pumpwatch monitor status`` prints."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import dsp
from cloud.monitor.quality import label_quality
from cloud.store import AlarmChange, make_store
from models.serving.features import extract
from models.training.labels import load_labels, read_labels
from models.training.training import FEATURES, TrainConfig, fit
from tests.infra.pipeline import ROOT
from tests.test_alarm_lifecycle import seed

S = 1_000_000_000


async def close_all(url: str) -> dict[str, str]:
    """p1 closed as bearing_outer (onset 30 s before raising), p2 as no_fault_found."""
    s = make_store(url)
    await s.open()
    try:
        verdicts = {"p1": "bearing_outer", "p2": "no_fault_found"}
        for a in await s.alarms(kind="asset"):
            now = time.time_ns()
            await s.change_alarm(a.id, AlarmChange(
                action="close", actor="ann", at_ns=now, verdict=verdicts[a.pump],
                action_taken="inspected", onset_ns=a.raised_ns - 30 * S))
        return {a.pump: a.id for a in await s.alarms(kind="asset")}
    finally:
        await s.close()


def pumpwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pumpwatch", *args], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120, check=False)


def test_export_reads_back_into_training(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    asyncio.run(seed(url))
    ids = asyncio.run(close_all(url))
    out = tmp_path / "labels"
    done = pumpwatch("labels", "export", "--store", url, "--since", "2000-01-01T00:00:00Z",
                     "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["labels"] == 2 and summary["reports"] == 8  # 4 windows per pump

    labels = {lb.pump: lb for lb in load_labels(out)}
    assert labels["p1"].alarm_id == ids["p1"] and labels["p1"].verdict == "bearing_outer"
    assert labels["p1"].condition == "bearing_outer" and labels["p1"].closed_by == "ann"
    reports, names = read_labels(out)
    assert sorted(set(names)) == ["bearing_outer", "healthy"]  # no_fault_found -> healthy
    assert {r.pump for r, n in zip(reports, names, strict=True) if n == "healthy"} == {"p2"}
    # the archived bytes, decoded exactly as the edge encoded them
    assert all(isinstance(r, dsp.Report) for r in reports)
    x = extract(reports).matrix(FEATURES)
    assert x.shape == (8, len(FEATURES)) and np.isfinite(x).mean() > 0.5
    clf = fit(TrainConfig(), reports, names)  # models.training takes them as they are
    assert set(clf.classes) == {"bearing_outer", "healthy"}

    # pumpwatch train takes the export beside the simulated training split
    trained = pumpwatch("train", "--out", str(tmp_path / "m"), "--pumps-per-class", "1",
                        "--test-pumps-per-class", "1", "--calib-pumps-per-class", "0",
                        "--seconds", "1", "--quiet", "--labels", str(out))
    assert trained.returncode == 0, trained.stdout + trained.stderr
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["n_label_reports"] == 8
    (out / "labels.jsonl").write_text(
        (out / "labels.jsonl").read_text().replace('"bearing_outer"', '"gremlins"'))
    refused = pumpwatch("train", "--out", str(tmp_path / "m2"), "--quiet", "--labels", str(out))
    assert refused.returncode == 2 and "gremlins" in refused.stderr
    assert not (tmp_path / "m2").exists()

    # a window that closed nothing exports nothing
    empty = pumpwatch("labels", "export", "--store", url, "--since", "2000-01-01T00:00:00Z",
                      "--until", "2001-01-01T00:00:00Z", "--out", str(tmp_path / "none"))
    assert empty.returncode == 0 and json.loads(empty.stdout)["labels"] == 0
    assert load_labels(tmp_path / "none") == []
    bad = pumpwatch("labels", "export", "--store", url, "--since", "2200-01-01T00:00:00Z",
                    "--until", "2100-01-01T00:00:00Z", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--since" in bad.stdout and not (tmp_path / "bad").exists()


def test_label_quality_per_model_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    asyncio.run(seed(url, pumps=("p1", "p2", "p3")))
    asyncio.run(close_all_but(url, "p3"))

    async def assets() -> list:  # type: ignore[type-arg]
        s = make_store(url)
        await s.open()
        try:
            return await s.alarms(kind="asset")
        finally:
            await s.close()

    q = label_quality(asyncio.run(assets()))["test-1"]
    assert (q["open"], q["closed"], q["faults"], q["no_fault_found"]) == (1, 2, 1, 1)
    assert q["precision"] == 0.5 and q["condition_agreement"] == 1.0
    assert q["confusion"] == {"bearing_outer": {"bearing_outer": 1, "no_fault_found": 1}}
    assert q["time_to_detection_s"] == {"n": 1, "median": 30.0, "max": 30.0}
    # the command shows it (no registry: the store's versions are listed as unregistered)
    done = pumpwatch("monitor", "--registry", str(tmp_path / "reg"), "--json", "status",
                     "--store", url)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)["quality_unregistered"]["test-1"]
    assert shown["precision"] == 0.5 and shown["closed"] == 2


async def close_all_but(url: str, keep: str) -> None:
    s = make_store(url)
    await s.open()
    try:
        verdicts = {"p1": "bearing_outer", "p2": "no_fault_found"}
        for a in await s.alarms(kind="asset"):
            if a.pump != keep:
                await s.change_alarm(a.id, AlarmChange(
                    action="close", actor="ann", at_ns=time.time_ns(),
                    verdict=verdicts[a.pump], action_taken="inspected",
                    onset_ns=a.raised_ns - 30 * S if a.pump == "p1" else None))
    finally:
        await s.close()
