"""``pumpwatch models``: the model registry (local directory, or SageMaker) and bundles."""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._roles import Role

if TYPE_CHECKING:
    from models.registry.local import Deployment, ModelPackage, ModelRegistry
    from models.registry.rollout import RolloutRegistry

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

    d = ms.add_parser("deploy", help="point an endpoint at the latest approved version, or "
                      "try it beside production (--shadow, --canary PERCENT)")
    d.add_argument("group")
    d.add_argument("--version", type=int, default=None, help="a specific approved version")
    d.add_argument("--endpoint", default="pumpwatch")
    how = d.add_mutually_exclusive_group()
    how.add_argument("--shadow", action="store_true",
                     help="score every batch with it too, return production's results, compare")
    how.add_argument("--canary", type=float, default=None, metavar="PERCENT",
                     help="serve this share of the pumps (stable by pump id) with it")
    d.add_argument("--max-error-rate", type=float, default=0.05, metavar="SHARE",
                   help="roll back automatically above this share of failed scoring calls "
                   "(default 0.05; 1 disables)")
    d.add_argument("--max-p95-latency-ms", type=float, default=None, metavar="MS",
                   help="roll back automatically above this p95 scoring time per batch")
    d.add_argument("--max-ood-share", type=float, default=None, metavar="SHARE",
                   help="roll back automatically when more of its results than this are out "
                   "of distribution (its drift status)")
    d.add_argument("--min-reports", type=int, default=20,
                   help="judge the limits only after the candidate scored this many reports")
    d.add_argument("--reason", default="", help="why (kept in the deployment history)")
    d.set_defaults(func=_deploy)

    for name, fn, hlp in (
        ("promote", _promote, "make the endpoint's candidate production"),
        ("rollback", _rollback, "drop the candidate (none: back to the previous production)"),
    ):
        c = ms.add_parser(name, help=hlp)
        c.add_argument("group")
        c.add_argument("--endpoint", default="pumpwatch")
        c.add_argument("--reason", default="", help="why (kept in the deployment history)")
        c.set_defaults(func=fn)

    h = ms.add_parser("history", help="the group's deployment history (who, when, from, to, why)")
    h.add_argument("group")
    h.add_argument("--endpoint", default=None)
    h.set_defaults(func=_history)

    cmp_ = ms.add_parser(
        "compare", help="a shadow's comparison with production: from the model server, the "
        "results store (--store) or SageMaker data capture (--sagemaker)")
    cmp_.add_argument("group")
    cmp_.add_argument("--url", default=None,
                      help="model server URL (default $PUMPWATCH_MODEL_SERVER or "
                      "http://127.0.0.1:8080)")
    cmp_.add_argument("--store", default=None, metavar="URL",
                      help="compute it from the shadow results the consumer stored "
                      "(sqlite:///path or postgresql://...) instead of asking the server")
    cmp_.add_argument("--version", type=int, default=None,
                      help="--store: this shadow version (default: the newest stored)")
    cmp_.add_argument("--endpoint", default=None, help="--sagemaker: the endpoint")
    cmp_.add_argument("--hours", type=float, default=24.0,
                      help="--store / --sagemaker: the last HOURS of shadow results (default 24)")
    cmp_.add_argument("--capture", default=None, metavar="S3URI",
                      help="--sagemaker: data capture location (default: the endpoint's)")
    cmp_.set_defaults(func=_compare)

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
    return SageMakerRegistry.connect(
        region=args.region, s3_prefix=args.s3_prefix, image_uri=args.image, role_arn=args.role,
    )


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
        all_deps = reg.deployments()
        deps = {d.endpoint: d.model_version for d in all_deps}
        if args.json:
            print(json.dumps({"groups": groups, "deployments": deps}))
        else:
            for g in groups:
                print(g)
            for d in all_deps:
                _show_deployment(args, d, "deployed")
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


