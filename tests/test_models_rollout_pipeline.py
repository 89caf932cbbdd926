"""Safe rollout end to end: shadow, canary, automatic rollback, promotion; one unchanged consumer.

Real parts: Mosquitto, the model server as a subprocess over the local registry
(started through tests.infra.failing_model, which only adds a model kind that
fails), the consumer (``pumpwatch cloud``) as a subprocess, SQLite. Every
rollout step goes through the ``pumpwatch models`` command line; the server
picks each one up by polling the registry. Throughout, the consumer is the same
process with the same configuration file, and each report is stored exactly
once, naming the version that scored it.

Known differences: production (v1) and the shadow (v2) are both the physics
rules; v2 only asks for a top probability of 0.99 before it names a class, so
it says ``unknown`` where v1's label comes from the rules' probabilities
(templates 0 and 2, ``decided_by=classifier``) and agrees wherever a bearing
family decides (templates 1 and 3, ``decided_by=physics``). Which template each
report uses is chosen per pump class, so the expected agreement is counted
from the published reports, not from the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsp
from cloud.store import ResultRow, SQLiteStore
from models.registry.local import LocalRegistry
from models.serving.bundle import write_bundle
from models.serving.physics import PhysicsParams
from models.serving.rollout import bucket
from pumpwatch.cli import main as cli
from tests.infra import failing_model
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto, mosquitto_available
from tests.infra.pipeline import ConsumerProcess, Publisher, consumer_config, templates, write_toml
from tests.infra.require import need

GROUP = "pumps"
DEVICE = "gw-r"
ROOT = "ro"
# which templates each pump class's reports cycle through (0, 2 differ; 1, 3 agree)
CLASS_TEMPLATES = {"centrifugal": (0, 1, 2, 3), "screw": (0, 2, 0, 1)}


@dataclass
class Stack:
    tmp: Path
    reg: Path
    db: Path
    broker: Mosquitto
    server: ModelServerProcess
    consumer: ConsumerProcess
    published: list[dsp.Report]

    def models(self, *args: str) -> int:
        return cli(["models", "--registry", str(self.reg), *args])

    def rollout(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.server.url + "/rollout", timeout=5) as r:  # noqa: S310
            data: dict[str, Any] = json.loads(r.read())
            return data

    def publish(self, reports: list[dsp.Report], per_message: int = 8) -> None:
        msgs = [dsp.encode_batch(DEVICE, [dsp.encode_report(r) for r in reports[i:i + per_message]])
                for i in range(0, len(reports), per_message)]
        with Publisher("127.0.0.1", self.broker.port, f"pub-{len(self.published)}") as pub:
            pub.publish_all(f"{ROOT}/devices/{DEVICE}/reports", msgs)
        self.published.extend(reports)
        _wait(lambda: len(_rows(self.db)) >= len(self.published), 60,
              f"{len(self.published)} results stored")


def _report(seq: int, template: int, pump: str, kind: str) -> dsp.Report:
    t = templates()[template]
    return msgspec.structs.replace(
        t, device=DEVICE, epoch=11, seq=seq, site="lab", pump=pump, channel="x",
        t0_ns=1_700_000_000_000_000_000 + seq * 10**9,
        asset=msgspec.structs.replace(t.asset, kind=kind),
    )


def _rows(db: Path) -> list[ResultRow]:
    if not db.exists():
        return []

    async def read() -> list[ResultRow]:
        store = SQLiteStore(f"sqlite:///{db}", readonly=True)
        await store.open()
        try:
            return await store.results()
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except sqlite3.OperationalError:  # schema not created yet
        return []


def _shadow_count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return int(con.execute("SELECT count(*) FROM shadow_results").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0  # not created yet


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    need("mosquitto", None if mosquitto_available() else "mosquitto not installed")
    failing_model.register()
    reg_root = tmp_path / "registry"
    reg = LocalRegistry(reg_root)
    reg.register(GROUP, write_bundle(tmp_path / "v1", model_version="rules"))
    reg.register(GROUP, write_bundle(tmp_path / "v2", model_version="rules-strict",
                                     physics=PhysicsParams(unsure_below=0.99)))
    reg.register(GROUP, failing_model.failing_bundle(tmp_path / "v3"))
    for v in (1, 2, 3):
        reg.approve(GROUP, v, "ci")
    reg.deploy(GROUP, version=1, by="ci")
    db = tmp_path / "results.db"
    with contextlib.ExitStack() as es:
        broker = Mosquitto(tmp_path / "mosquitto").start()
        es.callback(broker.stop)
        server = es.enter_context(ModelServerProcess(
            registry=reg_root, module="tests.infra.failing_model",
            extra=["--reload-poll", "0.1"], log_path=tmp_path / "server.log"))
        cfg = consumer_config(broker_port=broker.port, endpoint_url=server.url, db=db,
                              topic_root=ROOT, client_id="ro-consumer")
        consumer = ConsumerProcess(write_toml(tmp_path / "cloud.toml", cfg),
                                   tmp_path / "consumer.log")
        consumer.start()
        es.callback(consumer.stop)
        _wait(lambda: "mqtt connected" in consumer.log_tail(), 30, "consumer connected")
        time.sleep(0.3)  # the subscription's SUBACK (as the other pipeline tests)
        yield Stack(tmp_path, reg_root, db, broker, server, consumer, [])


def test_shadow_canary_auto_rollback_and_promote_through_one_unchanged_pipeline(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = stack.consumer.config_path
    cfg_digest = hashlib.sha256(cfg_path.read_bytes()).hexdigest()
    assert stack.consumer.proc is not None
    pid = stack.consumer.proc.pid
    seq = 0

    # --- shadow: v2 scores every batch too; callers (and the store) get v1's results ---
    assert stack.models("deploy", GROUP, "--version", "2", "--shadow",
                        "--reason", "stricter unsure rule") == 0
    _wait(lambda: (stack.rollout()["rollout"] or {}).get("candidate") == f"{GROUP}/2", 20,
          "shadow loaded")
    shadow_reports = []
    for kind, tpls in CLASS_TEMPLATES.items():
        for i in range(24):
            shadow_reports.append(_report(seq, tpls[i % len(tpls)], f"{kind}-{i % 6}", kind))
            seq += 1
    stack.publish(shadow_reports)
    n_shadow = len(shadow_reports)
    _wait(lambda: stack.rollout()["rollout"]["versions"][f"{GROUP}/2"]["reports"] >= n_shadow,
          30, "the shadow scored every report")
    rows = {r.seq: r for r in _rows(stack.db)}
    assert {rows[r.seq].model_version for r in shadow_reports} == {f"{GROUP}/1"}
    capsys.readouterr()
    assert stack.models("--json", "compare", GROUP, "--url", stack.server.url) == 0
    shown = json.loads(capsys.readouterr().out)["shown"]
    cmp_ = shown["comparison"]
    differ = {k: sum(t in (0, 2) for t in (tp[i % len(tp)] for i in range(24)))
              for k, tp in CLASS_TEMPLATES.items()}  # 12 and 18 of 24
    assert cmp_["*"]["reports"] == n_shadow
    assert cmp_["*"]["agreement"] == pytest.approx(1 - sum(differ.values()) / n_shadow, abs=1e-4)
    for kind in CLASS_TEMPLATES:
        assert cmp_[kind]["reports"] == 24
        assert cmp_[kind]["agreement"] == pytest.approx(1 - differ[kind] / 24, abs=1e-4)
        assert cmp_[kind]["label_shift"]["unknown"] == pytest.approx(differ[kind] / 24, abs=1e-4)
        assert cmp_[kind]["mean_anomaly_score_shift"] == 0.0  # same anomaly model
    assert sum(v for k, v in cmp_["*"]["label_shift"].items() if k != "unknown") == \
        pytest.approx(-sum(differ.values()) / n_shadow, abs=1e-3)
    versions = shown["versions"]
    assert versions[f"{GROUP}/2"]["errors"] == 0
    assert versions[f"{GROUP}/2"]["latency_p50_ms"] is not None
    # the shadow's per-report results ride back on later responses (the contract's optional
    # shadow part): one more report brings the last of them; the unchanged consumer stores
    # them (shadow_results), and compare --store gets the same figures from the stored rows
    stack.publish([_report(seq, 1, "centrifugal-0", "centrifugal")])
    seq += 1
    _wait(lambda: _shadow_count(stack.db) >= n_shadow, 30, "the shadow's results stored")
    assert _shadow_count(stack.db) == n_shadow  # the flush's own one waits for a response
    capsys.readouterr()
    assert stack.models("--json", "compare", GROUP, "--store", f"sqlite:///{stack.db}") == 0
    stored = json.loads(capsys.readouterr().out)["shown"]
    assert (stored["candidate"], stored["production"]) == (f"{GROUP}/2", [f"{GROUP}/1"])
    assert stored["comparison"] == cmp_
    assert stack.models("rollback", GROUP, "--reason", "seen enough") == 0
    _wait(lambda: stack.rollout()["rollout"] is None, 20, "shadow dropped")

    # --- canary 25 %: a stable quarter of the pumps is scored by v2, each pump by one version ---
    assert stack.models("deploy", GROUP, "--version", "2", "--canary", "25") == 0
    _wait(lambda: (stack.rollout()["rollout"] or {}).get("mode") == "canary", 20,
          "canary loaded")
    pumps = [f"pump-{i:03d}" for i in range(80)]
    canary_reports = []
    for rnd in range(3):  # three rounds: every pump in several batches
        for j, p in enumerate(pumps):
            canary_reports.append(_report(seq, (rnd + j) % 4, p, "centrifugal"))
            seq += 1
    stack.publish(canary_reports, per_message=16)
    rows = {r.seq: r for r in _rows(stack.db)}
    by_pump: dict[str, set[str]] = {}
    for r in canary_reports:
        by_pump.setdefault(r.pump, set()).add(rows[r.seq].model_version)
    assert all(len(v) == 1 for v in by_pump.values()), by_pump  # never flips
    on_canary = {p for p, v in by_pump.items() if v == {f"{GROUP}/2"}}
    assert on_canary == {p for p in pumps if bucket(p) < 25}
    assert 0.15 <= len(on_canary) / len(pumps) <= 0.35, len(on_canary)
    assert stack.models("rollback", GROUP) == 0
    _wait(lambda: stack.rollout()["rollout"] is None, 20, "canary dropped")

    # --- a failing canary crosses its error-rate limit and is rolled back by the server ---
    assert stack.models("deploy", GROUP, "--version", "3", "--canary", "50",
                        "--max-error-rate", "0.2", "--min-reports", "10") == 0
    _wait(lambda: (stack.rollout()["rollout"] or {}).get("candidate") == f"{GROUP}/3", 20,
          "failing canary loaded")
    failing_reports = [_report(seq + i, i % 4, pumps[i % len(pumps)], "screw")
                       for i in range(80)]
    seq += len(failing_reports)
    stack.publish(failing_reports, per_message=10)
    reg = LocalRegistry(stack.reg)
    _wait(lambda: (d := reg.deployment("pumpwatch")) is not None and d.candidate is None, 20,
          "the automatic rollback recorded in the registry")
    last = reg.history(GROUP)[-1]
    assert (last.action, last.from_version, last.to_version) == ("auto-rollback", 3, 1)
    assert last.by == "model-server:pumpwatch" and "error rate" in last.reason
    state = stack.rollout()
    assert state["rollout"] is None and state["last"]["candidate"] == f"{GROUP}/3"
    assert [e["event"] for e in state["events"]] == ["auto-rollback"]
    with urllib.request.urlopen(stack.server.url + "/metrics", timeout=5) as r:  # noqa: S310
        assert f'pumpwatch_server_rollbacks_total{{model_version="{GROUP}/3"}} 1.0' in \
            r.read().decode()
    rows = {r.seq: r for r in _rows(stack.db)}
    # the failing candidate's pumps were scored by production instead: nothing lost
    assert {rows[r.seq].model_version for r in failing_reports} == {f"{GROUP}/1"}

    # --- promote a canary: production changes, the consumer does not ---
    assert stack.models("deploy", GROUP, "--version", "2", "--canary", "10") == 0
    _wait(lambda: (stack.rollout()["rollout"] or {}).get("candidate") == f"{GROUP}/2", 20,
          "canary loaded")
    assert stack.models("promote", GROUP, "--reason", "agreement understood") == 0
    _wait(lambda: stack.rollout()["production"] == f"{GROUP}/2", 20, "promoted")
    after = [_report(seq + i, 1, pumps[i], "centrifugal") for i in range(8)]
    stack.publish(after)
    rows = {r.seq: r for r in _rows(stack.db)}
    assert {rows[r.seq].model_version for r in after} == {f"{GROUP}/2"}

    # the registry's history: who, when, from which version to which, why
    hist = [(h.action, h.from_version, h.to_version) for h in reg.history(GROUP)]
    assert hist == [("deploy", None, 1), ("shadow", 1, 2), ("rollback", 2, 1),
                    ("canary", 1, 2), ("rollback", 2, 1), ("canary", 1, 3),
                    ("auto-rollback", 3, 1), ("canary", 1, 2), ("promote", 1, 2)]
    assert reg.history(GROUP)[1].reason == "stricter unsure rule"

    # every report stored exactly once, naming the version that scored it
    all_rows = _rows(stack.db)
    assert Counter(r.seq for r in all_rows) == Counter(r.seq for r in stack.published)
    assert {r.model_version for r in all_rows} == {f"{GROUP}/1", f"{GROUP}/2"}
    # one consumer process and its configuration throughout
    assert hashlib.sha256(cfg_path.read_bytes()).hexdigest() == cfg_digest
    assert stack.consumer.running and stack.consumer.proc.pid == pid
