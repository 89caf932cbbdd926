"""The model server through real boto3 and aiobotocore clients (SageMaker Runtime path)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import msgspec
import pytest
from aiobotocore.session import get_session

import dsp
from dsp.results import InvocationResponse
from models.serving.baseline import fit_baselines
from models.serving.bundle import BUILTIN_VERSION, pack_bundle, write_bundle
from tests.infra.model_server import (
    ModelServerProcess,
    boto_kwargs,
    request_body,
    synth_reports,
)

MSGPACK = "application/x-msgpack"


@pytest.fixture(scope="module")
def healthy() -> list[dsp.Report]:
    return synth_reports(24, pumps=["p1", "p2"], seed=11)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, healthy: list[dsp.Report]) -> Path:
    """site-a.tar.gz (baselines of p1 and p2), corrupt.tar.gz (a tampered file)."""
    root = tmp_path_factory.mktemp("models")
    work = tmp_path_factory.mktemp("work")
    base = fit_baselines(healthy, min_reports=5)
    site = write_bundle(work / "site-a", model_version="site-a-1", baselines=base)
    pack_bundle(site, root / "site-a.tar.gz")
    bad = write_bundle(work / "bad", model_version="bad-1", baselines=base)
    (bad / "baselines.npz").write_bytes(b"tampered")
    pack_bundle(bad, root / "corrupt.tar.gz")
    return root


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ModelServerProcess]:
    with ModelServerProcess(model_dir=model_dir, name="pumpwatch") as srv:
        yield srv


@pytest.fixture
def client(server: ModelServerProcess):  # type: ignore[no-untyped-def]
    return boto3.client("sagemaker-runtime", **boto_kwargs(server.url))


def _decode(body: bytes) -> InvocationResponse:
    return msgspec.msgpack.decode(body, type=InvocationResponse)


def test_batch_in_results_out_in_order(client, healthy) -> None:  # type: ignore[no-untyped-def]
    reports = healthy[:5]
    r = client.invoke_endpoint(
        EndpointName="pumpwatch", Body=request_body(reports), ContentType=MSGPACK,
        Accept=MSGPACK, CustomAttributes="trace=abc123",
    )
    assert r["ContentType"] == MSGPACK
    assert r["CustomAttributes"] == "trace=abc123"
    assert r["InvokedProductionVariant"] == "AllTraffic"
    resp = _decode(r["Body"].read())
    assert resp.model_version == BUILTIN_VERSION
    assert [x.identity for x in resp.results] == [x.identity for x in reports]
    for res, rep in zip(resp.results, reports, strict=True):
        assert (res.site, res.pump, res.channel, res.t0_ns) == (
            rep.site, rep.pump, rep.channel, rep.t0_ns,
        )
        assert res.model_version == BUILTIN_VERSION
        assert res.baseline == "fleet"  # built-in bundle: no pump baselines
        assert res.condition == "healthy"
        assert abs(sum(res.probabilities.values()) - 1) < 1e-3
        assert res.iso_zone == rep.features.iso_zone
        assert res.evidence[0].name == "iso_zone"
        assert not res.anomalous


def test_json_in_and_out(client, healthy) -> None:  # type: ignore[no-untyped-def]
    r = client.invoke_endpoint(
        EndpointName="pumpwatch", Body=request_body(healthy[:2], json=True),
        ContentType="application/json",
    )
    assert r["ContentType"] == "application/json"
    resp = msgspec.json.decode(r["Body"].read(), type=InvocationResponse)
    assert [x.seq for x in resp.results] == [healthy[0].seq, healthy[1].seq]


def test_target_model_two_pumps_baselines_in_one_batch(client, healthy) -> None:  # type: ignore[no-untyped-def]
    faulty = synth_reports(2, pumps=["p2"], seed=99, outer=25.0, seq0=500)
    stranger = synth_reports(1, pumps=["p-unknown"], seed=98, seq0=900)
    batch = [healthy[0], healthy[1], *faulty, *stranger]
    r = client.invoke_endpoint(
        EndpointName="pumpwatch", Body=request_body(batch), ContentType=MSGPACK,
        TargetModel="site-a.tar.gz",
    )
    resp = _decode(r["Body"].read())
    assert resp.model_version == "site-a-1"
    got = {(x.pump, x.seq): x for x in resp.results}
    assert [x.identity for x in resp.results] == [x.identity for x in batch]
    assert got[("p1", healthy[0].seq)].baseline == "pump"
    assert got[("p2", healthy[1].seq)].baseline == "pump"
    assert not got[("p1", healthy[0].seq)].anomalous
    assert not got[("p2", healthy[1].seq)].anomalous
    for f in faulty:
        res = got[("p2", f.seq)]
        assert res.baseline == "pump"
        assert res.anomalous and res.anomaly_score > res.anomaly_threshold
        assert res.condition.startswith("bearing_")
        assert any(e.name.startswith("env_") for e in res.evidence)
    assert got[("p-unknown", stranger[0].seq)].baseline == "fleet"


def test_unknown_target_model_is_validation_error_naming_it(client, healthy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(client.exceptions.ValidationError, match="no-such-bundle"):
        client.invoke_endpoint(
            EndpointName="pumpwatch", Body=request_body(healthy[:1]), ContentType=MSGPACK,
            TargetModel="no-such-bundle.tar.gz",
        )
    with pytest.raises(client.exceptions.ValidationError, match=r"\.\./"):
        client.invoke_endpoint(
            EndpointName="pumpwatch", Body=request_body(healthy[:1]), ContentType=MSGPACK,
            TargetModel="../etc/passwd",
        )


def test_corrupt_bundle_is_model_error(client, healthy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(client.exceptions.ModelError, match="SHA-256 mismatch") as ei:
        client.invoke_endpoint(
            EndpointName="pumpwatch", Body=request_body(healthy[:1]), ContentType=MSGPACK,
            TargetModel="corrupt.tar.gz",
        )
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424


def test_unknown_endpoint_name(client, healthy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint other-endpoint"):
        client.invoke_endpoint(
            EndpointName="other-endpoint", Body=request_body(healthy[:1]), ContentType=MSGPACK,
        )


@pytest.mark.parametrize(
    ("body", "ctype", "match"),
    [
        (b"\xc1\xc1not msgpack", MSGPACK, "malformed"),
        (msgspec.msgpack.encode({"v": 1}), MSGPACK, "reports"),
        (msgspec.msgpack.encode({"v": 9, "reports": []}), MSGPACK, "v=9"),
        (b"{\"v\": 1, \"reports\": [{\"x\": 1}]}", "application/json", r"reports\[0\]"),
        (b"", MSGPACK, "empty"),
        (b"a,b,c", "text/csv", "unsupported content type"),
    ],
)
def test_bad_requests_are_validation_errors(client, body, ctype, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(client.exceptions.ValidationError, match=match) as ei:
        client.invoke_endpoint(EndpointName="pumpwatch", Body=body, ContentType=ctype)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 415)


def test_body_over_6mb_is_413(client) -> None:  # type: ignore[no-untyped-def]
    body = b"\x00" * (6 * 1024 * 1024 + 1)
    with pytest.raises(client.exceptions.ValidationError, match="6 MB") as ei:
        client.invoke_endpoint(EndpointName="pumpwatch", Body=body, ContentType=MSGPACK)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_custom_attributes_over_1024_is_rejected(client, healthy) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(client.exceptions.ValidationError):
        client.invoke_endpoint(
            EndpointName="pumpwatch", Body=request_body(healthy[:1]), ContentType=MSGPACK,
            CustomAttributes="x" * 1025,
        )


async def test_aiobotocore_client(server: ModelServerProcess, healthy: list[dsp.Report]) -> None:
    session = get_session()
    kw = boto_kwargs(server.url)
    async with session.create_client("sagemaker-runtime", **kw) as ac:
        r = await ac.invoke_endpoint(
            EndpointName="pumpwatch", Body=request_body(healthy[:3]), ContentType=MSGPACK,
            TargetModel="site-a.tar.gz", CustomAttributes="a=1",
        )
        body = await r["Body"].read()
        assert r["CustomAttributes"] == "a=1"
        resp = _decode(body)
        assert [x.identity for x in resp.results] == [x.identity for x in healthy[:3]]
        assert {x.baseline for x in resp.results} == {"pump"}
        with pytest.raises(ac.exceptions.ValidationError):
            await ac.invoke_endpoint(
                EndpointName="pumpwatch", Body=b"junk", ContentType=MSGPACK,
            )


def test_model_not_ready_while_loading(
    tmp_path: Path, model_dir: Path, healthy: list[dsp.Report]
) -> None:
    extra = ["--load-delay", "1.0", "--load-wait", "0.1"]
    srv = ModelServerProcess(model_dir=model_dir, extra=extra)
    srv.start()
    try:
        client = boto3.client("sagemaker-runtime", **boto_kwargs(srv.url))
        with pytest.raises(client.exceptions.ModelNotReadyException, match="site-a"):
            client.invoke_endpoint(
                EndpointName="pumpwatch", Body=request_body(healthy[:1]), ContentType=MSGPACK,
                TargetModel="site-a.tar.gz",
            )
    finally:
        assert srv.stop() == 0  # SIGTERM: graceful, exit code 0


def test_tar_is_sagemaker_layout(model_dir: Path) -> None:
    with tarfile.open(model_dir / "site-a.tar.gz") as tar:
        names = tar.getnames()
    assert "bundle.json" in names and "baselines.npz" in names
