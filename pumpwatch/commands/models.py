"""``pumpwatch models``: the model registry (local directory, or SageMaker) and bundles."""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ._roles import Role

if TYPE_CHECKING:
    from models.registry.local import ModelPackage, ModelRegistry

# A local registry needs only the core; --sagemaker's boto3 is reported when it is imported.
ROLE = Role("models")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from models.registry.local import APPROVAL_STATUSES

    p = sub.add_parser("models", help="register, approve and deploy model bundles")
    p.add_argument(
        "--registry", type=Path, default=None,
        help="local registry root (default $PUMPWATCH_REGISTRY or state/registry)",
    )
    p.add_argument("--sagemaker", action="store_true", help="use the SageMaker Model Registry")
    p.add_argument("--s3-prefix", help="SageMaker: s3://bucket/prefix for artifacts")
    p.add_argument("--image", help="SageMaker: serving image URI (ECR)")
    p.add_argument("--role", help="SageMaker: execution role ARN (deploy)")
    p.add_argument("--region", help="SageMaker: AWS region")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    ms = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    r = ms.add_parser("register", help="register a bundle (dir or model.tar.gz) as a new version")
    r.add_argument("group")
    r.add_argument("artifact", type=Path)
    r.add_argument("--metrics", type=Path, help="JSON file of {name: number} (e.g. metrics.json)")
    r.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE")
    r.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="customer metadata property")
    r.add_argument("--description", default="")
    r.set_defaults(func=_register)

    ls = ms.add_parser("list", help="list groups, or one group's versions (newest first)")
    ls.add_argument("group", nargs="?")
    ls.add_argument("--status", choices=APPROVAL_STATUSES)
    ls.set_defaults(func=_list)

    for name, fn, hlp in (
        ("describe", _describe, "show one version"),
        ("approve", _approve, "set ModelApprovalStatus=Approved"),
        ("reject", _reject, "set ModelApprovalStatus=Rejected"),
    ):
        c = ms.add_parser(name, help=hlp)
        c.add_argument("group")
        c.add_argument("version", type=int)
        if name != "describe":
            c.add_argument("--description", default="", help="approval description")
        c.set_defaults(func=fn)

    d = ms.add_parser("deploy", help="point an endpoint at the latest approved version")
    d.add_argument("group")
    d.add_argument("--version", type=int, default=None, help="a specific approved version")
    d.add_argument("--endpoint", default="pumpwatch")
    d.set_defaults(func=_deploy)

    sh = ms.add_parser(
        "share", help="let other AWS accounts read a group (SageMaker only)",
        description="Put the model package group's resource policy: the named accounts may "
        "describe and list its packages (cross-account registry). Replaces the policy.",
    )
    sh.add_argument("group")
    sh.add_argument("--account", action="append", required=True, metavar="ID",
                    help="12-digit account id (repeat for several)")
    sh.set_defaults(func=_share)

    b = ms.add_parser("bundle", help="build a bundle directory (classifier + per-pump baselines)")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--model-version", required=True)
    b.add_argument("--classifier-from", type=Path, default=None, metavar="BUNDLE",
                   help="take the classifier of this bundle (e.g. pumpwatch train's "
                   "model.tar.gz); default: the physics rules")
    b.add_argument("--baselines", type=Path, nargs="*", default=[], metavar="NPZ",
                   help="baselines.npz files (pumpwatch baseline fit) to merge in")
    b.add_argument("--baselines-from", type=Path, nargs="*", default=[],
                   help="InvocationRequest files (.msgpack or .json) of healthy reports")
    b.add_argument("--fleet", action="store_true", help="also fit a fleet baseline ('*')")
    b.add_argument("--min-reports", type=int, default=10)
    b.add_argument("--description", default="")
    b.set_defaults(func=_bundle)


def _registry(args: argparse.Namespace) -> ModelRegistry:
    from models.registry.local import LocalRegistry, default_registry_path
    from models.serving.errors import RegistryError

    if not args.sagemaker:
        return LocalRegistry(args.registry or default_registry_path())
    from models.registry.sagemaker import SageMakerRegistry

    if not args.s3_prefix or not args.image:
        raise RegistryError("--sagemaker needs --s3-prefix and --image")
    # cast: the interface's deploy is being widened (shadow/canary) on another branch
    return cast("ModelRegistry", SageMakerRegistry.connect(
        region=args.region, s3_prefix=args.s3_prefix, image_uri=args.image, role_arn=args.role,
    ))


def _show(args: argparse.Namespace, pkg: ModelPackage) -> None:
    if args.json:
        print(json.dumps(pkg.to_dict()))
        return
    print(f"{pkg.model_version}  {pkg.status}")
    print(f"  artifact  {pkg.artifact_uri}")
    print(f"  sha256    {pkg.sha256}")
    if pkg.description:
        print(f"  about     {pkg.description}")
    for k, m in sorted(pkg.metrics.items()):
        print(f"  metric    {k} = {m:g}")
    for k, v in sorted(pkg.customer_metadata.items()):
        print(f"  metadata  {k} = {v}")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from models.serving.errors import RegistryError

    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise RegistryError(f"{what} must be NAME=VALUE, got {item!r}")
        out[k] = v
    return out


