"""Rollouts on SageMaker (all, canary, shadow, promote, rollback, history, share) with
botocore's Stubber: moto implements neither UpdateEndpoint nor
PutModelPackageGroupPolicy. The Stubber validates every request against the real
service model (a misspelt or mistyped DeploymentConfig field fails here) and checks
the calls come in the stated order with the stated parameters.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from models.registry.deployer import handle
from models.registry.sagemaker import Guardrails, SageMakerRegistry, group_policy
from models.serving.errors import RegistryError
from tests.test_model_registry_sagemaker import (
    ENDPOINT_ARN,
    GROUP_ARN,
    IMAGE,
    MODEL_ARN,
    NOW,
    PKG_ARN,
    ROLE,
    _described,
)

ACCOUNT = "123456789012"
CAPTURE = "s3://capture-bucket/capture"
ALARMS = ("pw-model-errors", "pw-model-latency")
CONFIG = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/"


@pytest.fixture
def stubbed() -> Iterator[tuple[SageMakerRegistry, Stubber]]:
    kw = {"region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    sm = boto3.client("sagemaker", **kw)
    s3 = boto3.client("s3", **kw)
    reg = SageMakerRegistry(
        sm, s3, s3_prefix="s3://models-bucket/pumpwatch", image_uri=IMAGE, role_arn=ROLE,
        endpoint="pw", capture_s3_uri=CAPTURE,
        guardrails=Guardrails(canary_percent=10, bake_seconds=300, alarms=ALARMS),
    )
    with Stubber(sm) as stub:
        yield reg, stub
        stub.assert_no_pending_responses()


def package(stub: Stubber, version: int, *, group_lookup: bool = True) -> None:
    if group_lookup:
        stub.add_response("describe_model_package_group", {
            "ModelPackageGroupName": "pumps", "ModelPackageGroupArn": GROUP_ARN,
            "CreationTime": NOW, "CreatedBy": {}, "ModelPackageGroupStatus": "Completed",
        }, {"ModelPackageGroupName": "pumps"})
    stub.add_response("describe_model_package", _described(version, "Approved"),
                      {"ModelPackageName": f"{PKG_ARN}/{version}"})


def endpoint(stub: Stubber, config: str, *, instances: int = 3, status: str = "InService") -> None:
    stub.add_response("describe_endpoint", {
        "EndpointName": "pw", "EndpointArn": ENDPOINT_ARN, "EndpointConfigName": config,
        "EndpointStatus": status, "CreationTime": NOW, "LastModifiedTime": NOW,
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": instances}],
    }, {"EndpointName": "pw"})


def config(stub: Stubber, name: str, tags: dict[str, str], *, model: str = "m-old",
           shadow: str | None = None) -> None:
    described: dict[str, Any] = {
        "EndpointConfigName": name, "EndpointConfigArn": CONFIG + name, "CreationTime": NOW,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model,
                                "InstanceType": "ml.m5.large", "InitialInstanceCount": 3,
                                "InitialVariantWeight": 1.0}],
    }
    if shadow:
        described["ShadowProductionVariants"] = [{
            "VariantName": "Shadow", "ModelName": shadow, "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 3, "InitialVariantWeight": 1.0}]
    stub.add_response("describe_endpoint_config", described, {"EndpointConfigName": name})
    stub.add_response("list_tags", {"Tags": [{"Key": f"pumpwatch:{k}", "Value": v}
                                             for k, v in tags.items()]},
                      {"ResourceArn": CONFIG + name})


def creates(stub: Stubber, version: int) -> None:
    stub.add_response("create_model", {"ModelArn": MODEL_ARN}, {
        "ModelName": ANY, "ExecutionRoleArn": ROLE,
        "Containers": [{"ModelPackageName": f"{PKG_ARN}/{version}",
                        "Environment": {"PUMPWATCH_MODEL_VERSION": f"pumps/{version}"}}],
    })


CAPTURE_CONFIG = {"EnableCapture": True, "InitialSamplingPercentage": 100,
                  "DestinationS3Uri": CAPTURE,
                  "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}
ROLLBACK_ALARMS = {"Alarms": [{"AlarmName": a} for a in ALARMS]}


def new_config(stub: Stubber, production: Any, **more: Any) -> dict[str, Any]:
    """Expect CreateEndpointConfig; the dict its Tags are captured in (after the call)."""
    seen: dict[str, Any] = {}

    class Tags:
        def __eq__(self, other: object) -> bool:
            assert isinstance(other, list)
            seen.update({t["Key"].removeprefix("pumpwatch:"): t["Value"] for t in other})
            return True

    stub.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG + "new"}, {
        "EndpointConfigName": ANY, "ProductionVariants": production,
        "DataCaptureConfig": CAPTURE_CONFIG, "Tags": Tags(), **more,
    })
    return seen


def variant(name: str = "AllTraffic", model: Any = ANY, count: int = 3) -> dict[str, Any]:
    return {"VariantName": name, "ModelName": model, "InstanceType": "ml.m5.large",
            "InitialInstanceCount": count, "InitialVariantWeight": 1.0}


def update(stub: Stubber, routing: dict[str, Any], *, alarms: bool = True) -> None:
    dc: dict[str, Any] = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                                    "TerminationWaitInSeconds": 0}}
    if alarms:
        dc["AutoRollbackConfiguration"] = ROLLBACK_ALARMS
    stub.add_response("update_endpoint", {"EndpointArn": ENDPOINT_ARN},
                      {"EndpointName": "pw", "EndpointConfigName": ANY, "DeploymentConfig": dc})


def test_all_swaps_blue_green_with_the_same_variant_name_and_the_live_fleet_size(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    package(stub, 4)
    endpoint(stub, "pumps-v3-x", instances=3)
    creates(stub, 4)
    tags = new_config(stub, [variant(count=3)])
    update(stub, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300})
    dep = reg.deploy("pumps", version=4, by="ana", reason="retrained on site 7")
    assert dep.model_version == "pumps/4"
    assert tags["version"] == "4" and tags["mode"] == "all" and tags["previous"] == "pumps-v3-x"
    assert tags["actor"] == "ana" and tags["reason"] == "retrained on site 7"


def test_canary_shifts_the_stated_capacity_share_then_bakes_under_the_alarms(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    package(stub, 4)
    endpoint(stub, "pumps-v3-x")
    creates(stub, 4)
    new_config(stub, [variant()])
    update(stub, {"Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                  "WaitIntervalInSeconds": 300})
    reg.deploy("pumps", version=4, mode="canary", percent=25)


def test_shadow_keeps_production_and_adds_the_candidate_as_a_shadow_variant(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    package(stub, 4)
    endpoint(stub, "pumps-v3-x")
    creates(stub, 4)
    # the live config: its production variant is copied, its record says what it serves
    config(stub, "pumps-v3-x", {"group": "pumps", "version": "3", "endpoint": "pw"})
    tags = new_config(stub, [variant(model="m-old")],
                      ShadowProductionVariants=[variant("Shadow")])
    update(stub, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300})
    dep = reg.deploy("pumps", version=4, mode="shadow")
    assert dep.version == 4
    assert (tags["version"], tags["shadow-version"], tags["mode"]) == ("3", "4", "shadow")


def test_promote_takes_the_shadow_live_behind_the_canary_guardrails(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    live = {"group": "pumps", "version": "3", "shadow-version": "4", "mode": "shadow",
            "endpoint": "pw"}
    endpoint(stub, "pumps-v3-s")
    config(stub, "pumps-v3-s", live, shadow="m-new")
    package(stub, 4)
    endpoint(stub, "pumps-v3-s")
    creates(stub, 4)
    tags = new_config(stub, [variant()])
    update(stub, {"Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                  "WaitIntervalInSeconds": 300})
    assert reg.promote("pumps", by="ana").model_version == "pumps/4"
    assert (tags["version"], tags["mode"], tags["reason"]) == ("4", "canary", "promote shadow")


def test_promote_while_a_canary_bakes_says_sagemaker_finishes_it(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    endpoint(stub, "pumps-v4-c", status="Updating")
    config(stub, "pumps-v4-c", {"group": "pumps", "version": "4", "mode": "canary"})
    with pytest.raises(RegistryError, match="canary baking"):
        reg.promote("pumps")


def test_rollback_copies_the_previous_config_as_a_new_recorded_one_without_waiting(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    endpoint(stub, "pumps-v4-c")
    config(stub, "pumps-v4-c", {"group": "pumps", "version": "4", "previous": "pumps-v3-x"},
           model="m-new")
    config(stub, "pumps-v3-x", {"group": "pumps", "version": "3"}, model="m-old")
    tags = new_config(stub, [variant(model="m-old")])
    update(stub, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}, alarms=False)
    dep = reg.rollback("pumps", by="oncall", reason="alarm on site 7")
    assert dep.model_version == "pumps/3"
    assert (tags["mode"], tags["previous"], tags["version"]) == ("rollback", "pumps-v4-c", "3")


def test_history_reads_the_records_from_the_endpoint_configs_tags(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    stub.add_response("list_endpoint_configs", {"EndpointConfigs": [
        {"EndpointConfigName": n, "EndpointConfigArn": CONFIG + n, "CreationTime": NOW}
        for n in ("pumps-v4-b", "pumps-v3-a", "pumps-other")]},
        {"NameContains": "pumps", "SortBy": "CreationTime", "SortOrder": "Descending"})
    for name, tags in (
        ("pumps-v4-b", {"group": "pumps", "endpoint": "pw", "version": "4", "mode": "canary",
                        "previous": "pumps-v3-a", "actor": "approval", "when": "t2"}),
        ("pumps-v3-a", {"group": "pumps", "endpoint": "pw", "version": "3", "mode": "all"}),
        ("pumps-other", {"group": "pumps", "endpoint": "elsewhere", "version": "9"}),
    ):
        stub.add_response("list_tags", {"Tags": [{"Key": f"pumpwatch:{k}", "Value": v}
                                                 for k, v in tags.items()]},
                          {"ResourceArn": CONFIG + name})
    got = reg.deployments("pumps")
    assert [(r.version, r.mode, r.previous_config) for r in got] == [
        (4, "canary", "pumps-v3-a"), (3, "all", "")]


def test_a_canary_or_shadow_needs_a_live_endpoint_and_options_are_checked_first(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    with pytest.raises(RegistryError, match="a percent is for mode='canary'"):
        reg.deploy("pumps", version=4, percent=20)
    with pytest.raises(RegistryError, match=r"1\.\.99"):
        reg.deploy("pumps", version=4, mode="canary", percent=100)
    package(stub, 4)
    stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint",
                          expected_params={"EndpointName": "pw"})
    with pytest.raises(RegistryError, match="deploy with mode='all' first"):
        reg.deploy("pumps", version=4, mode="shadow")


def test_the_deployer_creates_the_endpoint_with_the_first_approved_version(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    event: dict[str, Any] = {
        "source": "aws.sagemaker", "detail-type": "SageMaker Model Package State Change",
        "id": "e1", "detail": {"ModelPackageGroupName": "pumps", "ModelPackageVersion": 1,
                               "ModelApprovalStatus": "Approved"}}
    stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint",
                          expected_params={"EndpointName": "pw"})
    package(stub, 1)
    stub.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint",
                          expected_params={"EndpointName": "pw"})
    creates(stub, 1)
    new_config(stub, [variant(count=1)])
    stub.add_response("create_endpoint", {"EndpointArn": ENDPOINT_ARN},
                      {"EndpointName": "pw", "EndpointConfigName": ANY})
    dep = handle(event, reg)
    assert dep is not None and dep.model_version == "pumps/1"
    assert handle({**event, "detail": {**event["detail"], "ModelApprovalStatus": "Rejected"}},
                  reg) is None
    with pytest.raises(RegistryError, match="not a 'SageMaker Model Package State Change'"):
        handle({"source": "aws.s3"}, reg)


def test_share_puts_a_read_only_group_policy_for_the_accounts(
    stubbed: tuple[SageMakerRegistry, Stubber],
) -> None:
    reg, stub = stubbed
    with pytest.raises(RegistryError, match="12-digit"):
        group_policy(GROUP_ARN, ["1234", "111122223333"])
    stub.add_response("describe_model_package_group", {
        "ModelPackageGroupName": "pumps", "ModelPackageGroupArn": GROUP_ARN,
        "CreationTime": NOW, "CreatedBy": {}, "ModelPackageGroupStatus": "Completed",
    }, {"ModelPackageGroupName": "pumps"})
    sent: dict[str, Any] = {}

    class Policy:
        def __eq__(self, other: object) -> bool:
            sent.update(json.loads(str(other)))
            return True

    stub.add_response("put_model_package_group_policy", {"ModelPackageGroupArn": GROUP_ARN},
                      {"ModelPackageGroupName": "pumps", "ResourcePolicy": Policy()})
    reg.share("pumps", ["444455556666", "111122223333"])
    (st,) = sent["Statement"]
    assert st["Principal"]["AWS"] == ["arn:aws:iam::111122223333:root",
                                      "arn:aws:iam::444455556666:root"]
    assert all(a.startswith(("sagemaker:Describe", "sagemaker:List")) for a in st["Action"])
    assert st["Resource"] == [GROUP_ARN, f"{PKG_ARN}/*"]


_ = dt  # (NOW comes from the registry tests)
