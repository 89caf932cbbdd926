"""The :class:`~models.registry.local.ModelRegistry` interface over the SageMaker Model Registry.

Mapping (boto3 ``sagemaker`` and ``s3`` clients, passed in, or made by
:meth:`SageMakerRegistry.connect`):

- ``create_group`` -> DescribeModelPackageGroup, CreateModelPackageGroup if absent.
- ``register`` -> PutObject of ``model.tar.gz`` to
  ``{s3_prefix}/{group}/{sha256}/model.tar.gz`` (S3 verifies the upload's
  SHA-256), then CreateModelPackage with the serving image and artifact in
  ``InferenceSpecification``, ``ModelApprovalStatus=PendingManualApproval``,
  the checksum and metrics in ``CustomerMetadataProperties``
  (``pumpwatch:sha256``, ``pumpwatch:metric:NAME``; SageMaker's own
  ``ModelMetrics`` want S3 JSON reports, passed through as ``metrics_s3_uri``).
- ``list_packages`` -> ListModelPackages (newest first; summaries have no
  artifact, use ``describe``). ``describe`` -> DescribeModelPackage.
- ``set_status`` / ``approve`` / ``reject`` -> UpdateModelPackage.
- ``deploy(group, version, mode=all|canary|shadow)`` -> CreateModel (from the
  approved package) + CreateEndpointConfig (the production variant keeps its
  name in every config; data capture; the deployment record in ``pumpwatch:*``
  tags), then UpdateEndpoint with a blue/green ``DeploymentConfig`` (all at once
  or canary, then a bake with the :class:`Guardrails` alarms armed: SageMaker
  rolls back by itself on an alarm), or CreateEndpoint when there is none yet.
  ``shadow`` keeps production as it is and adds the version as a shadow variant
  whose answers go to data capture only. ``promote`` / ``rollback`` /
  ``deployments`` finish, undo and list rollouts (docs/aws.md).
- ``share`` -> PutModelPackageGroupPolicy (read access for other accounts).

Results name ``{group}/{version}`` as their model version, as locally: set
``PUMPWATCH_MODEL_VERSION`` on the container (CreateModel ``Environment``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from models.serving.bundle import bundle_bytes, read_manifest
from models.serving.errors import RegistryError
from models.serving.handler import JSON, MSGPACK

from .local import ApprovalStatus, Deployment, ModelPackage, check_group_name
from .rollout import HistoryEntry, RolloutLimits, who

SHA_KEY = "pumpwatch:sha256"
METRIC_PREFIX = "pumpwatch:metric:"
_S3_RE = re.compile(r"^s3://([^/]+)/?(.*)$")


def _split_s3(uri: str) -> tuple[str, str]:
    m = _S3_RE.match(uri)
    if not m:
        raise RegistryError(f"not an s3:// URI: {uri!r}")
    return m.group(1), m.group(2).strip("/")


NEEDS_EXTRA = "the SageMaker registry needs boto3: pip install 'pumpwatch[models]'"


def _sdk(module: str) -> Any:
    """An AWS SDK module, imported when a registry is made; missing, an error naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{NEEDS_EXTRA} ({exc})", name=exc.name) from exc


