"""The stack's models: train once, register, approve, deploy; later add fitted baselines.

Wiring only: training is ``pumpwatch train`` (run as a subprocess, its
progress bar on this terminal), baselines are :func:`models.training.anomaly.fit_pump_baselines`
over the consumer's report archive, bundles and the registry are
:mod:`models.serving`'s. The model server (``pumpwatch endpoint --registry``)
hot-reloads whatever is deployed to the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .plan import ENDPOINT_NAME, MODEL_GROUP, StackOptions
from .procs import StackError, child_env, pumpwatch_argv


def trained_dir(opts: StackOptions) -> Path:
    return opts.path("models", "trained")


def ensure_trained(opts: StackOptions, *, quiet: bool = False) -> Path:
    """``state/models/trained`` (``bundle/``, ``model.tar.gz``, metrics); trains if absent.

    ``pumpwatch train`` writes straight into the final directory (so the paths
    its summary lines in ``train.log`` name stay true) and ``training.json``
    last: a directory without it is an interrupted training and is redone.
    """
    out = trained_dir(opts)
    if all((out / name).exists() for name in ("model.tar.gz", "bundle", "training.json")):
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name("trained.partial"), ignore_errors=True)  # older stacks' leftover
    argv = pumpwatch_argv("--log-level", "WARNING", "train", "--out", str(out),
                          "--model-version", "stack-sim-mlp")
    if opts.train_pumps_per_class is not None:
        n = opts.train_pumps_per_class
        argv += ["--pumps-per-class", str(n), "--test-pumps-per-class", str(max(2, n // 2)),
                 "--calib-pumps-per-class", str(max(2, n // 4)), "--seconds", "2"]
    if quiet:
        argv.append("--quiet")
    print("training the condition classifier on simulated pumps (first start only; "
          "about 2 minutes on 2 cores) ...", file=sys.stderr, flush=True)
    log = opts.path("logs", "train.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        # Progress bar on our stderr; the summary lines into the log. Its own session,
        # so Ctrl-C reaches only the stack, which stops it and says what was interrupted.
        rc = subprocess.run(argv, stdout=fh, env=child_env(), check=False,
                            start_new_session=True).returncode
    if rc != 0:
        raise StackError(f"pumpwatch train failed (exit {rc}); see {log}")
    return out


def deploy_trained(opts: StackOptions) -> str:
    """Register, approve and deploy the trained classifier unless something is deployed already.

    Returns the deployed model version (``group/version``).
    """
    from models.registry.local import LocalRegistry

    reg = LocalRegistry(opts.path("registry"))
    dep = reg.deployment(ENDPOINT_NAME)
    if dep is not None:
        return dep.model_version
    out = trained_dir(opts)
    metrics = {k: float(v) for k, v in json.loads((out / "metrics.json").read_text()).items()
               if isinstance(v, int | float)}
    pkg = reg.register(MODEL_GROUP, out / "model.tar.gz", metrics=metrics,
                       customer_metadata={"stack": "classifier"},
                       description="pumpwatch up: simulator-trained classifier")
    reg.set_status(MODEL_GROUP, pkg.version, "Approved", "pumpwatch up: local stack")
    return reg.deploy(MODEL_GROUP, ENDPOINT_NAME, pkg.version).model_version


async def _archived(opts: StackOptions, pumps: list[str], since_ns: int,
                    until_ns: int) -> list[object]:
    import dsp
    from cloud.store import make_store

    store = make_store(opts.store_url, readonly=True)
    await store.open()
    try:
        out: list[object] = []
        for pump in pumps:
            rows = await store.archived(pump=pump, since_ns=since_ns, until_ns=until_ns)
            out += [dsp.decode_report(a.report) for a in rows]
        return out
    finally:
        await store.close()


def fit_and_deploy_baselines(opts: StackOptions, pumps: list[str], since_ns: int,
                             until_ns: int) -> tuple[str, list[str]]:
    """Fit per-pump baselines on the archived healthy period; deploy classifier + baselines.

    Returns ``(model_version, pumps with a baseline)``.
    """
    from models.registry.local import LocalRegistry
    from models.serving.bundle import load_bundle, write_bundle
    from models.training.anomaly import fit_pump_baselines

    reports = asyncio.run(_archived(opts, pumps, since_ns, until_ns))
    if not reports:
        raise StackError("no archived reports in the healthy period: nothing to fit")
    baselines = fit_pump_baselines(reports)  # type: ignore[arg-type]
    trained = load_bundle(trained_dir(opts) / "bundle")
    reg = LocalRegistry(opts.path("registry"))
    with tempfile.TemporaryDirectory(dir=opts.path("models")) as tmp:
        bundle = write_bundle(
            Path(tmp) / "bundle", model_version="stack-sim-mlp+baselines",
            classifier=trained.classifier, baselines=baselines,
            description=f"classifier + baselines of {len(baselines.pumps)} pumps "
            "(pumpwatch up, healthy period)",
        )
        pkg = reg.register(MODEL_GROUP, bundle, customer_metadata={
            "stack": "baselines", "pumps": ",".join(baselines.pumps),
        }, description="pumpwatch up: classifier + per-pump baselines")
    reg.set_status(MODEL_GROUP, pkg.version, "Approved", "pumpwatch up: healthy period fit")
    return (reg.deploy(MODEL_GROUP, ENDPOINT_NAME, pkg.version).model_version,
            list(baselines.pumps))
