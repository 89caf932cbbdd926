"""train -> baseline fit -> register -> approve -> deploy -> the server serves them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import msgspec
import numpy as np
import pytest

from dsp.results import InvocationResponse
from models.registry.local import LocalRegistry
from models.serving.bundle import load_bundle
from models.serving.server import ModelServer, ServerConfig
from models.serving.statistics import load_statistics
from models.training.train_sim import CLASSES, pump_reports, random_pump
from pumpwatch.cli import main
from simulator import FaultConfig, SimulatedSource
from tests.infra.model_server import request_body

SEED = 31


async def _invoke(reg: Path, body: bytes) -> InvocationResponse:
    async with ModelServer(ServerConfig(host="127.0.0.1", port=0, registry=reg)) as srv, \
            aiohttp.ClientSession() as s:
        async with asyncio.timeout(20):
            await srv.wait_ready()
        url = f"http://127.0.0.1:{srv.port}/invocations"
        async with s.post(url, data=body, headers={"Content-Type": "application/x-msgpack"}) as r:
            assert r.status == 200, await r.text()
            return msgspec.msgpack.decode(await r.read(), type=InvocationResponse)


def test_trained_classifier_and_pump_baseline_served_through_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(SEED)
    cfg, _ = random_pump(rng, "healthy", split="test", name="P1", machine="pump")
    x = SimulatedSource(cfg, seed=SEED).read(round(cfg.fs) * 10).samples[0]
    healthy = tmp_path / "p1-healthy.npy"
    np.save(healthy, x)
    b = cfg.bearings[0].geometry
    assert main(["baseline", "fit", "--pump", "P1", "--from", str(healthy), "--fs", str(cfg.fs),
                 "--bearing", str(b.designation), "--rpm", str(cfg.speed.rpm),
                 "--vanes", str(cfg.vanes),
                 "--out", str(tmp_path / "bl")]) == 0
    assert main(["train", "--out", str(tmp_path / "m"), "--pumps-per-class", "1",
                 "--test-pumps-per-class", "1", "--seconds", "1", "--seed", str(SEED),
                 "--baselines", str(tmp_path / "bl" / "baselines.npz"), "--quiet"]) == 0
    # a site bundle composed from the trained classifier and pumps' baselines
    assert main(["models", "bundle", "--out", str(tmp_path / "site"), "--model-version", "site-1",
                 "--classifier-from", str(tmp_path / "m" / "model.tar.gz"),
                 "--baselines", str(tmp_path / "bl" / "baselines.npz")]) == 0
    site = load_bundle(tmp_path / "site")
    assert site.classifier.kind == "mlp" and site.baselines is not None
    assert site.baselines.pumps == ("P1",)
    assert "sim_macro_f1" in json.loads((tmp_path / "site" / "bundle.json").read_text())["metrics"]
    # the classifier's training statistics come along with it (OOD gate, drift baseline)
    stats = load_statistics(tmp_path / "site")
    assert stats is not None and stats == load_statistics(tmp_path / "m" / "bundle")

    reg = tmp_path / "registry"
    base = ["models", "--registry", str(reg)]
    assert main([*base, "register", "pumps", str(tmp_path / "m" / "model.tar.gz"),
                 "--metrics", str(tmp_path / "m" / "metrics.json")]) == 0
    assert main([*base, "approve", "pumps", "1"]) == 0
    assert main([*base, "deploy", "pumps"]) == 0
    capsys.readouterr()
    pkg = LocalRegistry(reg).describe("pumps", 1)
    assert "sim_macro_f1" in pkg.metrics

    # The same pump, healthy and then with an outer-race fault, as the edge would report it.
    ok = pump_reports(cfg, seed=SEED, seconds=2, start_s=10, channels=(0,))
    bad_cfg = cfg.with_faults(*cfg.faults, FaultConfig(kind="outer_race", severity=0.8))
    bad = pump_reports(bad_cfg, seed=SEED, seconds=2, start_s=10, channels=(0,))
    stranger = msgspec.structs.replace(ok[0], pump="P2")
    resp = asyncio.run(_invoke(reg, request_body([*ok, *bad, stranger])))
    assert resp.model_version == "pumps/1"
    res = resp.results
    assert {x.model_version for x in res} == {"pumps/1"}  # every result names the deployment
    assert all(set(x.probabilities) == set(CLASSES) for x in res)
    assert [x.baseline for x in res] == ["pump"] * 4 + ["fleet"]
    assert not any(x.anomalous for x in res[:2]), [x.anomaly_score for x in res[:2]]
    assert all(x.anomalous for x in res[2:4]), [x.anomaly_score for x in res[2:4]]
    assert all(any(e.name == "env_family:bearing_outer" for e in x.evidence) for x in res[2:4])
