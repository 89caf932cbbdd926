"""``pumpwatch monitor run|status``: drift of deployed model versions (docs/monitoring.md).

Wiring only: the computation is :mod:`cloud.monitor`; this command reads the training
statistics of a version through :mod:`models.registry` and passes them in, and writes
the drift status back onto the registry version (customer metadata), so cloud and
models never import each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._roles import Role
from ._storeargs import add_store_args, iso_ns, ns_iso, store_url

if TYPE_CHECKING:
    from cloud.monitor.run import MonitorReport
    from models.registry.local import LocalRegistry

ROLE = Role("cloud")
DAY_NS = 86_400 * 1_000_000_000
STATUS_KEYS = ("monitor_status", "monitor_checked", "monitor_unexplained", "monitor_report")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("monitor", help="data and prediction drift of deployed model versions")
    p.add_argument("--registry", type=Path, default=None,
                   help="local registry root (default $PUMPWATCH_REGISTRY or state/registry)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    ms = p.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    r = ms.add_parser("run", help="test a window against the references; write the reports")
    add_store_args(r)
    r.add_argument("--model", metavar="GROUP/VERSION",
                   help="one model version (default: every version with data in the window)")
    r.add_argument("--since", type=iso_ns, help="window start (default: --until - 24 h)")
    r.add_argument("--until", type=iso_ns, help="window end (default: now)")
    r.add_argument("--reference-since", type=iso_ns,
                   help="live reference window start (default: the version's first day)")
    r.add_argument("--reference-until", type=iso_ns, help="live reference window end")
    r.add_argument("--out", type=Path, default=Path("monitoring"),
                   help="report directory (one folder per version; default ./monitoring)")
    r.add_argument("--thresholds", type=Path, metavar="JSON",
                   help="thresholds (see docs/monitoring.md), e.g. {\"js\": 0.15}")
    r.add_argument("--cloudwatch", metavar="NAMESPACE", nargs="?", const="pumpwatch/ModelMonitor",
                   help="also PutMetricData feature_baseline_drift_{feature} (boto3's "
                   "credentials and region; $AWS_ENDPOINT_URL_CLOUDWATCH for a local one)")
    r.add_argument("--no-registry", action="store_true",
                   help="neither read training statistics nor record the status")
    r.set_defaults(func=_run)
    s = ms.add_parser("status", help="each registered version's drift status, its usage "
                      "(last 24 h) and label-based quality (closed alarms in the store)")
    add_store_args(s)
    s.set_defaults(func=_status)


def _registry(args: argparse.Namespace) -> LocalRegistry:
    from models.registry.local import LocalRegistry, default_registry_path

    return LocalRegistry(args.registry or default_registry_path())


def _split(model_version: str) -> tuple[str, int] | None:
    group, sep, v = model_version.rpartition("/")
    return (group, int(v)) if sep and v.isdigit() else None


def _statistics(reg: LocalRegistry | None, model_version: str) -> dict[str, Any] | None:
    from models.serving.errors import RegistryError

    key = _split(model_version)
    if reg is None or key is None:
        return None
    try:
        return reg.training_statistics(reg.describe(*key))
    except RegistryError:
        return None


async def _evaluate(
    args: argparse.Namespace, reg: LocalRegistry | None
) -> list[tuple[MonitorReport, dict[str, Path]]]:
    """Each version's run; its reports written and its summary recorded in the store."""
    import msgspec

    from cloud.monitor.drift import Thresholds
    from cloud.monitor.report import write_reports
    from cloud.monitor.run import model_versions, monitor, summary
    from cloud.store import make_store

    until = args.until if args.until is not None else time.time_ns()
    since = args.since if args.since is not None else until - DAY_NS
    th = Thresholds()
    if args.thresholds:
        th = msgspec.json.decode(args.thresholds.read_bytes(), type=Thresholds)
    reference = None
    if args.reference_since is not None or args.reference_until is not None:
        if args.reference_since is None or args.reference_until is None:
            raise ValueError("--reference-since and --reference-until go together")
        reference = (args.reference_since, args.reference_until)
    store = make_store(store_url(args))
    await store.open()
    try:
        versions = [args.model] if args.model else await model_versions(
            store, since_ns=since, until_ns=until)
        out = []
        for v in versions:
            rep = await monitor(store, v, since_ns=since, until_ns=until, reference=reference,
                                statistics=_statistics(reg, v), thresholds=th)
            paths = write_reports(rep, args.out / v.replace("/", "_"))
            await store.record_monitor_run(summary(rep, checked_ns=time.time_ns(),
                                                   report_path=str(paths["html"].resolve())))
            out.append((rep, paths))
        return out
    finally:
        await store.close()