def _rollout_registry(args: argparse.Namespace) -> RolloutRegistry:
    from models.serving.errors import RegistryError

    reg = _registry(args)
    if not all(hasattr(reg, m) for m in ("promote", "rollback", "history")):
        raise RegistryError(f"the {type(reg).__name__} backend has no shadow/canary rollout yet")
    return reg  # type: ignore[return-value]


def _show_deployment(args: argparse.Namespace, dep: Deployment, what: str) -> None:
    if args.json:
        print(json.dumps(dep.to_dict()))
        return
    line = f"endpoint {dep.endpoint} -> {dep.model_version}"
    c = dep.candidate
    if c is not None:
        share = f"canary {c.percent:g} % of pumps" if c.mode == "canary" else "shadow"
        line += f", candidate {dep.candidate_version} ({share})"
    print(f"{line} ({what})")


@_guard
def _deploy(args: argparse.Namespace) -> int:
    from models.registry.rollout import RolloutLimits

    if not args.shadow and args.canary is None:
        dep = _registry(args).deploy(args.group, args.endpoint, version=args.version)
        _show_deployment(args, dep, "running servers hot-reload")
        return 0
    limits = RolloutLimits(
        max_error_rate=args.max_error_rate, max_p95_latency_ms=args.max_p95_latency_ms,
        max_ood_share=args.max_ood_share, min_reports=args.min_reports,
    )
    dep = _rollout_registry(args).deploy(
        args.group, args.endpoint, version=args.version, mode="shadow" if args.shadow else "canary",
        percent=args.canary, limits=limits, reason=args.reason,
    )
    _show_deployment(args, dep, "running servers load it beside production")
    return 0


@_guard
def _promote(args: argparse.Namespace) -> int:
    dep = _rollout_registry(args).promote(args.group, args.endpoint, reason=args.reason)
    _show_deployment(args, dep, "promoted")
    return 0


@_guard
def _rollback(args: argparse.Namespace) -> int:
    dep = _rollout_registry(args).rollback(args.group, args.endpoint, reason=args.reason)
    _show_deployment(args, dep, "rolled back")
    return 0


@_guard
def _history(args: argparse.Namespace) -> int:
    entries = _rollout_registry(args).history(args.group, args.endpoint)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries]))
        return 0
    for e in entries:
        share = f" {e.percent:g}%" if e.percent is not None else ""
        print(f"{e.at}  {e.endpoint}  {e.action}{share}  {e.from_version} -> {e.to_version}  "
              f"by {e.by}" + (f": {e.reason}" if e.reason else ""))
    return 0


@_guard
def _compare(args: argparse.Namespace) -> int:
    import os
    import urllib.error
    import urllib.request

    from models.serving.errors import RegistryError

    if args.store:
        return _compare_stored(args)
    if args.sagemaker:
        return _compare_capture(args)

    url = (args.url or os.environ.get("PUMPWATCH_MODEL_SERVER") or "http://127.0.0.1:8080")
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/rollout", timeout=10) as r:  # noqa: S310
            data = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the rollout from the model server at {url}: "
                            f"{exc}") from None
    ro = data.get("rollout") or data.get("last")
    if ro is not None and not str(ro.get("candidate", "")).startswith(args.group + "/"):
        ro = None
    if args.json:
        print(json.dumps({**data, "shown": ro}))
        return 0
    if ro is None:
        print(f"no rollout of group {args.group!r} on the server at {url} "
              f"(production: {data.get('production')})")
        return 1
    _print_comparison(ro)
    for ev in data.get("events", []):
        print(f"event {ev['event']} {ev['at']}: {ev['candidate']}: {ev['reason']}")
    return 0


