"""A SageMaker shadow test read back from data capture, against moto's S3 (server mode).

Capture files are written in SageMaker's documented layout and record format
(``{destination}/{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl``; ``captureData`` with
``endpointInput`` / ``endpointOutput`` as base64 msgpack, ``eventMetadata`` with
``eventId``, ``inferenceId``, ``inferenceTime``), with bodies from two real bundles:
production says ``healthy`` where the shadow (``unsure_below=0.99``) says
``unknown``, and both agree where a bearing fault decides (physics). The two
variants' captures are batched differently, one of the shadow's is outside the
time range, and production's sampling missed some reports: pairing is by report
identity, and the figures are those the local server computes for the same pairs.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest
from botocore.stub import Stubber

import dsp
from dsp.results import Result
from models.registry.capture import CaptureReader, decode_line, hour_prefixes
from models.registry.rollout import Candidate
from models.registry.sagemaker import SageMakerRegistry
from models.serving.bundle import Bundle, load_bundle, write_bundle
from models.serving.handler import MSGPACK, encode_response, score_with_fields
from models.serving.physics import PhysicsParams
from models.serving.rollout import Rollout
from tests.infra.model_server import request_body, synth_reports
from tests.infra.moto_server import ACCOUNT, client
from tests.test_aws_sagemaker_rollout import CONFIG
from tests.test_model_registry_sagemaker import ENDPOINT_ARN, NOW

T0 = datetime(2026, 12, 2, 17, 40, tzinfo=UTC)  # the records straddle 18:00: two hour prefixes
KINDS = ("centrifugal", "screw")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, Bundle]:
    tmp = tmp_path_factory.mktemp("cap")
    v1 = load_bundle(write_bundle(tmp / "a", model_version="a"), version="pumps/1")
    v2 = load_bundle(write_bundle(tmp / "b", model_version="b",
                                  physics=PhysicsParams(unsure_below=0.99)), version="pumps/2")
    return v1, v2


def _reports() -> list[dsp.Report]:
    healthy = synth_reports(12, pumps=["p1", "p2", "p3"], seed=5, seq0=0)
    faulty = synth_reports(6, pumps=["p4"], seed=6, outer=1.0, seq0=12)
    out = []
    for i, r in enumerate(healthy + faulty):
        out.append(msgspec.structs.replace(
            r, asset=msgspec.structs.replace(r.asset, kind=KINDS[i % 2])))
    return out


def _line(bundle: Bundle, reports: list[dsp.Report], at: datetime, event: str) -> str:
    resp, extras = score_with_fields(bundle, reports)
    out = encode_response(resp, MSGPACK, extras)
    return json.dumps({
        "captureData": {
            "endpointInput": {"observedContentType": MSGPACK, "mode": "INPUT",
                              "data": base64.b64encode(request_body(reports)).decode(),
                              "encoding": "BASE64"},
            "endpointOutput": {"observedContentType": MSGPACK, "mode": "OUTPUT",
                               "data": base64.b64encode(out).decode(), "encoding": "BASE64"},
        },
        "eventMetadata": {"eventId": event, "inferenceId": f"inf-{event}",
                          "inferenceTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "eventVersion": "0",
    })


def _put(s3: Any, bucket: str, variant: str, lines: list[tuple[datetime, str]]) -> None:
    """One file per record and hour, keyed as SageMaker keys them."""
    for i, (at, line) in enumerate(lines):
        key = f"capture/pw/{variant}/{at:%Y/%m/%d/%H}/{at:%M-%S}-{i:03d}-{variant}.jsonl"
        s3.put_object(Bucket=bucket, Key=key, Body=(line + "\n").encode())


@pytest.fixture
def capture(moto_server: str, bundles: tuple[Bundle, Bundle],
            request: pytest.FixtureRequest) -> tuple[Any, str, list[dsp.Report]]:
    v1, v2 = bundles
    s3 = client(moto_server, "s3")
    bucket = f"cap-{request.node.name.lower().replace('_', '-')[:40]}"
    s3.create_bucket(Bucket=bucket)
    reps = _reports()
    # production: batches of 4, but its sampling missed the last batch (reports 16, 17)
    prod = [(at, _line(v1, reps[i:i + 4], at, f"p{k}"))
            for k, i in enumerate(range(0, 16, 4)) for at in (T0 + timedelta(minutes=10 * k),)]
    # the shadow: batches of 3 (SageMaker replays each request; our batching differs here
    # to show pairing is by report, not by record); its last batch is outside the range
    shadow = [(at, _line(v2, reps[i:i + 3], at, f"s{k}"))
              for k, i in enumerate(range(0, 15, 3)) for at in (T0 + timedelta(minutes=10 * k),)]
    late = T0 + timedelta(hours=3)
    shadow.append((late, _line(v2, reps[15:18], late, "s-late")))
    shadow[1] = (shadow[1][0], shadow[1][1] + "\n{not json")  # one undecodable line
    _put(s3, bucket, "AllTraffic", prod)
    _put(s3, bucket, "Shadow", shadow)
    return s3, bucket, reps


def _expected(v1: Bundle, v2: Bundle, reps: list[dsp.Report]) -> dict[str, Any]:
    """What the local server's comparison says for the same pairs (its own code path)."""
    ro = Rollout(production="pumps/1", candidate="pumps/2",
                 trial=Candidate(version=2, mode="shadow"))
    p, _ = score_with_fields(v1, reps)
    c, _ = score_with_fields(v2, reps)
    ro.compare(reps, p.results, c.results)
    out: dict[str, Any] = ro.to_dict()["comparison"]
    return out