def _guard(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from models.serving.errors import BundleError, RegistryError, RequestError

        try:
            return int(fn(args))
        except (RegistryError, BundleError, RequestError, OSError, ValueError) as exc:
            print(f"pumpwatch models: {exc}")
            return 1
    return wrapped


@_guard
def _register(args: argparse.Namespace) -> int:
    metrics: dict[str, float] = {}
    if args.metrics:
        metrics.update({str(k): float(v) for k, v in json.loads(args.metrics.read_text()).items()
                        if isinstance(v, int | float)})
    for name, value in _pairs(args.metric, "--metric").items():
        metrics[name] = float(value)
    pkg = _registry(args).register(
        args.group, args.artifact, metrics=metrics, customer_metadata=_pairs(args.meta, "--meta"),
        description=args.description,
    )
    _show(args, pkg)
    return 0


@_guard
def _list(args: argparse.Namespace) -> int:
    from models.registry.local import LocalRegistry
    from models.serving.errors import RegistryError

    reg = _registry(args)
    if args.group is None:
        if not isinstance(reg, LocalRegistry):
            raise RegistryError("name a group to list its versions")
        groups = reg.list_groups()
        deps = {d.endpoint: d.model_version for d in reg.deployments()}
        if args.json:
            print(json.dumps({"groups": groups, "deployments": deps}))
        else:
            for g in groups:
                print(g)
            for e, v in deps.items():
                print(f"endpoint {e} -> {v}")
        return 0
    pkgs = reg.list_packages(args.group, args.status)
    if args.json:
        print(json.dumps([p.to_dict() for p in pkgs]))
    else:
        for p in pkgs:
            print(f"{p.model_version:30s} {p.status:22s} {p.created}  {p.description}")
    return 0


@_guard
def _describe(args: argparse.Namespace) -> int:
    _show(args, _registry(args).describe(args.group, args.version))
    return 0


@_guard
def _approve(args: argparse.Namespace) -> int:
    _show(args, _registry(args).set_status(args.group, args.version, "Approved",
                                           args.description))
    return 0


@_guard
def _reject(args: argparse.Namespace) -> int:
    _show(args, _registry(args).set_status(args.group, args.version, "Rejected",
                                           args.description))
    return 0


@_guard
def _deploy(args: argparse.Namespace) -> int:
    dep = _registry(args).deploy(args.group, version=args.version, endpoint=args.endpoint)
    if args.json:
        print(json.dumps({"endpoint": dep.endpoint, "model_version": dep.model_version}))
    else:
        print(f"endpoint {dep.endpoint} -> {dep.model_version} (running servers hot-reload)")
    return 0


@_guard
def _share(args: argparse.Namespace) -> int:
    from models.registry.sagemaker import SageMakerRegistry
    from models.serving.errors import RegistryError

    reg: object = _registry(args)
    if not isinstance(reg, SageMakerRegistry):
        raise RegistryError("share is for the SageMaker registry: add --sagemaker")
    policy = reg.share(args.group, list(args.account))
    if args.json:
        print(json.dumps(policy))
    else:
        print(f"group {args.group}: readable by {', '.join(sorted(set(args.account)))}")
    return 0


def read_manifest_metrics(path: Path) -> dict[str, float]:
    """The metrics a bundle (dir or model.tar.gz) was registered with, if it says."""
    from models.serving.bundle import read_manifest

    if path.is_dir():
        return dict(read_manifest(path).get("metrics") or {})
    with tarfile.open(path, "r:*") as tar:
        member = tar.extractfile("bundle.json")
        if member is None:
            return {}
        return dict(json.loads(member.read()).get("metrics") or {})


@_guard
def _bundle(args: argparse.Namespace) -> int:
    from models.serving.baseline import Baselines
    from models.serving.bundle import load_bundle, write_bundle
    from models.serving.handler import JSON, MSGPACK, decode_request
    from models.serving.statistics import carry_statistics
    from models.training.anomaly import BaselineConfig, fit_pump_baselines

    reports = []
    for path in args.baselines_from:
        ctype = JSON if path.suffix == ".json" else MSGPACK
        reports.extend(decode_request(path.read_bytes(), ctype))
    baselines = None
    if reports:
        baselines = fit_pump_baselines(
            reports, BaselineConfig(min_reports=args.min_reports), fleet=args.fleet
        )
    for path in args.baselines:
        more = Baselines.load(path)
        baselines = more if baselines is None else baselines.merged(more)
    classifier = None
    classes = None
    metrics: dict[str, float] = {}
    if args.classifier_from is not None:
        source = load_bundle(args.classifier_from)
        classifier, classes = source.classifier, source.class_overrides
        metrics = read_manifest_metrics(args.classifier_from)
    out = write_bundle(
        args.out, model_version=args.model_version, classifier=classifier, baselines=baselines,
        description=args.description, metrics=metrics, classes=classes,
    )
    if args.classifier_from is not None:
        # The classifier's training statistics travel with it (OOD gate, drift baseline).
        carry_statistics(args.classifier_from, out)
    pumps = ", ".join(baselines.pumps) if baselines is not None else "none"
    print(f"bundle {args.model_version} in {out} (baselines: {pumps})")
    return 0