def _compare_stored(args: argparse.Namespace) -> int:
    """The comparison from the store's shadow_results joined with production's results."""
    import asyncio
    import time

    from cloud.store import make_store
    from models.serving.rollout import Comparison

    async def read() -> list[Any]:
        store = make_store(args.store)
        await store.open()
        try:
            since = time.time_ns() - int(args.hours * 3600e9)
            version = None if args.version is None else f"{args.group}/{args.version}"
            return await store.shadow_pairs(shadow_version=version,
                                            version_prefix=f"{args.group}/", since_ns=since)
        finally:
            await store.close()

    pairs = asyncio.run(read())
    if not pairs:
        if args.json:
            print(json.dumps({"source": "store", "shown": None}))
        else:
            print(f"no stored shadow results of group {args.group!r} in the last "
                  f"{args.hours:g} h")
        return 1
    newest = max(pairs, key=lambda p: p.stored_ns).shadow_version
    cand = newest if args.version is None else f"{args.group}/{args.version}"
    cmp_ = Comparison()
    production: dict[str, int] = {}
    for p in pairs:
        if p.shadow_version != cand:
            continue
        production[p.production_version] = production.get(p.production_version, 0) + 1
        cmp_.add(p.pump_class, p.production_condition, p.production_score, p.shadow_condition,
                 p.shadow_score)
    shown = {"mode": "shadow", "candidate": cand, "production": sorted(production),
             "comparison": cmp_.to_dict(), "hours": args.hours}
    if args.json:
        print(json.dumps({"source": "store", "shown": shown}))
        return 0
    print(f"shadow: {cand} beside {', '.join(sorted(production))} (stored results, last "
          f"{args.hours:g} h)")
    _print_pairs(shown["comparison"])
    return 0


def _compare_capture(args: argparse.Namespace) -> int:
    """SageMaker: the shadow variant's answers, read back from data capture."""
    from datetime import UTC, datetime, timedelta

    from models.registry.sagemaker import SageMakerRegistry
    from models.serving.errors import RegistryError

    reg: object = _registry(args)
    if not isinstance(reg, SageMakerRegistry):
        raise RegistryError("data capture is SageMaker's: add --sagemaker")
    until = datetime.now(UTC)
    out = reg.compare(args.group, args.endpoint, since=until - timedelta(hours=args.hours),
                      until=until + timedelta(minutes=1), capture_s3_uri=args.capture)
    if args.json:
        print(json.dumps({"source": out["source"], "shown": out}))
        return 0 if out["paired"] else 1
    state = "running" if out["running"] else "not running now"
    print(f"shadow: {out['candidate']} beside {out['production']} ({state}; data capture "
          f"{out['capture']}, {out['records']['production']} + {out['records']['shadow']} "
          f"records, {out['shadow_unpaired']} shadow results unpaired, "
          f"{out['undecodable']} lines undecodable)")
    _print_pairs(out["comparison"])
    return 0 if out["paired"] else 1


def _print_pairs(comparison: dict[str, Any]) -> None:
    for cls, c in comparison.items():
        if not c.get("reports"):
            continue
        name = "overall" if cls == "*" else f"class {cls}"
        shift = ", ".join(f"{k} {v:+.3f}" for k, v in c["label_shift"].items() if v)
        print(f"  {name:24s} agreement {c['agreement']:.3f} over {c['reports']} reports; "
              f"score shift {c['mean_anomaly_score_shift']:+.4f}; label shift: {shift or 'none'}")


def _print_comparison(ro: dict[str, Any]) -> None:
    state = f"ended: {ro['ended']}" if ro.get("ended") else "running"
    share = f" {ro['percent']:g} % of pumps" if ro.get("percent") else ""
    print(f"{ro['mode']}{share}: {ro['candidate']} beside {ro['production']} ({state})")
    for v, st in ro["versions"].items():
        print(f"  {v:24s} reports {st['reports']:6d}  errors {st['errors']}/{st['calls']}  "
              f"p50 {st['latency_p50_ms']} ms  p95 {st['latency_p95_ms']} ms  "
              f"ood {st['ood_share']:.3f}  mean score {st['mean_anomaly_score']}")
    _print_pairs(ro.get("comparison") or {})


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