def _conditions(bundle: Bundle, reps: list[dsp.Report]) -> list[str]:
    resp, _ = score_with_fields(bundle, reps)
    return [r.condition for r in resp.results]


def test_capture_records_decode_and_hours_are_listed(tmp_path: Path) -> None:
    assert hour_prefixes("c/pw/AllTraffic", T0, T0 + timedelta(minutes=30)) == [
        "c/pw/AllTraffic/2026/12/02/17/", "c/pw/AllTraffic/2026/12/02/18/"]
    reps = synth_reports(2, pumps=["p1"], seed=1)
    v1 = load_bundle(write_bundle(tmp_path / "a", model_version="a"), version="pumps/1")
    rec = decode_line(_line(v1, reps, T0, "e1"))
    assert (rec.event_id, rec.inference_id, rec.inference_time) == ("e1", "inf-e1", T0)
    assert rec.model_version == "pumps/1" and len(rec.results) == 2
    assert all(isinstance(r, Result) for r in rec.results)
    assert rec.pump_classes == {(r.device, r.epoch, r.seq): "" for r in reps}


def test_reader_pairs_both_variants_by_report_and_compares_like_the_server(
    capture: tuple[Any, str, list[dsp.Report]], bundles: tuple[Bundle, Bundle],
) -> None:
    s3, bucket, reps = capture
    v1, v2 = bundles
    reader = CaptureReader(s3, f"s3://{bucket}/capture")
    out = reader.compare("pw", "AllTraffic", "Shadow", T0, T0 + timedelta(hours=1))
    # 4 production records (16 results), 5 shadow records in range (15 results)
    assert out["records"] == {"production": 4, "shadow": 5}
    assert out["results"] == {"production": 16, "shadow": 15}
    assert out["undecodable"] == 1 and out["files"] == 9  # the late hour is not listed
    assert out["versions"] == {"production": {"pumps/1": 16}, "shadow": {"pumps/2": 15}}
    paired = reps[:15]  # the shadow's 15 in range; production captured all of them
    assert out["paired"] == 15 and out["shadow_unpaired"] == 0
    cmp_ = out["comparison"]
    assert cmp_ == _expected(v1, v2, paired)
    # and the figures themselves, counted here from the two versions' conditions
    a, b = _conditions(v1, paired), _conditions(v2, paired)
    agree = sum(x == y for x, y in zip(a, b, strict=True))
    assert 0 < agree < 15, (a, b)  # the faulty pump agrees (physics), the healthy ones not
    assert cmp_["*"]["agreement"] == pytest.approx(agree / 15, abs=1e-4)
    assert cmp_["*"]["label_shift"]["unknown"] == pytest.approx(
        (b.count("unknown") - a.count("unknown")) / 15, abs=1e-4)
    for i, kind in enumerate(KINDS):
        idx = range(i, 15, 2)
        assert cmp_[kind]["reports"] == len(idx)
        assert cmp_[kind]["agreement"] == pytest.approx(
            sum(a[j] == b[j] for j in idx) / len(idx), abs=1e-4)
    # a range that holds the late shadow record: it pairs with nothing production captured
    late = reader.compare("pw", "AllTraffic", "Shadow", T0 + timedelta(hours=3),
                          T0 + timedelta(hours=4))
    assert late["shadow_unpaired"] == 3 and late["paired"] == 0


