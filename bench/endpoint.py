"""Model-server throughput and latency through a real aiobotocore client.

    python -m bench.endpoint [--json] [--seconds 3] [--concurrency 2] [--runs 1] [--shadow]

The server (``python -m models.serving.server``) runs as its own process pinned
to one core; this process (the aiobotocore ``sagemaker-runtime`` client,
``invoke_endpoint`` with ``endpoint_url``) is pinned to another. Math
libraries use one thread. For each batch size (1, 16, 64, 256 reports of
1 s, 25.6 kHz, 1600 lines, from the same dsp as the edge) the client keeps
``--concurrency`` calls in flight for ``--seconds`` after a warm-up and
records each call's latency, and the CPU time each side spent per call
(server from /proc, client from ``time.process_time``): on a shared
machine wall-clock figures are noisy, CPU per call is not. Reports go to a
bundle with per-pump z-score baselines for 16 pumps plus the physics
classifier (the models measured are named in the JSON as ``models``).
``--shadow`` serves the bundle from a local registry with a second copy of it
deployed as a shadow beside it (scored off the request path, on the same
pinned core): the cost of a shadow rollout to callers; the JSON then says how
many reports the shadow scored and how many shadow batches it skipped. The
last line printed is one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

import dsp
from models.serving.baseline import fit_baselines
from models.serving.bundle import load_bundle, write_bundle
from dsp.results import InvocationRequest, InvocationResponse

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 16, 64, 256)
PUMPS = 16
MSGPACK = "application/x-msgpack"


def _cores() -> tuple[int | None, int | None]:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return cpus[0], cpus[0]
    return cpus[0], cpus[1]


def make_reports(count: int, seed: int = 1, fault_every: int = 4) -> list[dsp.Report]:
    """``count`` reports over PUMPS pumps; every ``fault_every``-th with an outer-race fault."""
    cfg = dsp.ReportConfig()
    n = cfg.interval_samples
    rng = np.random.default_rng(seed)
    asset = dsp.Asset(
        bearings=[dsp.Bearing(n_balls=9, ball_d_mm=7.94, pitch_d_mm=39.04)], vanes=6,
        rated_rpm=2950.0,
    )
    t = np.arange(n) / cfg.fs
    ring = np.exp(-800.0 * t[:200]) * np.sin(2 * np.pi * 3200.0 * t[:200])
    out: list[dsp.Report] = []
    for start in range(0, count, 16):
        k = min(16, count - start)
        xs = np.empty((k, n), dtype=np.float32)
        for j in range(k):
            fr = rng.uniform(2900, 3000) / 60.0
            x = 0.4 * np.sin(2 * np.pi * fr * t + rng.uniform(0, 6)) + 0.1 * np.sin(
                2 * np.pi * 6 * fr * t
            )
            if fault_every and (start + j) % fault_every == fault_every - 1:
                imp = np.zeros(n)
                imp[(np.arange(0, 1.0, 1 / (3.5848 * fr)) * cfg.fs).astype(int)] = 20.0
                x = x + np.convolve(imp, ring)[:n]
            xs[j] = x + 0.3 * rng.standard_normal(n)
        specs = [dsp.ChannelSpec(asset=asset) for _ in range(k)]
        for j, res in enumerate(dsp.analyze(xs, cfg, specs)):
            i = start + j
            out.append(dsp.make_report(
                res, cfg, specs[j], device=f"gw{i % 4}", epoch=42, seq=i, site="bench",
                pump=f"pump-{i % PUMPS}", channel="x", t0_ns=i * 10**9,
            ))
    return out


def start_server(
    model_dir: Path, cpu: int | None, *, registry: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    where = ["--registry", str(registry)] if registry else ["--model-dir", str(model_dir)]
    cmd = [sys.executable, "-m", "models.serving.server", "--host", "127.0.0.1", "--port", "0",
           *where, "--log-level", "WARNING"]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, preexec_fn=pin,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.strip().rsplit(" ", 1)[1]


def _wait_shadow(url: str, timeout: float = 30.0) -> None:
    """Until the server has loaded production and the shadow beside it."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/rollout", timeout=2) as r:  # noqa: S310
                if json.loads(r.read()).get("rollout"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not load the shadow in {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    url: str, bodies: list[bytes], batch: int, seconds: float, concurrency: int,
    server_pid: int,
) -> dict[str, float]:
    from aiobotocore.session import get_session
    from botocore.config import Config

    cfg = Config(retries={"total_max_attempts": 1}, max_pool_connections=concurrency + 2,
                 read_timeout=60)
    session = get_session()
    async with session.create_client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",  # noqa: S106 -- dummy
        config=cfg,
    ) as client:
        lat: list[float] = []
        done = 0
        decoder = msgspec.msgpack.Decoder(InvocationResponse)

        async def call(body: bytes) -> None:
            r = await client.invoke_endpoint(
                EndpointName="pumpwatch", Body=body, ContentType=MSGPACK, Accept=MSGPACK,
            )
            resp = decoder.decode(await r["Body"].read())
            if len(resp.results) != batch:
                raise RuntimeError(f"{len(resp.results)} results for {batch} reports")

        async def worker(w: int, until: float, record: bool) -> None:
            nonlocal done
            i = w
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                await call(bodies[i % len(bodies)])
                if record:
                    lat.append(time.perf_counter() - t0)
                    done += batch
                i += concurrency

        warm = time.perf_counter() + min(1.0, seconds / 3)
        await asyncio.gather(*(worker(w, warm, False) for w in range(concurrency)))
        t0 = time.perf_counter()
        s0, c0 = cpu_seconds(server_pid), time.process_time()
        until = t0 + seconds
        await asyncio.gather(*(worker(w, until, True) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
        s1, c1 = cpu_seconds(server_pid), time.process_time()
    ms = np.array(lat) * 1e3
    return {
        "reports_per_s": done / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls": float(len(lat)),
        # CPU per call is robust to a shared machine where wall-clock figures are not.
        "server_cpu_ms_per_call": (s1 - s0) * 1e3 / max(len(lat), 1),
        "client_cpu_ms_per_call": (c1 - c0) * 1e3 / max(len(lat), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.endpoint", description=__doc__)
    p.add_argument("--json", action="store_true", help="(the JSON line is always printed last)")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--runs", type=int, default=1, help="median over this many runs")
    p.add_argument(
        "--classifier-from", type=Path, default=None, metavar="BUNDLE",
        help="serve the classifier of this bundle (dir or model.tar.gz, e.g. from "
        "`pumpwatch train`) instead of the physics rules",
    )
    p.add_argument(
        "--fault-every", type=int, default=4,
        help="every Nth report has an outer-race fault (0: none); faulty reports cost more "
        "(envelope-family diagnosis)",
    )
    p.add_argument("--shadow", action="store_true",
                   help="serve from a registry with a shadow copy of the bundle beside it")
    args = p.parse_args(argv)

    server_cpu, client_cpu = _cores()
    reports = make_reports(2 * 256, fault_every=args.fault_every)
    with tempfile.TemporaryDirectory(prefix="pumpwatch-bench-") as tmp:
        k = args.fault_every
        healthy = [r for r in reports if not k or r.seq % k != k - 1]
        classifier = None
        models = (
            "physics classifier + per-pump z-score baselines (16 pumps) + envelope-family "
            "bearing diagnosis of reports with a lit bearing line; no trained classifier"
        )
        if args.classifier_from:
            trained = load_bundle(args.classifier_from, cache_dir=Path(tmp) / "x")
            classifier = trained.classifier
            models = models.replace(
                "physics classifier", f"{trained.classifier.kind} classifier "
                f"{trained.model_version} ({args.classifier_from})",
            ).replace("; no trained classifier", "")
        bundle = write_bundle(
            Path(tmp) / "bundle", model_version="bench-endpoint", classifier=classifier,
            baselines=fit_baselines(healthy, min_reports=5),
        )
        enc = msgspec.msgpack.Encoder()
        registry = None
        if args.shadow:
            from models.registry.local import LocalRegistry

            registry = Path(tmp) / "registry"
            reg = LocalRegistry(registry)
            for v in (1, 2):
                reg.register("bench", bundle)
                reg.approve("bench", v)
            reg.deploy("bench", version=1)
            reg.deploy("bench", version=2, mode="shadow")
        proc, url = start_server(bundle, server_cpu, registry=registry)
        shadow: dict[str, object] | None = None
        if args.shadow:
            _wait_shadow(url)
        try:
            if client_cpu is not None:
                os.sched_setaffinity(0, {client_cpu})
            runs: dict[int, list[dict[str, float]]] = {b: [] for b in BATCHES}
            for _ in range(args.runs):
                for b in BATCHES:
                    bodies = [
                        enc.encode(InvocationRequest(v=1, reports=(reports * 2)[o : o + b]))
                        for o in range(0, 256, max(b, 16))
                    ][:16]
                    conc = args.concurrency
                    r = asyncio.run(measure(url, bodies, b, args.seconds, conc, proc.pid))
                    runs[b].append(r)
                    print(
                        f"batch {b:4d}: {r['reports_per_s']:9.0f} reports/s, "
                        f"p50 {r['p50_ms']:6.2f} ms, p99 {r['p99_ms']:6.2f} ms "
                        f"({r['calls']:.0f} calls, {conc} in flight, "
                        f"{len(bodies[0]) / 1024:.0f} KiB/call; CPU/call server "
                        f"{r['server_cpu_ms_per_call']:.2f} ms, client "
                        f"{r['client_cpu_ms_per_call']:.2f} ms)",
                        flush=True,
                    )
            if args.shadow:
                import urllib.request

                with urllib.request.urlopen(url + "/rollout", timeout=10) as resp:  # noqa: S310
                    ro = json.loads(resp.read())["rollout"]
                shadow = {"shadow_reports_scored": ro["versions"]["bench/2"]["reports"],
                          "production_reports_scored": ro["versions"]["bench/1"]["reports"],
                          "shadow_batches_skipped": ro["shadow_skipped"]}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    out: dict[str, object] = {}
    for b in BATCHES:
        out[f"reports_per_s_{b}"] = round(statistics.median(r["reports_per_s"] for r in runs[b]))
    for b in BATCHES:
        out[f"p50_ms_{b}"] = round(statistics.median(r["p50_ms"] for r in runs[b]), 2)
        out[f"p99_ms_{b}"] = round(statistics.median(r["p99_ms"] for r in runs[b]), 2)
    for b in BATCHES:
        out[f"server_cpu_ms_per_call_{b}"] = round(
            statistics.median(r["server_cpu_ms_per_call"] for r in runs[b]), 3
        )
        out[f"client_cpu_ms_per_call_{b}"] = round(
            statistics.median(r["client_cpu_ms_per_call"] for r in runs[b]), 3
        )
    # What one dedicated server core sustains, from its CPU time (robust to a shared machine).
    cpu64 = out["server_cpu_ms_per_call_64"]
    assert isinstance(cpu64, float)
    out["server_core_capacity_reports_per_s_64"] = round(64 / (cpu64 / 1e3)) if cpu64 else None
    out.update(shadow or {})
    out.update(
        shadow=args.shadow,
        models=models,
        fault_every=args.fault_every,
        concurrency=args.concurrency,
        seconds=args.seconds,
        runs=args.runs,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        report_bytes=round(statistics.mean(len(dsp.encode_report(r)) for r in reports)),
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
