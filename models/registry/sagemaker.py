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
- ``deploy`` -> CreateModel (from the approved package) + CreateEndpointConfig,
  then UpdateEndpoint (SageMaker's blue/green swap: no request is lost) or
  CreateEndpoint when the endpoint does not exist yet.

Results name ``{group}/{version}`` as their model version, as locally: set
``PUMPWATCH_MODEL_VERSION`` on the container (CreateModel ``Environment``).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.serving.bundle import bundle_bytes, read_manifest
from models.serving.errors import RegistryError
from models.serving.handler import JSON, MSGPACK

from .local import ApprovalStatus, Deployment, ModelPackage, check_group_name

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
    ) -> None:
        self._client_error = _sdk("botocore.exceptions").ClientError
        self.sm = sagemaker
        self.s3 = s3
        self.bucket, self.prefix = _split_s3(s3_prefix)
        self.image_uri = image_uri
        self.role_arn = role_arn
        self.instance_type = instance_type
        self.metrics_s3_uri = metrics_s3_uri
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
    ) -> ModelPackage:
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

    # --- deployments ----------------------------------------------------------------
    def deploy(
        self, group: str, endpoint: str = "pumpwatch", version: int | None = None
    ) -> Deployment:
        pkg = self.latest_approved(group) if version is None else self.describe(group, version)
        if pkg.status != "Approved":
            raise RegistryError(
                f"{pkg.model_version} is {pkg.status}: only Approved packages can be deployed"
            )
        if not self.role_arn:
            raise RegistryError("deploying to SageMaker needs an execution role ARN (role_arn)")
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        name = f"{group}-{pkg.version}-{stamp}"[:63]
        self.sm.create_model(
            ModelName=name,
            ExecutionRoleArn=self.role_arn,
            Containers=[{
                "ModelPackageName": pkg.arn,
                "Environment": {"PUMPWATCH_MODEL_VERSION": pkg.model_version},
            }],
        )
        self.sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[{
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": self.instance_type,
                "InitialInstanceCount": 1,
            }],
        )
        try:
            self.sm.describe_endpoint(EndpointName=endpoint)
        except self._client_error as exc:
            if exc.response["Error"]["Code"] != "ValidationException":
                raise
            self.sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=name)
        else:
            self.sm.update_endpoint(EndpointName=endpoint, EndpointConfigName=name)
        return Deployment(endpoint=endpoint, group=group, version=pkg.version, deployed=stamp)