def test_sagemaker_registry_compare_reads_the_endpoints_capture(
    capture: tuple[Any, str, list[dsp.Report]], bundles: tuple[Bundle, Bundle],
) -> None:
    """The registry finds the capture location and the versions on the endpoint (Stubber for
    SageMaker: moto's DescribeEndpoint has no DataCaptureConfig), reads S3 from moto."""
    s3, bucket, reps = capture
    kw = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sm = boto3.client("sagemaker", **kw)
    reg = SageMakerRegistry(sm, s3, s3_prefix="s3://models/pw", image_uri="img", endpoint="pw")
    name = "pw-pumps-1-shadow-2-20261202"
    with Stubber(sm) as stub:
        stub.add_response("describe_endpoint", {
            "EndpointName": "pw", "EndpointArn": ENDPOINT_ARN, "EndpointConfigName": name,
            "EndpointStatus": "InService", "CreationTime": NOW, "LastModifiedTime": NOW,
            "DataCaptureConfig": {"EnableCapture": True, "CaptureStatus": "Started",
                                  "CurrentSamplingPercentage": 100,
                                  "DestinationS3Uri": f"s3://{bucket}/capture",
                                  "KmsKeyId": ""},
        }, {"EndpointName": "pw"})
        stub.add_response("describe_endpoint_config", {
            "EndpointConfigName": name, "EndpointConfigArn": CONFIG + name, "CreationTime": NOW,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m1"}],
        }, {"EndpointConfigName": name})
        stub.add_response("list_tags", {"Tags": [
            {"Key": "pumpwatch:group", "Value": "pumps"},
            {"Key": "pumpwatch:version", "Value": "1"},
            {"Key": "pumpwatch:mode", "Value": "shadow"},
            {"Key": "pumpwatch:shadow-version", "Value": "2"},
        ]}, {"ResourceArn": CONFIG + name})
        out = reg.compare("pumps", since=T0, until=T0 + timedelta(hours=1))
        stub.assert_no_pending_responses()
    assert (out["production"], out["candidate"], out["running"]) == \
        ("pumps/1", "pumps/2", True)
    assert out["capture"] == f"s3://{bucket}/capture"
    v1, v2 = bundles
    assert out["comparison"] == _expected(v1, v2, reps[:15])


def test_cli_compare_on_the_sagemaker_backend_reads_the_capture(
    moto_server: str, bundles: tuple[Bundle, Bundle], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``pumpwatch models --sagemaker compare GROUP``: the endpoint and its config's tags on
    moto's SageMaker, the capture (the last hour, written now) on moto's S3."""
    from pumpwatch.cli import main as cli

    for k, v in (("AWS_ENDPOINT_URL", moto_server), ("AWS_ACCESS_KEY_ID", "testing"),
                 ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(k, v)
    v1, v2 = bundles
    sm, s3 = client(moto_server, "sagemaker"), client(moto_server, "s3")
    sm.create_model(ModelName="pw-cli-m1", ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/x",
                    PrimaryContainer={"Image": "img"})
    sm.create_endpoint_config(
        EndpointConfigName="pw-cli-c1",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "pw-cli-m1",
                             "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}],
        Tags=[{"Key": "pumpwatch:group", "Value": "pumps"},
              {"Key": "pumpwatch:version", "Value": "1"},
              {"Key": "pumpwatch:mode", "Value": "shadow"},
              {"Key": "pumpwatch:shadow-version", "Value": "2"}])
    sm.create_endpoint(EndpointName="pw-cli", EndpointConfigName="pw-cli-c1")
    s3.create_bucket(Bucket="cap-cli")
    reps = _reports()[:8]
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    for variant, bundle in (("AllTraffic", v1), ("Shadow", v2)):
        s3.put_object(Bucket="cap-cli",
                      Key=f"capture/pw-cli/{variant}/{at:%Y/%m/%d/%H}/{at:%M-%S}-x.jsonl",
                      Body=(_line(bundle, reps, at, variant) + "\n").encode())
    base = ["models", "--sagemaker", "--s3-prefix", "s3://models/pw", "--image", "img",
            "--region", "us-east-1"]
    capsys.readouterr()
    assert cli([*base, "--json", "compare", "pumps", "--endpoint", "pw-cli", "--capture",
                "s3://cap-cli/capture", "--hours", "1"]) == 0
    out = json.loads(capsys.readouterr().out)["shown"]
    assert (out["production"], out["candidate"], out["paired"]) == ("pumps/1", "pumps/2", 8)
    assert out["comparison"] == _expected(v1, v2, reps)
    assert cli([*base, "compare", "pumps", "--endpoint", "pw-cli", "--capture",
                "s3://cap-cli/capture", "--hours", "1"]) == 0
    text = capsys.readouterr().out
    assert "shadow: pumps/2 beside pumps/1 (running; data capture s3://cap-cli/capture" in text
    assert "overall" in text and "over 8 reports" in text