class SageMakerRegistry:
    """SageMaker Model Registry backend (clients injected: boto3 or Stubber-wrapped)."""

    @classmethod
    def connect(
        cls, *, region: str | None = None, s3_prefix: str, image_uri: str,
        role_arn: str | None = None,
    ) -> SageMakerRegistry:
        """A registry over new boto3 ``sagemaker`` and ``s3`` clients (the SDK's credentials)."""
        boto3 = _sdk("boto3")
        return cls(
            boto3.client("sagemaker", region_name=region),
            boto3.client("s3", region_name=region),
            s3_prefix=s3_prefix, image_uri=image_uri, role_arn=role_arn,
        )

    def __init__(
        self,
        sagemaker: Any,
        s3: Any,
        *,
        s3_prefix: str,
        image_uri: str,
        role_arn: str | None = None,
        instance_type: str = "ml.m5.large",
        metrics_s3_uri: str | None = None,
        endpoint: str = "pumpwatch",
        variant: str = "AllTraffic",
        shadow_variant: str = "Shadow",
        guardrails: Guardrails | None = None,
        capture_s3_uri: str | None = None,
        capture_percent: int = 100,
        kms_key: str | None = None,
    ) -> None:
        self._client_error = _sdk("botocore.exceptions").ClientError
        self.sm = sagemaker
        self.s3 = s3
        self.bucket, self.prefix = _split_s3(s3_prefix)
        self.image_uri = image_uri
        self.role_arn = role_arn
        self.instance_type = instance_type
        self.metrics_s3_uri = metrics_s3_uri
        self.endpoint = endpoint
        self.variant = variant  # the production variant's name: the same in every config
        self.shadow_variant = shadow_variant
        self.guardrails = guardrails or Guardrails()
        self.capture_s3_uri = capture_s3_uri
        self.capture_percent = capture_percent
        self.kms_key = kms_key
        self._group_arns: dict[str, str] = {}

    # --- groups -------------------------------------------------------------------
    def create_group(self, group: str, description: str = "") -> None:
        check_group_name(group)
        try:
            r = self.sm.describe_model_package_group(ModelPackageGroupName=group)
        except self._client_error as exc:
            if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
            r = self.sm.create_model_package_group(
                ModelPackageGroupName=group, ModelPackageGroupDescription=description
            )
        self._group_arns[group] = r["ModelPackageGroupArn"]

    def _group_arn(self, group: str) -> str:
        if group not in self._group_arns:
            try:
                r = self.sm.describe_model_package_group(ModelPackageGroupName=group)
            except self._client_error as exc:
                raise RegistryError(f"no model package group {group!r}: {exc}") from None
            self._group_arns[group] = r["ModelPackageGroupArn"]
        return self._group_arns[group]

    def package_arn(self, group: str, version: int) -> str:
        return self._group_arn(group).replace(":model-package-group/", ":model-package/") + (
            f"/{version}"
        )

    # --- packages -----------------------------------------------------------------
    def register(
        self,
        group: str,
        artifact: Path,
        *,
        metrics: Mapping[str, float] | None = None,
        customer_metadata: Mapping[str, str] | None = None,
        description: str = "",
        drift_check_baselines: Mapping[str, Any] | None = None,
    ) -> ModelPackage:
        """Upload and register; ``drift_check_baselines`` is SageMaker's
        ``DriftCheckBaselines`` (``{"ModelQuality": {"Statistics": {"ContentType": ...,
        "S3Uri": ...}, ...}, ...}``), passed through."""
        self.create_group(group)
        artifact = Path(artifact)
        if artifact.is_dir():
            read_manifest(artifact)
            data = bundle_bytes(artifact)
        elif artifact.is_file():
            data = artifact.read_bytes()
        else:
            raise RegistryError(f"no artifact at {artifact}")
        digest = hashlib.sha256(data)
        sha = digest.hexdigest()
        key = "/".join(p for p in (self.prefix, group, sha, "model.tar.gz") if p)
        self.s3.put_object(
            Bucket=self.bucket, Key=key, Body=data,
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        )
        uri = f"s3://{self.bucket}/{key}"
        meta = {str(k): str(v) for k, v in (customer_metadata or {}).items()}
        meta[SHA_KEY] = sha
        for k, v in (metrics or {}).items():
            meta[f"{METRIC_PREFIX}{k}"] = repr(float(v))
        kwargs: dict[str, Any] = {
            "ModelPackageGroupName": group,
            "ModelPackageDescription": description,
            "InferenceSpecification": {
                "Containers": [{"Image": self.image_uri, "ModelDataUrl": uri}],
                "SupportedContentTypes": [MSGPACK, JSON],
                "SupportedResponseMIMETypes": [MSGPACK, JSON],
            },
            "ModelApprovalStatus": "PendingManualApproval",
            "CustomerMetadataProperties": meta,
        }
        if self.metrics_s3_uri:
            kwargs["ModelMetrics"] = {
                "ModelQuality": {
                    "Statistics": {"ContentType": JSON, "S3Uri": self.metrics_s3_uri}
                }
            }
        if drift_check_baselines:
            kwargs["DriftCheckBaselines"] = dict(drift_check_baselines)
        r = self.sm.create_model_package(**kwargs)
        arn = r["ModelPackageArn"]
        return ModelPackage(
            group=group,
            version=int(arn.rsplit("/", 1)[1]),
            status="PendingManualApproval",
            artifact_uri=uri,
            sha256=sha,
            metrics={str(k): float(v) for k, v in (metrics or {}).items()},
            customer_metadata={k: v for k, v in meta.items() if not k.startswith("pumpwatch:")},
            description=description,
            arn=arn,
        )

    def _from_description(self, d: Mapping[str, Any]) -> ModelPackage:
        meta = dict(d.get("CustomerMetadataProperties", {}))
        containers = d.get("InferenceSpecification", {}).get("Containers", [{}])
        return ModelPackage(
            group=d["ModelPackageGroupName"],
            version=int(d["ModelPackageVersion"]),
            status=d["ModelApprovalStatus"],
            artifact_uri=containers[0].get("ModelDataUrl", ""),
            sha256=meta.get(SHA_KEY, ""),
            metrics={
                k[len(METRIC_PREFIX) :]: float(v) for k, v in meta.items()
                if k.startswith(METRIC_PREFIX)
            },
            customer_metadata={k: v for k, v in meta.items() if not k.startswith("pumpwatch:")},
            description=d.get("ModelPackageDescription", ""),
            approval_description=d.get("ApprovalDescription", ""),
            created=str(d.get("CreationTime", "")),
            arn=d["ModelPackageArn"],
        )

    def list_packages(
        self, group: str, status: ApprovalStatus | None = None
    ) -> list[ModelPackage]:
        """Newest first. Summaries: no artifact URI or checksum (``describe`` has them)."""
        kwargs: dict[str, Any] = {
            "ModelPackageGroupName": group, "SortBy": "CreationTime", "SortOrder": "Descending",
        }
        if status is not None:
            kwargs["ModelApprovalStatus"] = status
        out: list[ModelPackage] = []
        while True:
            r = self.sm.list_model_packages(**kwargs)
            for s in r.get("ModelPackageSummaryList", []):
                out.append(
                    ModelPackage(
                        group=s.get("ModelPackageGroupName", group),
                        version=int(s["ModelPackageVersion"]),
                        status=s["ModelApprovalStatus"],
                        artifact_uri="",
                        sha256="",
                        description=s.get("ModelPackageDescription", ""),
                        created=str(s.get("CreationTime", "")),
                        arn=s["ModelPackageArn"],
                    )
                )
            token = r.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token

    def describe(self, group: str, version: int) -> ModelPackage:
        try:
            d = self.sm.describe_model_package(ModelPackageName=self.package_arn(group, version))
        except self._client_error as exc:
            raise RegistryError(f"no version {version} in group {group!r}: {exc}") from None
        return self._from_description(d)

    def set_status(
        self, group: str, version: int, status: ApprovalStatus, description: str = ""
    ) -> ModelPackage:
        arn = self.package_arn(group, version)
        kwargs: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
        if description:
            kwargs["ApprovalDescription"] = description
        self.sm.update_model_package(**kwargs)
        return self.describe(group, version)

    def set_metadata(self, group: str, version: int, metadata: Mapping[str, str]) -> ModelPackage:
        """Add or replace customer metadata properties (``UpdateModelPackage`` merges them)."""
        self.sm.update_model_package(
            ModelPackageArn=self.package_arn(group, version),
            CustomerMetadataProperties={str(k): str(v) for k, v in metadata.items()},
        )
        return self.describe(group, version)

    def approve(self, group: str, version: int, description: str = "") -> ModelPackage:
        return self.set_status(group, version, "Approved", description)

    def reject(self, group: str, version: int, description: str = "") -> ModelPackage:
        return self.set_status(group, version, "Rejected", description)

    def latest_approved(self, group: str) -> ModelPackage:
        approved = self.list_packages(group, "Approved")
        if not approved:
            raise RegistryError(f"model package group {group!r} has no Approved version")
        return self.describe(group, approved[0].version)

    # --- cross-account sharing ------------------------------------------------------
    def share(self, group: str, accounts: list[str]) -> dict[str, Any]:
        """Grant ``accounts`` read access to ``group`` (PutModelPackageGroupPolicy); the policy."""
        policy = group_policy(self._group_arn(group), accounts)
        self.sm.put_model_package_group_policy(
            ModelPackageGroupName=group, ResourcePolicy=json.dumps(policy)
        )
        return policy

    # --- deployments ----------------------------------------------------------------
    def deploy(
        self,
        group: str,
        endpoint: str | None = None,
        version: int | None = None,
        *,
        mode: DeployMode = "all",
        percent: float | None = None,
        limits: RolloutLimits | None = None,
        by: str | None = None,
        reason: str = "",
    ) -> Deployment:
        """Roll ``version`` (default: the latest Approved) of ``group`` out to the endpoint.

        ``all``: a new endpoint config whose one production variant (same name as
        before) serves the version, swapped in by a blue/green UpdateEndpoint that
        shifts all traffic at once, then bakes with the guardrail alarms armed.
        ``canary``: the same config, shifted ``percent`` of capacity first
        (default the stack's share); SageMaker shifts the rest after the bake time
        or rolls back by itself when an alarm fires. ``shadow``: the production
        variant is kept as it is and the version becomes a shadow variant; its
        answers go to data capture only. No endpoint yet: CreateEndpoint (``all``).

        The signature is the local registry's (``models.registry.rollout``), so the CLI
        and the approval deployer call either backend alike. ``limits`` are the model
        server's own rollback limits; on SageMaker the guardrails are the stack's
        CloudWatch alarms (``Guardrails``), so ``limits`` is accepted and not used. A
        canary's share is of capacity (SageMaker routes per request), not of pumps.
        """
        del limits  # SageMaker's guardrails are its CloudWatch alarms (see above)
        actor = by or who()
        canary_percent = None if percent is None else round(percent)
        if mode not in DEPLOY_MODES:
            raise RegistryError(f"mode must be one of {', '.join(DEPLOY_MODES)}, got {mode!r}")
        if canary_percent is not None and mode != "canary":
            raise RegistryError(f"a percent is for mode='canary', not {mode!r}")
        if canary_percent is not None and not 1 <= canary_percent <= 99:
            raise RegistryError(f"a canary percent must be 1..99, got {percent}")
        pkg = self.latest_approved(group) if version is None else self.describe(group, version)
        if pkg.status != "Approved":
            raise RegistryError(
                f"{pkg.model_version} is {pkg.status}: only Approved packages can be deployed"
            )
        endpoint = endpoint or self.endpoint
        current = self.live_endpoint(endpoint)
        if current is None and mode != "all":
            raise RegistryError(
                f"endpoint {endpoint!r} does not exist: a {mode} deployment needs a production "
                "version to run beside (deploy with mode='all' first)"
            )
        model = self._create_model(group, pkg)
        count = self._instance_count(current)
        if mode == "shadow":
            assert current is not None
            live = self.sm.describe_endpoint_config(
                EndpointConfigName=current["EndpointConfigName"]
            )
            production = [_request_variant(v) for v in live["ProductionVariants"]]
            shadow = [self._variant(self.shadow_variant, model, count)]
            tags = _tag_dict(self.sm.list_tags(ResourceArn=live["EndpointConfigArn"]))
            serving = int(tags.get(f"{TAG}version", "0") or 0)
            extra = {"shadow-version": str(pkg.version)}
        else:
            production, shadow, serving, extra = [self._variant(self.variant, model, count)], [], (
                pkg.version
            ), {}
        config = self._create_config(
            endpoint, group, serving, mode, production, shadow, current,
            actor=actor, reason=reason, extra=extra,
        )
        pct = canary_percent if canary_percent is not None else self.guardrails.canary_percent
        self._switch(endpoint, config, current, "canary" if mode == "canary" else "all", pct)
        return Deployment(endpoint=endpoint, group=group, version=pkg.version,
                          deployed=config.rsplit("-", 1)[-1])

    def promote(
        self, group: str, endpoint: str | None = None, *, by: str | None = None, reason: str = ""
    ) -> Deployment:
        """Finish a rollout: a shadow version goes live behind the canary guardrails.

        A canary needs nothing: SageMaker shifts the rest of the traffic after the
        bake time by itself (this says so while it bakes, and returns what serves
        once the endpoint is InService again)."""
        endpoint, current, tags = self._serving(group, endpoint)
        if tags.get(f"{TAG}mode") == "shadow":
            return self.deploy(
                group, endpoint, int(tags[f"{TAG}shadow-version"]), mode="canary",
                by=by, reason=reason or "promote shadow",
            )
        if current.get("EndpointStatus") == "Updating":
            raise RegistryError(
                f"endpoint {endpoint!r} is still updating (canary baking): SageMaker shifts "
                "the remaining traffic after the bake time, or rolls back on an alarm"
            )
        return Deployment(endpoint=endpoint, group=group, version=int(tags[f"{TAG}version"]),
                          deployed=current["EndpointConfigName"].rsplit("-", 1)[-1])

    def compare(
        self, group: str, endpoint: str | None = None, *, since: datetime,
        until: datetime, capture_s3_uri: str | None = None,
    ) -> dict[str, Any]:
        """The shadow test's comparison, read back from data capture (see
        :mod:`models.registry.capture`): the production and shadow variants' captured
        results in [since, until), paired by report identity, compared like the local
        server's. The capture location is the endpoint's (DescribeEndpoint
        ``DataCaptureConfig``), else ``capture_s3_uri`` or the registry's."""
        from .capture import CaptureReader

        endpoint, current, tags = self._serving(group, endpoint)
        dest = (current.get("DataCaptureConfig") or {}).get("DestinationS3Uri") or \
            capture_s3_uri or self.capture_s3_uri
        if not dest:
            raise RegistryError(f"endpoint {endpoint!r} has no data capture configured, so a "
                                "shadow variant's answers were not recorded anywhere")
        out = CaptureReader(self.s3, dest).compare(endpoint, self.variant,
                                                   self.shadow_variant, since, until)
        shadow = tags.get(f"{TAG}shadow-version")
        out["running"] = tags.get(f"{TAG}mode") == "shadow"
        out["production"] = f"{group}/{tags.get(f'{TAG}version')}"
        out["candidate"] = f"{group}/{shadow}" if shadow else None
        return out

    def _serving(
        self, group: str, endpoint: str | None
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        """The endpoint (default ours), its DescribeEndpoint and its config's tags; an error
        when it does not exist or serves another group."""
        endpoint = endpoint or self.endpoint
        current = self.live_endpoint(endpoint)
        if current is None:
            raise RegistryError(f"endpoint {endpoint!r} does not exist")
        tags = self._tags(current)
        if tags.get(f"{TAG}group") != group:
            raise RegistryError(f"endpoint {endpoint!r} does not serve group {group!r}")
        return endpoint, current, tags

    def rollback(
        self, group: str, endpoint: str | None = None, *, by: str | None = None,
        reason: str = "", automatic: bool = False,
    ) -> Deployment:
        """Serve what served before the current config (a new config copying that one's
        variants and data capture, recorded as a ``rollback``), all traffic at once.

        ``automatic`` is the local server's flag; SageMaker rolls a canary back by
        itself on an alarm, so a call here is always a person's (or the deployer's)."""
        del automatic
        actor = by or who()
        endpoint, current, tags = self._serving(group, endpoint)
        previous = tags.get(f"{TAG}previous", "")
        if not previous:
            raise RegistryError(f"endpoint {endpoint!r} has no earlier configuration to go back to")
        before = self.sm.describe_endpoint_config(EndpointConfigName=previous)
        before_tags = _tag_dict(self.sm.list_tags(ResourceArn=before["EndpointConfigArn"]))
        version = int(before_tags.get(f"{TAG}version", "0") or 0)
        extra = {k[len(TAG):]: v for k, v in before_tags.items() if k == f"{TAG}shadow-version"}
        config = self._create_config(
            endpoint, group, version, "rollback",
            [_request_variant(v) for v in before["ProductionVariants"]],
            [_request_variant(v) for v in before.get("ShadowProductionVariants", [])],
            current, actor=actor, reason=reason or f"back to {previous}", extra=extra,
        )
        self._switch(endpoint, config, current, "rollback", 0)
        return Deployment(endpoint=endpoint, group=group, version=version,
                          deployed=config.rsplit("-", 1)[-1])

    def deployments(self, group: str, *, endpoint: str | None = None) -> list[DeploymentRecord]:
        """The deployment history of ``group`` on the endpoint, newest first.

        SageMaker keeps it: every endpoint config this registry creates carries the
        record in its tags (``pumpwatch:*``: group, version, mode, previous config,
        shadow version, actor, reason, time)."""
        endpoint = endpoint or self.endpoint
        out: list[DeploymentRecord] = []
        kwargs: dict[str, Any] = {
            "NameContains": group, "SortBy": "CreationTime", "SortOrder": "Descending",
        }
        while True:
            r = self.sm.list_endpoint_configs(**kwargs)
            for c in r.get("EndpointConfigs", []):
                tags = _tag_dict(self.sm.list_tags(ResourceArn=c["EndpointConfigArn"]))
                if tags.get(f"{TAG}group") != group or tags.get(f"{TAG}endpoint") != endpoint:
                    continue
                shadow = tags.get(f"{TAG}shadow-version")
                out.append(DeploymentRecord(
                    endpoint=endpoint, group=group, config=c["EndpointConfigName"],
                    version=int(tags.get(f"{TAG}version", "0") or 0),
                    mode=tags.get(f"{TAG}mode", ""),
                    previous_config=tags.get(f"{TAG}previous", ""),
                    shadow_version=int(shadow) if shadow else None,
                    actor=tags.get(f"{TAG}actor", ""), reason=tags.get(f"{TAG}reason", ""),
                    when=tags.get(f"{TAG}when", ""),
                ))
            token = r.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token

    def history(self, group: str, endpoint: str | None = None) -> list[HistoryEntry]:
        """``deployments`` as the local registry's history: oldest first, one entry per
        endpoint config, ``from_version`` the version the config before it served."""
        out: list[HistoryEntry] = []
        served: dict[str, int] = {}
        for r in reversed(self.deployments(group, endpoint=endpoint)):
            served[r.config] = r.version
            action = r.mode if r.mode in ("shadow", "canary", "rollback") else "deploy"
            to = r.shadow_version if r.mode == "shadow" else r.version
            out.append(HistoryEntry(
                at=r.when, by=r.actor, action=action, endpoint=r.endpoint, group=r.group,  # type: ignore[arg-type]
                from_version=served.get(r.previous_config), to_version=to, reason=r.reason,
            ))
        return out

    # --- deployment helpers ---------------------------------------------------------------
    def live_endpoint(self, endpoint: str) -> dict[str, Any] | None:
        """DescribeEndpoint's answer, or None when there is no such endpoint."""
        try:
            return dict(self.sm.describe_endpoint(EndpointName=endpoint))
        except self._client_error as exc:
            if exc.response["Error"]["Code"] != "ValidationException":
                raise
            return None

    def _tags(self, described_endpoint: Mapping[str, Any]) -> dict[str, str]:
        config = self.sm.describe_endpoint_config(
            EndpointConfigName=described_endpoint["EndpointConfigName"]
        )
        return _tag_dict(self.sm.list_tags(ResourceArn=config["EndpointConfigArn"]))

    def _instance_count(self, current: Mapping[str, Any] | None) -> int:
        """The live fleet size of the production variant (autoscaling's), else 1."""
        for v in (current or {}).get("ProductionVariants", []):
            if v.get("VariantName") == self.variant and v.get("CurrentInstanceCount"):
                return int(v["CurrentInstanceCount"])
        return 1

    def _create_model(self, group: str, pkg: ModelPackage) -> str:
        if not self.role_arn:
            raise RegistryError("deploying to SageMaker needs an execution role ARN (role_arn)")
        name = _resource_name(group, f"v{pkg.version}")
        self.sm.create_model(
            ModelName=name,
            ExecutionRoleArn=self.role_arn,
            Containers=[{
                "ModelPackageName": pkg.arn,
                "Environment": {"PUMPWATCH_MODEL_VERSION": pkg.model_version},
            }],
        )
        return name

    def _variant(self, name: str, model: str, count: int) -> dict[str, Any]:
        return {
            "VariantName": name,
            "ModelName": model,
            "InstanceType": self.instance_type,
            "InitialInstanceCount": count,
            "InitialVariantWeight": 1.0,
        }

    def _create_config(
        self,
        endpoint: str,
        group: str,
        version: int,
        mode: str,
        production: list[dict[str, Any]],
        shadow: list[dict[str, Any]],
        current: Mapping[str, Any] | None,
        *,
        actor: str,
        reason: str,
        extra: Mapping[str, str],
    ) -> str:
        name = _resource_name(group, mode if mode == "rollback" else f"v{version}")
        record = {
            "endpoint": endpoint, "group": group, "version": str(version), "mode": mode,
            "previous": (current or {}).get("EndpointConfigName", ""), "actor": actor,
            "reason": reason, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        kwargs: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": production,
            "Tags": [{"Key": f"{TAG}{k}", "Value": _tag_value(v)} for k, v in record.items()],
        }
        if shadow:
            kwargs["ShadowProductionVariants"] = shadow
        if self.capture_s3_uri:
            kwargs["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": self.capture_percent,
                "DestinationS3Uri": self.capture_s3_uri,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            }
            if self.kms_key:
                kwargs["DataCaptureConfig"]["KmsKeyId"] = self.kms_key
        if self.kms_key:
            kwargs["KmsKeyId"] = self.kms_key
        self.sm.create_endpoint_config(**kwargs)
        return name

    def _switch(
        self, endpoint: str, config: str, current: Mapping[str, Any] | None,
        traffic: Literal["all", "canary", "rollback"], canary_percent: int,
    ) -> None:
        if current is None:
            self.sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
            return
        self.sm.update_endpoint(
            EndpointName=endpoint, EndpointConfigName=config,
            DeploymentConfig=self.guardrails.deployment_config(traffic, canary_percent),
        )


DeployMode = Literal["all", "shadow", "canary"]
DEPLOY_MODES: tuple[str, ...] = ("all", "shadow", "canary")
TAG = "pumpwatch:"
_TAG_VALUE_BAD = re.compile(r"[^\w .:/=+\-@]")
_ACCOUNT_RE = re.compile(r"^\d{12}\Z")
#: what update_endpoint rejects in a variant copied from describe_endpoint_config
_REQUEST_VARIANT_KEYS = (
    "VariantName", "ModelName", "InitialInstanceCount", "InstanceType", "InitialVariantWeight",
    "AcceleratorType", "ServerlessConfig", "VolumeSizeInGB", "ModelDataDownloadTimeoutInSeconds",
    "ContainerStartupHealthCheckTimeoutInSeconds", "ManagedInstanceScaling", "RoutingConfig",
)


@dataclass(frozen=True, kw_only=True)
class Guardrails:
    """SageMaker's deployment guardrails for UpdateEndpoint (from the SageMaker stack's outputs).

    ``canary_percent`` of capacity first, ``bake_seconds`` watching ``alarms`` (any in ALARM
    rolls the update back, by SageMaker), then the rest; the old fleet is kept for
    ``termination_wait_seconds`` after the shift."""

    canary_percent: int = 10
    bake_seconds: int = 600
    alarms: tuple[str, ...] = ()
    termination_wait_seconds: int = 0

    def deployment_config(
        self, traffic: Literal["all", "canary", "rollback"], canary_percent: int
    ) -> dict[str, Any]:
        routing: dict[str, Any]
        if traffic == "canary":
            routing = {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": canary_percent},
                "WaitIntervalInSeconds": self.bake_seconds,
            }
        else:
            # all at once, then bake with the alarms armed; a rollback does not wait
            routing = {
                "Type": "ALL_AT_ONCE",
                "WaitIntervalInSeconds": 0 if traffic == "rollback" else self.bake_seconds,
            }
        config: dict[str, Any] = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": routing,
                "TerminationWaitInSeconds": self.termination_wait_seconds,
            }
        }
        if self.alarms and traffic != "rollback":
            config["AutoRollbackConfiguration"] = {
                "Alarms": [{"AlarmName": a} for a in self.alarms]
            }
        return config


