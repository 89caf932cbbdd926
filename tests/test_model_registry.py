"""Local model registry, and the lifecycle register -> approve -> deploy -> results carry it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3
import msgspec
import pytest

import dsp
from dsp.results import InvocationResponse
from models.registry.local import LocalRegistry
from models.serving.baseline import fit_baselines
from models.serving.bundle import BUILTIN_VERSION, pack_bundle, write_bundle
from models.serving.errors import ChecksumMismatchError, RegistryError
from pumpwatch.cli import main as cli
from tests.infra.model_server import ModelServerProcess, boto_kwargs, request_body, synth_reports

MSGPACK = "application/x-msgpack"


@pytest.fixture(scope="module")
def reports() -> list[dsp.Report]:
    return synth_reports(20, pumps=["p1", "p2"], seed=5)


@pytest.fixture
def bundle_dir(tmp_path: Path, reports: list[dsp.Report]) -> Path:
    return write_bundle(
        tmp_path / "b1", model_version="dev", baselines=fit_baselines(reports, min_reports=5),
        metrics={"sim_macro_f1": 0.5},
    )


def test_register_list_describe_approve_reject(tmp_path: Path, bundle_dir: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    p1 = reg.register("pump-models", bundle_dir, metrics={"auroc": 0.97},
                      customer_metadata={"trained_by": "ci"}, description="first")
    tar = pack_bundle(bundle_dir, tmp_path / "model.tar.gz")
    p2 = reg.register("pump-models", tar)
    assert (p1.version, p2.version) == (1, 2)
    assert p1.status == p2.status == "PendingManualApproval"
    assert p1.model_version == "pump-models/1"
    assert [p.version for p in reg.list_packages("pump-models")] == [2, 1]
    d = reg.describe("pump-models", 1)
    assert d.metrics == {"auroc": 0.97}
    assert d.customer_metadata == {"trained_by": "ci"}
    assert d.artifact_uri.startswith("file://") and len(d.sha256) == 64
    with pytest.raises(RegistryError, match="no Approved"):
        reg.latest_approved("pump-models")
    with pytest.raises(RegistryError, match="PendingManualApproval"):
        reg.deploy("pump-models", "pumpwatch", version=1)
    reg.approve("pump-models", 1, "looks fine")
    reg.reject("pump-models", 2, "worse recall")
    assert reg.latest_approved("pump-models").version == 1
    assert [p.version for p in reg.list_packages("pump-models", "Rejected")] == [2]
    dep = reg.deploy("pump-models", "pumpwatch")
    assert dep.model_version == "pump-models/1"
    assert reg.deployment("pumpwatch") == dep
    assert reg.load(d).model_version == "pump-models/1"
    assert reg.list_groups() == ["pump-models"]


def test_artifact_checksum_is_verified_on_load(tmp_path: Path, bundle_dir: Path) -> None:
    reg = LocalRegistry(tmp_path / "a registry with spaces")
    pkg = reg.register("g1", bundle_dir)
    path = reg.artifact_path(pkg)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ChecksumMismatchError, match="SHA-256 mismatch"):
        reg.load(pkg)


def test_bad_names_and_artifacts(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="invalid model package group name"):
        reg.create_group("bad name!")
    with pytest.raises(RegistryError, match="no artifact"):
        reg.register("g1", tmp_path / "missing")
    with pytest.raises(RegistryError, match="no model package group 'nope'"):
        reg.describe("nope", 1)


def _invoke(client, body: bytes) -> InvocationResponse:  # type: ignore[no-untyped-def]
    r = client.invoke_endpoint(EndpointName="pumpwatch", Body=body, ContentType=MSGPACK)
    return msgspec.msgpack.decode(r["Body"].read(), type=InvocationResponse)


def test_lifecycle_register_approve_deploy_hot_reload_without_losing_requests(
    tmp_path: Path, bundle_dir: Path, reports: list[dsp.Report], capsys: pytest.CaptureFixture[str]
) -> None:
    reg_root = tmp_path / "registry"
    srv = ModelServerProcess(registry=reg_root, extra=["--reload-poll", "0.05"])
    srv.start()
    client = boto3.client("sagemaker-runtime", **boto_kwargs(srv.url))
    body = request_body(reports[:8])
    try:
        assert _invoke(client, body).model_version == BUILTIN_VERSION  # nothing deployed yet
        base = ["models", "--registry", str(reg_root)]
        assert cli([*base, "register", "pumps", str(bundle_dir), "--metric", "auroc=0.9"]) == 0
        assert cli([*base, "approve", "pumps", "1"]) == 0
        assert cli([*base, "deploy", "pumps"]) == 0
        assert "pumps/1" in capsys.readouterr().out

        # Keep requests flowing while versions change: every one must succeed.
        seen: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def pound() -> None:
            c = boto3.client("sagemaker-runtime", **boto_kwargs(srv.url))
            while not stop.is_set():
                try:
                    resp = _invoke(c, body)
                    assert {x.model_version for x in resp.results} == {resp.model_version}
                    seen.append(resp.model_version)
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)

        t = threading.Thread(target=pound)
        t.start()
        try:
            deadline = time.monotonic() + 10
            while not seen or seen[-1] != "pumps/1":
                assert time.monotonic() < deadline, f"never served pumps/1: {seen[-3:]}"
                time.sleep(0.02)
            assert cli([*base, "register", "pumps", str(bundle_dir)]) == 0
            assert cli([*base, "approve", "pumps", "2"]) == 0
            assert cli([*base, "deploy", "pumps"]) == 0
            deadline = time.monotonic() + 10
            while seen[-1] != "pumps/2":
                assert time.monotonic() < deadline, f"never served pumps/2: {seen[-3:]}"
                time.sleep(0.02)
            n = len(seen)
            while len(seen) < n + 3:
                time.sleep(0.02)
        finally:
            stop.set()
            t.join(10)
        assert not errors, errors[:3]
        # versions only move forward: builtin/1 ... then 2
        first2 = seen.index("pumps/2")
        assert set(seen[first2:]) == {"pumps/2"}
        results = _invoke(client, body).results
        assert {r.model_version for r in results} == {"pumps/2"}
        assert {r.baseline for r in results} == {"pump"}

        assert cli([*base, "--json", "list", "pumps"]) == 0
        listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [p["version"] for p in listed] == [2, 1]
        assert listed[1]["metrics"] == {"auroc": 0.9}
    finally:
        assert srv.stop() == 0


def test_models_bundle_command_fits_baselines(tmp_path: Path, reports: list[dsp.Report]) -> None:
    req = tmp_path / "healthy.msgpack"
    req.write_bytes(request_body(reports))
    out = tmp_path / "bundle"
    assert cli(["models", "bundle", "--out", str(out), "--model-version", "site-a-1",
                "--baselines-from", str(req), "--min-reports", "5", "--fleet"]) == 0
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["model_version"] == "site-a-1"
    assert set(manifest["files"]) == {"baselines.npz"}
