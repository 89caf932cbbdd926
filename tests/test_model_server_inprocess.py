"""The server in-process: readiness, bundle cache, graceful stop, registry targets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np
import pytest
from numpy.typing import NDArray

import dsp
from dsp.results import InvocationResponse, Manifest
from models.registry.local import LocalRegistry
from models.serving.baseline import fit_baselines
from models.serving.bundle import Bundle, pack_bundle, write_bundle
from models.serving.errors import BundleError
from models.serving.features import BatchFeatures
from models.serving.server import ModelServer, ServerConfig
from tests.infra.model_server import request_body, synth_reports

MSGPACK = {"Content-Type": "application/x-msgpack"}


@pytest.fixture(scope="module")
def reports() -> list[dsp.Report]:
    return synth_reports(12, pumps=["p1", "p2"], seed=41)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, reports: list[dsp.Report]) -> Path:
    root = tmp_path_factory.mktemp("models")
    work = tmp_path_factory.mktemp("work")
    base = fit_baselines(reports, min_reports=3)
    for name in ("a", "b", "c"):
        pack_bundle(write_bundle(work / name, model_version=f"site-{name}", baselines=base),
                    root / f"{name}.tar.gz")
    return root


def _cfg(**kw: object) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, **kw)  # type: ignore[arg-type]


async def test_ping_unhealthy_until_loaded_then_healthy(reports: list[dsp.Report]) -> None:
    async with ModelServer(_cfg(load_delay_s=0.5)) as srv, aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{srv.port}"
        async with s.get(url + "/ping") as r:
            assert r.status == 503
        async with s.post(url + "/invocations", data=request_body(reports[:1]),
                          headers=MSGPACK) as r:
            assert r.status == 429
            assert r.headers["x-amzn-ErrorType"] == "ModelNotReadyException"
        async with asyncio.timeout(10):
            await srv.wait_ready()
        async with s.get(url + "/ping") as r:
            assert r.status == 200


async def test_target_bundles_lru_under_memory_budget(
    model_dir: Path, reports: list[dsp.Report]
) -> None:
    async with ModelServer(_cfg(model_dir=model_dir, cache_bytes=1)) as srv, \
            aiohttp.ClientSession() as s:
        await srv.wait_ready()
        url = f"http://127.0.0.1:{srv.port}"
        body = request_body(reports[:2])
        for name in ("a", "b", "a", "c"):
            async with s.post(url + "/invocations", data=body, headers={
                **MSGPACK, "X-Amzn-SageMaker-Target-Model": f"{name}.tar.gz",
            }) as r:
                assert r.status == 200, await r.text()
                resp = msgspec.msgpack.decode(await r.read(), type=InvocationResponse)
                assert resp.model_version == f"site-{name}"
                assert r.headers["X-Pumpwatch-Model-Version"] == f"site-{name}"
        async with s.get(url + "/stats") as r:
            info = await r.json()
        assert info["targets"] == {"c.tar.gz": "site-c"}  # budget holds one
        assert info["evictions"] == 3
        assert srv.store.loads == 4


async def test_graceful_stop_finishes_in_flight_requests(
    model_dir: Path, reports: list[dsp.Report]
) -> None:
    srv = ModelServer(_cfg(model_dir=model_dir, load_delay_s=0.4, load_wait_s=5))
    await srv.start()
    await srv.wait_ready()
    url = f"http://127.0.0.1:{srv.port}"
    async with aiohttp.ClientSession() as s:

        async def slow() -> int:
            async with s.post(url + "/invocations", data=request_body(reports[:1]), headers={
                **MSGPACK, "X-Amzn-SageMaker-Target-Model": "b.tar.gz",
            }) as r:
                await r.read()
                return r.status

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.1)  # the request is in flight, waiting for its bundle
        await srv.close()
        assert await task == 200


async def test_registry_group_version_as_target_model(
    tmp_path: Path, model_dir: Path, reports: list[dsp.Report]
) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    reg.register("fleet-a", model_dir / "a.tar.gz")
    reg.register("fleet-a", model_dir / "b.tar.gz")
    reg.approve("fleet-a", 1)
    async with ModelServer(_cfg(registry=reg.root, reload_poll_s=0)) as srv, \
            aiohttp.ClientSession() as s:
        await srv.wait_ready()
        url = f"http://127.0.0.1:{srv.port}/invocations"
        body = request_body(reports[:1])
        async with s.post(url, data=body, headers={
            **MSGPACK, "X-Amzn-SageMaker-Target-Model": "fleet-a/1"}) as r:
            resp = msgspec.msgpack.decode(await r.read(), type=InvocationResponse)
            assert resp.model_version == "fleet-a/1"
        async with s.post(url, data=body, headers={
            **MSGPACK, "X-Amzn-SageMaker-Target-Model": "fleet-a/2"}) as r:
            assert r.status == 400
            assert "PendingManualApproval" in (await r.json())["message"]


async def test_multi_model_container_api(model_dir: Path, reports: list[dsp.Report]) -> None:
    async with ModelServer(_cfg()) as srv, aiohttp.ClientSession() as s:
        await srv.wait_ready()
        url = f"http://127.0.0.1:{srv.port}"
        spec = {"model_name": "site-a", "url": str(model_dir / "a.tar.gz")}
        async with s.post(url + "/models", json=spec) as r:
            assert r.status == 200, await r.text()
        async with s.post(url + "/models", json=spec) as r:
            assert r.status == 409
        async with s.get(url + "/models") as r:
            assert (await r.json())["models"] == [{"modelName": "site-a",
                                                   "modelUrl": spec["url"]}]
        async with s.post(url + "/models/site-a/invoke", data=request_body(reports[:2]),
                          headers=MSGPACK) as r:
            resp = msgspec.msgpack.decode(await r.read(), type=InvocationResponse)
            assert resp.model_version == "site-a" and len(resp.results) == 2
        async with s.get(url + "/models/site-a/manifest") as r:
            manifest = msgspec.json.decode(await r.read(), type=Manifest)
        assert manifest.model_version == "site-a" and manifest.digest == resp.manifest_digest
        async with s.delete(url + "/models/site-a") as r:
            assert r.status == 200
        async with s.post(url + "/models/site-a/invoke", data=request_body(reports[:1]),
                          headers=MSGPACK) as r:
            assert r.status == 404


class _Exploding:
    kind = "test-exploding"
    classes: tuple[str, ...] = ("healthy", "unknown")
    nbytes = 0

    def predict_proba(self, f: BatchFeatures) -> NDArray[np.float64]:
        raise FloatingPointError("the model blew up")

    def save(self, bundle_dir: Path) -> dict[str, Any]:
        return {"kind": self.kind}


async def test_model_failure_while_scoring_is_model_error(
    tmp_path: Path, reports: list[dsp.Report]
) -> None:
    import json

    from models.serving.classifier import register_kind

    register_kind("test-exploding", lambda d, spec: _Exploding())
    bundle = write_bundle(tmp_path / "models" / "boom", model_version="boom-1")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["classifier"] = {"kind": "test-exploding"}
    manifest["classes"] = [{"name": c} for c in _Exploding.classes]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    async with ModelServer(_cfg(model_dir=tmp_path / "models")) as srv, \
            aiohttp.ClientSession() as s:
        await srv.wait_ready()
        async with s.post(f"http://127.0.0.1:{srv.port}/invocations",
                          data=request_body(reports[:2]),
                          headers={**MSGPACK, "X-Amzn-SageMaker-Target-Model": "boom"}) as r:
            assert r.status == 424
            assert r.headers["x-amzn-ErrorType"] == "ModelError"
            body = await r.json()
            assert "boom-1" in body["message"] and "blew up" in body["message"]
            assert body["OriginalStatusCode"] == 500


def default(srv: ModelServer) -> Bundle | None:
    return srv.store.default  # (a call, so that mypy does not narrow the attribute across awaits)


async def test_bad_deployment_is_unhealthy_with_the_reason_then_a_good_deploy_reloads(
    tmp_path: Path, model_dir: Path, reports: list[dsp.Report]
) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    for name in ("a", "b"):
        reg.register("g", model_dir / f"{name}.tar.gz")
        reg.approve("g", 1 if name == "a" else 2)
    reg.deploy("g", "pumpwatch", version=1)
    art = reg.artifact_path(reg.describe("g", 1))
    art.write_bytes(art.read_bytes() + b"tampered")
    async with ModelServer(_cfg(registry=reg.root, reload_poll_s=0.05)) as srv, \
            aiohttp.ClientSession() as s:
        async with asyncio.timeout(10):
            with pytest.raises(BundleError, match=r"g/1.*SHA-256 mismatch"):
                await srv.wait_ready()
        assert default(srv) is None  # never the built-in bundle in its place
        async with s.get(f"http://127.0.0.1:{srv.port}/ping") as r:
            assert r.status == 503
            ping = await r.json()
        assert ping["status"] == "failed" and str(art) in ping["message"]
        reg.deploy("g", "pumpwatch", version=2)
        async with asyncio.timeout(10):
            await srv.ready.wait()
        assert srv.store.default is not None and srv.store.default.model_version == "g/2"
        async with s.get(f"http://127.0.0.1:{srv.port}/ping") as r:
            assert r.status == 200