@dataclass(frozen=True, kw_only=True)
class DeploymentRecord:
    """One entry of an endpoint's deployment history (an endpoint config's tags)."""

    endpoint: str
    group: str
    config: str
    version: int  # what the production variant serves
    mode: str  # all | canary | shadow | rollback
    previous_config: str
    shadow_version: int | None
    actor: str
    reason: str
    when: str

    @property
    def model_version(self) -> str:
        return f"{self.group}/{self.version}"


def group_policy(group_arn: str, accounts: list[str]) -> dict[str, Any]:
    """The model package group resource policy letting ``accounts`` read the group."""
    bad = [a for a in accounts if not _ACCOUNT_RE.match(a)]
    if bad or not accounts:
        raise RegistryError(f"accounts must be 12-digit AWS account ids, got {bad or accounts}")
    packages = group_arn.replace(":model-package-group/", ":model-package/") + "/*"
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadModelPackagesAcrossAccounts",
            "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in sorted(set(accounts))]},
            "Action": [
                "sagemaker:DescribeModelPackageGroup",
                "sagemaker:DescribeModelPackage",
                "sagemaker:ListModelPackages",
            ],
            "Resource": [group_arn, packages],
        }],
    }


def _resource_name(group: str, what: str) -> str:
    """``{group}-{what}-{UTC stamp to the millisecond}``, at most 63 characters."""
    now = time.time()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    tail = f"-{what}-{stamp}"
    return group[: 63 - len(tail)] + tail


def _tag_value(value: str) -> str:
    return _TAG_VALUE_BAD.sub(" ", value)[:256]


def _tag_dict(response: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in response.get("Tags", [])}


def _request_variant(described: Mapping[str, Any]) -> dict[str, Any]:
    return {k: described[k] for k in _REQUEST_VARIANT_KEYS if k in described}