def _run(args: argparse.Namespace) -> int:
    from cloud.store import StoreError
    from models.serving.errors import RegistryError

    reg = None if args.no_registry else _registry(args)
    try:
        reports = asyncio.run(_evaluate(args, reg))
    except (StoreError, ValueError, OSError) as exc:
        print(f"pumpwatch monitor: {exc}")
        return 2
    if args.cloudwatch:
        import boto3

        from cloud.monitor.cloudwatch import publish

        cw = boto3.client("cloudwatch")
        for rep, _paths in reports:
            publish(cw, rep, timestamp_s=time.time(), namespace=args.cloudwatch)
    out = []
    for rep, paths in reports:
        key = _split(rep.model_version)
        recorded = False
        if reg is not None and key is not None:
            try:
                reg.set_metadata(*key, {
                    "monitor_status": rep.status, "monitor_checked": ns_iso(time.time_ns()),
                    "monitor_unexplained": ",".join(rep.unexplained)[:200],
                    "monitor_report": str(paths["html"].resolve()),
                })
                recorded = True
            except RegistryError:
                pass
        out.append({"model_version": rep.model_version, "status": rep.status,
                    "unexplained": rep.unexplained, "reports": rep.usage.get("reports", 0),
                    "recorded": recorded, **{k: str(v) for k, v in paths.items()}})
    if args.json:
        print(json.dumps({"runs": out}))
    else:
        if not out:
            print("no model version has monitoring histograms in the window")
        for o in out:
            names = ", ".join(o["unexplained"]) or "-"
            print(f"{o['model_version']:30s} {o['status']:18s} {o['reports']:8d} reports  "
                  f"unexplained: {names}  ({o['html']})")
    return 0


def _status(args: argparse.Namespace) -> int:
    from models.serving.errors import RegistryError

    reg = _registry(args)
    try:
        deployed = {d.model_version: d.endpoint for d in reg.deployments()}
        rows: list[dict[str, Any]] = []
        for g in reg.list_groups():
            for p in reg.list_packages(g):
                m = p.customer_metadata
                if p.model_version in deployed or "monitor_status" in m:
                    rows.append({"model_version": p.model_version,
                                 "endpoint": deployed.get(p.model_version, ""),
                                 "approval": p.status,
                                 **{k: m.get(k, "") for k in STATUS_KEYS}})
    except RegistryError as exc:
        print(f"pumpwatch monitor: {exc}")
        return 1
    from cloud.monitor.usage import PRE_MODEL

    quality, usage = _from_store(args)
    listed = {r["model_version"] for r in rows}
    for r in rows:
        r["quality"] = quality.get(r["model_version"])
        r["usage"] = usage.get(r["model_version"])
    extra = {v: q for v, q in quality.items() if v not in listed}
    extra_usage = {v: u for v, u in usage.items() if v not in listed}
    if args.json:
        print(json.dumps({"versions": rows, "quality_unregistered": extra,
                          "usage_unregistered": extra_usage}))
        return 0
    for r in rows:
        print(f"{r['model_version']:30s} {r['endpoint'] or '-':12s} "
              f"{r['monitor_status'] or 'never run':18s} {r['monitor_checked'] or '':26s} "
              f"{r['monitor_unexplained']}")
        if r["usage"] is not None:
            print("    " + _usage_line(r["usage"]))
        if r["quality"] is not None:
            print("    " + _quality_line(r["quality"]))
    for v in sorted(extra.keys() | extra_usage.keys()):
        if v == PRE_MODEL:  # cloud.monitor.usage: rejected before any model saw them
            print(f"{v:30s} (dead letters before the model: no version)")
        else:
            print(f"{v or '(no version yet)':30s} (not in the registry)")
        if v in extra_usage:
            print("    " + _usage_line(extra_usage[v]))
        if v in extra:
            print("    " + _quality_line(extra[v]))
    if not rows and not extra and not extra_usage:
        print("no deployed or monitored model version")
    return 0


Versions = dict[str, dict[str, Any]]


def _from_store(args: argparse.Namespace) -> tuple[Versions, Versions]:
    """Label-based quality and usage (last 24 h) per version from the store; empty (and a
    note) if it is unreadable."""
    import sys

    from cloud.monitor.quality import store_quality
    from cloud.monitor.usage import usage_json
    from cloud.store import StoreError, make_store

    async def read() -> tuple[Versions, Versions]:
        store = make_store(store_url(args), readonly=True) if "://" not in store_url(args) \
            or store_url(args).startswith("sqlite:") else make_store(store_url(args))
        await store.open()
        try:
            return await store_quality(store), (await usage_json(store))["versions"]
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except (StoreError, OSError) as exc:
        print(f"pumpwatch monitor: no usage or label-based quality (store: {exc})",
              file=sys.stderr)
        return {}, {}


def _usage_line(u: dict[str, Any]) -> str:
    lat = u["latency_ms"]
    q = "/".join("-" if lat[k] is None else f"{lat[k]:.1f}" for k in ("p50", "p95", "p99"))
    e = u["errors"]
    return (f"usage (24 h): {u['invocations']} calls, {u['reports']} reports, "
            f"{u['errors_total']} errors ({e.get('unavailable', 0)} unavailable, "
            f"{e.get('rejected', 0)} rejected), {u['dead_letters']} dead letters, latency "
            f"p50/p95/p99 {q} ms; {len(u['targets'])} bundles, {u['pumps_total']} pumps")


def _quality_line(q: dict[str, Any]) -> str:
    p = "-" if q["precision"] is None else f"{q['precision']:.2f}"
    t = q["time_to_detection_s"]
    ttd = "-" if t["median"] is None else f"{t['median']:.0f} s (n={t['n']})"
    return (f"alarms: {q['open']} open, {q['acknowledged']} acknowledged, {q['closed']} "
            f"closed; precision {p}; time to detection {ttd}; confusion {q['confusion']}")
