"""The SageMaker registry backend against botocore's Stubber (no AWS account is reachable).

The Stubber validates every request against the real service model, so these
tests prove the calls are well-formed SageMaker / S3 API calls in the right order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.stub import ANY, Stubber

from models.registry.sagemaker import METRIC_PREFIX, SHA_KEY, SageMakerRegistry
from models.serving.bundle import write_bundle
from models.serving.errors import RegistryError

ACCOUNT = "123456789012"
GROUP_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package-group/pumps"
PKG_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/pumps"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pumpwatch-model:latest"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/pumpwatch-sagemaker"
MODEL_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/m"
CONFIG_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/c"
ENDPOINT_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/pw"
NOW = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)


@pytest.fixture
def clients() -> Iterator[tuple[SageMakerRegistry, Stubber, Stubber]]:
    kw = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sm = boto3.client("sagemaker", **kw)
    s3 = boto3.client("s3", **kw)
    reg = SageMakerRegistry(sm, s3, s3_prefix="s3://models-bucket/pumpwatch", image_uri=IMAGE,
                            role_arn=ROLE)
    with Stubber(sm) as sms, Stubber(s3) as s3s:
        yield reg, sms, s3s
        sms.assert_no_pending_responses()
        s3s.assert_no_pending_responses()


def _described(version: int, status: str, sha: str = "ab" * 32) -> dict[str, object]:
    return {
        "ModelPackageName": "pumps",
        "ModelPackageGroupName": "pumps",
        "ModelPackageVersion": version,
        "ModelPackageArn": f"{PKG_ARN}/{version}",
        "CreationTime": NOW,
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": status,
        "InferenceSpecification": {
            "Containers": [{
                "Image": IMAGE,
                "ModelDataUrl": f"s3://models-bucket/pumpwatch/pumps/{sha}/model.tar.gz",
            }],
            "SupportedContentTypes": ["application/x-msgpack", "application/json"],
            "SupportedResponseMIMETypes": ["application/x-msgpack", "application/json"],
        },
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "CustomerMetadataProperties": {SHA_KEY: sha, f"{METRIC_PREFIX}auroc": "0.97",
                                       "trained_by": "ci"},
    }


def test_register_uploads_then_creates_pending_package(clients, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg, sms, s3s = clients
    bundle = write_bundle(tmp_path / "b", model_version="dev")
    sms.add_client_error(
        "describe_model_package_group", "ValidationException", "does not exist",
        expected_params={"ModelPackageGroupName": "pumps"},
    )
    sms.add_response(
        "create_model_package_group", {"ModelPackageGroupArn": GROUP_ARN},
        {"ModelPackageGroupName": "pumps", "ModelPackageGroupDescription": ""},
    )
    s3s.add_response(
        "put_object", {},
        {"Bucket": "models-bucket", "Key": ANY, "Body": ANY, "ChecksumSHA256": ANY},
    )
    sms.add_response(
        "create_model_package", {"ModelPackageArn": f"{PKG_ARN}/1"},
        {
            "ModelPackageGroupName": "pumps",
            "ModelPackageDescription": "first",
            "InferenceSpecification": {
                "Containers": [{"Image": IMAGE, "ModelDataUrl": ANY}],
                "SupportedContentTypes": ["application/x-msgpack", "application/json"],
                "SupportedResponseMIMETypes": ["application/x-msgpack", "application/json"],
            },
            "ModelApprovalStatus": "PendingManualApproval",
            "CustomerMetadataProperties": ANY,
        },
    )
    pkg = reg.register("pumps", bundle, metrics={"auroc": 0.97},
                       customer_metadata={"trained_by": "ci"}, description="first")
    assert pkg.version == 1 and pkg.status == "PendingManualApproval"
    assert pkg.arn == f"{PKG_ARN}/1"
    assert pkg.artifact_uri == f"s3://models-bucket/pumpwatch/pumps/{pkg.sha256}/model.tar.gz"
    assert pkg.model_version == "pumps/1"
    assert pkg.customer_metadata == {"trained_by": "ci"}


def test_approve_reject_describe(clients) -> None:  # type: ignore[no-untyped-def]
    reg, sms, _ = clients
    sms.add_response("describe_model_package_group", {
        "ModelPackageGroupName": "pumps", "ModelPackageGroupArn": GROUP_ARN,
        "CreationTime": NOW, "CreatedBy": {}, "ModelPackageGroupStatus": "Completed",
    }, {"ModelPackageGroupName": "pumps"})
    sms.add_response("update_model_package", {"ModelPackageArn": f"{PKG_ARN}/3"}, {
        "ModelPackageArn": f"{PKG_ARN}/3", "ModelApprovalStatus": "Approved",
        "ApprovalDescription": "ok by lead",
    })
    sms.add_response("describe_model_package", _described(3, "Approved"),
                     {"ModelPackageName": f"{PKG_ARN}/3"})
    sms.add_response("update_model_package", {"ModelPackageArn": f"{PKG_ARN}/4"}, {
        "ModelPackageArn": f"{PKG_ARN}/4", "ModelApprovalStatus": "Rejected",
    })
    sms.add_response("describe_model_package", _described(4, "Rejected"),
                     {"ModelPackageName": f"{PKG_ARN}/4"})
    p3 = reg.approve("pumps", 3, "ok by lead")
    assert p3.status == "Approved" and p3.metrics == {"auroc": 0.97}
    assert p3.sha256 == "ab" * 32 and p3.customer_metadata == {"trained_by": "ci"}
    assert reg.reject("pumps", 4).status == "Rejected"


def test_list_paginates_newest_first(clients) -> None:  # type: ignore[no-untyped-def]
    reg, sms, _ = clients

    def summary(v: int, status: str) -> dict[str, object]:
        return {"ModelPackageName": "pumps", "ModelPackageGroupName": "pumps",
                "ModelPackageVersion": v, "ModelPackageArn": f"{PKG_ARN}/{v}",
                "CreationTime": NOW, "ModelPackageStatus": "Completed",
                "ModelApprovalStatus": status}

    base = {"ModelPackageGroupName": "pumps", "SortBy": "CreationTime", "SortOrder": "Descending"}
    sms.add_response("list_model_packages", {
        "ModelPackageSummaryList": [summary(3, "Approved"), summary(2, "Rejected")],
        "NextToken": "t1",
    }, base)
    sms.add_response("list_model_packages", {
        "ModelPackageSummaryList": [summary(1, "PendingManualApproval")],
    }, {**base, "NextToken": "t1"})
    pkgs = reg.list_packages("pumps")
    assert [(p.version, p.status) for p in pkgs] == [
        (3, "Approved"), (2, "Rejected"), (1, "PendingManualApproval"),
    ]


# deploy, promote, rollback, history: tests/test_aws_sagemaker_rollout.py


def test_deploy_refuses_unapproved(clients) -> None:  # type: ignore[no-untyped-def]
    reg, sms, _ = clients
    sms.add_response("describe_model_package_group", {
        "ModelPackageGroupName": "pumps", "ModelPackageGroupArn": GROUP_ARN,
        "CreationTime": NOW, "CreatedBy": {}, "ModelPackageGroupStatus": "Completed",
    }, {"ModelPackageGroupName": "pumps"})
    sms.add_response("describe_model_package", _described(2, "Rejected"),
                     {"ModelPackageName": f"{PKG_ARN}/2"})
    with pytest.raises(RegistryError, match="Rejected"):
        reg.deploy("pumps", "pw", 2)
