"""Approval to deployment: a SageMaker approval event in, the registry's ``deploy`` out.

EventBridge matches ``SageMaker Model Package State Change`` events whose
``detail.ModelApprovalStatus`` is ``Approved`` for the group (deploy/aws/approval.yaml)
and starts the deployer task, which runs ``pumpwatch aws deploy-approved --stack S
--group G --version N`` (the rule's input transformer fills G and N from the event).
:func:`handle` is the same path for a whole event (a Lambda-style handler, or
``--event FILE``). Settings -- endpoint, variant name, execution role, canary share,
bake time, alarm names, data capture -- come from the SageMaker stack's outputs, so
the template is their one source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.serving.errors import RegistryError

from .local import Deployment
from .sagemaker import DEPLOY_MODES, DeployMode, Guardrails, SageMakerRegistry

DETAIL_TYPE = "SageMaker Model Package State Change"


def stack_outputs(cfn: Any, stack: str) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of CloudFormation stack ``stack``."""
    stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def registry_from_outputs(sm: Any, s3: Any, outputs: Mapping[str, str]) -> SageMakerRegistry:
    """A SageMaker registry configured by the SageMaker stack's outputs."""
    need = ("EndpointName", "VariantName", "ExecutionRoleArn", "InstanceType", "ImageUri",
            "ArtifactS3Prefix", "CanaryPercent", "BakeSeconds", "AlarmNames", "CaptureS3Uri")
    missing = [k for k in need if k not in outputs]
    if missing:
        raise RegistryError(f"the SageMaker stack has no output {', '.join(missing)}")
    return SageMakerRegistry(
        sm, s3,
        s3_prefix=outputs["ArtifactS3Prefix"], image_uri=outputs["ImageUri"],
        role_arn=outputs["ExecutionRoleArn"], instance_type=outputs["InstanceType"],
        endpoint=outputs["EndpointName"], variant=outputs["VariantName"],
        capture_s3_uri=outputs["CaptureS3Uri"] or None,
        guardrails=Guardrails(
            canary_percent=int(outputs["CanaryPercent"]),
            bake_seconds=int(outputs["BakeSeconds"]),
            alarms=tuple(a for a in outputs["AlarmNames"].split(",") if a),
        ),
    )


def approved_package(event: Mapping[str, Any]) -> tuple[str, int] | None:
    """``(group, version)`` of an approval event; None for another status.

    Raises :class:`RegistryError` for something that is not such an event at all."""
    if event.get("detail-type") != DETAIL_TYPE or event.get("source") != "aws.sagemaker":
        raise RegistryError(
            f"not a {DETAIL_TYPE!r} event from aws.sagemaker: detail-type "
            f"{event.get('detail-type')!r}, source {event.get('source')!r}"
        )
    detail = event.get("detail") or {}
    if detail.get("ModelApprovalStatus") != "Approved":
        return None
    try:
        return str(detail["ModelPackageGroupName"]), int(detail["ModelPackageVersion"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"approval event without group and version: {exc!r}") from None


def handle(
    event: Mapping[str, Any], registry: SageMakerRegistry, *, mode: DeployMode = "canary"
) -> Deployment | None:
    """Deploy the package an approval event names (None: not an approval); ``mode`` as in
    :meth:`SageMakerRegistry.deploy`, ``all`` while the endpoint does not exist."""
    if mode not in DEPLOY_MODES:
        raise RegistryError(f"mode must be one of {', '.join(DEPLOY_MODES)}, got {mode!r}")
    got = approved_package(event)
    if got is None:
        return None
    group, version = got
    if registry.live_endpoint(registry.endpoint) is None:
        mode = "all"  # the first version creates the endpoint: nothing to guard against yet
    return registry.deploy(
        group, version=version, mode=mode, by="approval",
        reason=f"approved event {event.get('id', '')}".strip(),
    )
