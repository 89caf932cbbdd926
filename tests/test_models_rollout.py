"""Rollout parts: canary routing, limits, the registry's rollout API and history, the CLI,
and the server answering callers exactly as without a shadow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import msgspec
import pytest

from dsp.results import InvocationResponse, Result, ShadowPart
from models.registry.local import LocalRegistry
from models.registry.rollout import Candidate, RolloutLimits
from models.serving.bundle import write_bundle
from models.serving.errors import RegistryError
from models.serving.physics import PhysicsParams
from models.serving.rollout import Rollout, bucket, to_candidate
from models.serving.server import ModelServer, ServerConfig
from pumpwatch.cli import main as cli
from tests.infra.model_server import request_body, synth_reports

G = "pumps"


def test_canary_routing_is_stable_monotone_and_near_its_share() -> None:
    pumps = [f"site-{i // 50}:pump-{i}" for i in range(20000)]
    assert [bucket(p) for p in pumps[:50]] == [bucket(p) for p in pumps[:50]]
    assert all(0.0 <= bucket(p) < 100.0 for p in pumps)
    for pct in (1.0, 10.0, 25.0, 50.0):
        share = sum(to_candidate(p, pct) for p in pumps) / len(pumps)
        assert abs(share - pct / 100) < 0.01, (pct, share)
    # raising the share only adds pumps: none flips back to production
    assert all(to_candidate(p, 25.0) for p in pumps if to_candidate(p, 10.0))


def _res(condition: str, score: float = 1.0, decided_by: str = "classifier") -> Result:
    return Result(v=1, device="d", epoch=1, seq=0, site="s", pump="p", channel="x", t0_ns=0,
                  condition=condition, probabilities={}, anomaly_score=score,
                  anomaly_threshold=1.0, anomalous=False, baseline="fleet", iso_zone="A",
                  velocity_rms=0.1, model_version="g/2", decided_by=decided_by)


def test_limits_are_judged_after_min_reports_in_order() -> None:
    lim = RolloutLimits(max_error_rate=0.1, max_p95_latency_ms=50.0, max_ood_share=0.5,
                        min_reports=10)
    ro = Rollout(production="g/1", candidate="g/2",
                 trial=Candidate(version=2, mode="canary", percent=25.0, limits=lim))
    reps = synth_reports(1)
    ro.failed("g/2", 5, 0.01)
    assert ro.verdict() is None  # 5 reports attempted: too few to judge
    ro.failed("g/2", 5, 0.01)
    assert "error rate 1.000 over its limit 0.1" in (ro.verdict() or "")
    ro = Rollout(production="g/1", candidate="g/2",
                 trial=Candidate(version=2, mode="canary", percent=25.0, limits=lim))
    for _ in range(10):
        ro.scored("g/2", reps, [_res("healthy")], 0.2)
    assert "p95 scoring latency 200 ms" in (ro.verdict() or "")
    ro = Rollout(production="g/1", candidate="g/2",
                 trial=Candidate(version=2, mode="canary", percent=25.0, limits=lim))
    for i in range(10):
        ro.scored("g/2", reps, [_res("unknown", decided_by="ood" if i < 6 else "physics")],
                  0.001)
    assert "drift: 0.600 of its results out of distribution" in (ro.verdict() or "")
    with pytest.raises(RegistryError, match="max_error_rate must be within"):
        RolloutLimits(max_error_rate=2.0)


@pytest.fixture
def reg(tmp_path: Path) -> LocalRegistry:
    r = LocalRegistry(tmp_path / "reg")
    r.register(G, write_bundle(tmp_path / "a", model_version="a"))
    r.register(G, write_bundle(tmp_path / "b", model_version="b",
                               physics=PhysicsParams(unsure_below=0.99)))
    r.register(G, write_bundle(tmp_path / "c", model_version="c"))
    return r


def test_registry_rollout_rules_and_history(
    reg: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUMPWATCH_USER", "ana")
    reg.approve(G, 1)
    with pytest.raises(RegistryError, match="no production deployment yet"):
        reg.deploy(G, version=1, mode="shadow")
    reg.deploy(G, version=1)
    with pytest.raises(RegistryError, match="PendingManualApproval"):
        reg.deploy(G, version=2, mode="canary", percent=10)
    reg.approve(G, 2)
    reg.approve(G, 3)
    with pytest.raises(RegistryError, match="0 < percent < 100"):
        reg.deploy(G, version=2, mode="canary", percent=100)
    with pytest.raises(RegistryError, match="already production"):
        reg.deploy(G, version=1, mode="shadow")
    with pytest.raises(RegistryError, match="no candidate to promote"):
        reg.promote(G)
    dep = reg.deploy(G, version=2, mode="canary", percent=10, reason="try b",
                     limits=RolloutLimits(max_error_rate=0.5))
    assert dep.version == 1 and dep.candidate is not None
    assert (dep.candidate.mode, dep.candidate.percent, dep.candidate.by) == ("canary", 10.0, "ana")
    assert dep.candidate.limits.max_error_rate == 0.5
    assert reg.deployment("pumpwatch") == dep
    assert reg.promote(G, by="bo").model_version == f"{G}/2"
    reg.deploy(G, version=3)  # a plain deploy switches at once
    # rollback with no candidate: back to the production before the last switch
    assert reg.rollback(G, reason="c regressed").version == 2
    assert reg.rollback(G).version == 1
    with pytest.raises(RegistryError, match="no earlier production version"):
        reg.rollback(G)
    with pytest.raises(RegistryError, match="no candidate on trial"):
        reg.rollback(G, automatic=True)
    hist = reg.history(G)
    assert [(h.action, h.from_version, h.to_version, h.by) for h in hist] == [
        ("deploy", None, 1, "ana"), ("canary", 1, 2, "ana"), ("promote", 1, 2, "bo"),
        ("deploy", 2, 3, "ana"), ("rollback", 3, 2, "ana"), ("rollback", 2, 1, "ana"),
    ]
    assert hist[1].percent == 10 and hist[1].reason == "try b"
    assert hist[4].reason == "c regressed" and hist[0].at


def test_cli_rollout_commands(
    reg: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["models", "--registry", str(reg.root)]
    for v in ("1", "2"):
        assert cli([*base, "approve", G, v]) == 0
    assert cli([*base, "deploy", G, "--version", "1"]) == 0
    assert cli([*base, "deploy", G, "--version", "2", "--canary", "150"]) == 1
    assert "0 < percent < 100" in capsys.readouterr().out
    assert cli([*base, "deploy", G, "--version", "2", "--shadow", "--max-ood-share",
                "3"]) == 1
    assert "max_ood_share must be within [0, 1]" in capsys.readouterr().out
    assert cli([*base, "deploy", G, "--version", "2", "--shadow", "--reason", "why not"]) == 0
    assert "candidate pumps/2 (shadow)" in capsys.readouterr().out
    assert cli([*base, "--json", "rollback", G]) == 0
    assert json.loads(capsys.readouterr().out)["candidate"] is None
    assert cli([*base, "history", G]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[2] for ln in lines] == ["deploy", "shadow", "rollback"]
    assert lines[1].endswith(": why not")
    assert cli([*base, "compare", G, "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot read the rollout from the model server" in capsys.readouterr().out


async def test_callers_get_production_answer_byte_for_byte_while_a_shadow_runs(
    reg: LocalRegistry, capsys: pytest.CaptureFixture[str],
) -> None:
    reg.approve(G, 1)
    reg.approve(G, 2)
    reg.deploy(G, version=1)
    body = request_body(synth_reports(6, pumps=["p1", "p2", "p3"], seed=3))
    hdr = {"Content-Type": "application/x-msgpack"}
    cfg = ServerConfig(port=0, registry=reg.root, reload_poll_s=0.05)
    async with ModelServer(cfg) as srv, aiohttp.ClientSession() as s:
        async with asyncio.timeout(20):
            await srv.wait_ready()
        url = f"http://127.0.0.1:{srv.port}/invocations"
        async with s.post(url, data=body, headers=hdr) as r:
            before = await r.read()
        reg.deploy(G, version=2, mode="shadow")
        async with asyncio.timeout(20):
            while srv.store.rollout is None:  # noqa: ASYNC110 -- polling the server's state
                await asyncio.sleep(0.02)
        async with s.post(url, data=body, headers=hdr) as r:
            assert r.headers["X-Pumpwatch-Model-Version"] == f"{G}/1"
            assert await r.read() == before
        async with asyncio.timeout(20):
            while srv.store.rollout.stats[f"{G}/2"].reports < 6:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        async with s.get(f"http://127.0.0.1:{srv.port}/rollout") as r:
            got = (await r.json())["rollout"]["comparison"]["*"]
        assert got["reports"] == 6 and got["agreement"] == 0.0  # healthy -> unknown, all six
        assert got["changes"] == {"healthy->unknown": 6}
        capsys.readouterr()
        base = ["models", "--registry", str(reg.root), "compare"]
        srv_url = f"http://127.0.0.1:{srv.port}"
        assert await asyncio.to_thread(cli, [*base, G, "--url", srv_url]) == 0
        text = capsys.readouterr().out
        assert f"shadow: {G}/2 beside {G}/1 (running)" in text
        assert "overall                  agreement 0.000 over 6 reports" in text
        assert "label shift: healthy -1.000, unknown +1.000" in text
        assert await asyncio.to_thread(cli, [*base, "other", "--url", srv_url]) == 1
        assert "no rollout of group 'other'" in capsys.readouterr().out
        # the next response carries the shadow's six results in its optional shadow part;
        # production's results in it are what they were, and a caller that does not know
        # the part decodes the body as before
        async with s.post(url, data=body, headers=hdr) as r:
            after = await r.read()
        dec = msgspec.msgpack.Decoder(InvocationResponse)
        assert dec.decode(after).results == dec.decode(before).results
        shadow = msgspec.msgpack.Decoder(ShadowPart).decode(after).shadow
        assert [(x.result.seq, x.result.condition, x.result.model_version, x.production)
                for x in shadow] == [(i, "unknown", f"{G}/2", f"{G}/1") for i in range(6)]
        assert msgspec.msgpack.Decoder(ShadowPart).decode(before).shadow == []
        async with s.get(f"http://127.0.0.1:{srv.port}/rollout") as r:
            assert (await r.json())["shadow_results"]["sent"] == 6


def test_sigterm_during_a_busy_shadow_exits_promptly_and_cleanly(reg: LocalRegistry) -> None:
    """A shadow queue with work in it must not keep the server from stopping (it once did)."""
    import concurrent.futures
    import time
    import urllib.request

    from tests.infra.model_server import ModelServerProcess

    reg.approve(G, 1)
    reg.approve(G, 2)
    reg.deploy(G, version=1)
    reg.deploy(G, version=2, mode="shadow")
    body = request_body(synth_reports(64, pumps=["p1", "p2"], seed=4))
    srv = ModelServerProcess(registry=reg.root)
    srv.start()
    try:
        def call(_: int) -> int:
            req = urllib.request.Request(srv.url + "/invocations", data=body,  # noqa: S310
                                         headers={"Content-Type": "application/x-msgpack"})
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
                return int(r.status)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert set(pool.map(call, range(24))) == {200}
    finally:
        t0 = time.monotonic()
        rc = srv.stop(timeout=10)
    assert rc == 0 and time.monotonic() - t0 < 5
