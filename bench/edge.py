"""Edge agent benchmark: how many 25.6 kHz channels one core sustains end to end.

``python -m bench.edge --json`` runs the whole agent (acquisition ring, framer,
dsp with every feature and the envelope, report encoding, spool with fsync,
MQTT publishing and PUBACKs) pinned to one core, against a local Mosquitto
pinned to the other core, fed from pre-generated samples in memory as fast as
it will go. The last line printed is one JSON object:

* ``realtime_channels_per_core``: channels x stream seconds / CPU seconds of
  the agent process (all its threads, pinned to one core), from start until the
  last report is PUBACKed; ``realtime_channels_per_core_wall`` divides by wall
  time instead (lower when other work shares the core);
* ``reports_per_s``, ``published``, ``acked`` (reports), ``messages``;
* ``rss_mb``: peak resident memory of the agent process at ``channels``;
* ``dsp_channels_per_core``: the same data through ``dsp.analyze`` + encoding
  alone (what the pipeline costs on top of the DSP is the difference).

The machine is shared: run it a few times (``--repeat``) and read the median.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import logging
import numpy as np
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


from edge.agent import Agent
from edge.config import EdgeConfig, config_from_dict
from edge.pipeline import ReportBuilder
from edge.sources import synthetic_source

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.infra.mosquitto import Mosquitto


def cores() -> tuple[int, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], (allowed[1] if len(allowed) > 1 else None)


def make_config(
    tmp: Path,
    port: int,
    channels: int,
    seconds: float,
    *,
    tls: dict[str, str] | None = None,
    transport: str = "paho",
) -> EdgeConfig:
    per_pump = 8
    pumps = []
    for p in range((channels + per_pump - 1) // per_pump):
        n = min(per_pump, channels - p * per_pump)
        pumps.append(
            {
                "id": f"pump{p + 1}",
                "vanes": 6,
                "rated_rpm": 2950,
                "bearings": ["6205"],
                "full_scale": 490.0,
                "channels": [f"c{i}" for i in range(n)],
            }
        )
    return config_from_dict(
        {
            "device": "bench-gw",
            "site": "bench",
            "source": {"kind": "synthetic", "pace": "fast", "duration_s": seconds},
            "mqtt": {
                "host": "127.0.0.1",
                "port": port,
                "transport": transport,
                **({"tls": tls} if tls else {}),
            },
            "spool": {"path": str(tmp / "spool")},
            "status": {"interval_s": 5.0},
            "pipeline": {"chunk_channels": 16},
            "pumps": pumps,
        },
        source="bench",
    )


def dsp_only(cfg: EdgeConfig, intervals: int = 8) -> float:
    """Channels per second through analyze + make_report + encode alone (64 channels:
    per-channel cost is the same in chunks of 16, and it keeps the peak RSS down)."""
    cfg = make_config(Path(cfg.spool.path), cfg.mqtt.port, 64, 1.0)
    src = synthetic_source(cfg, period_s=0.25)
    reps = -(-cfg.report.interval_samples // src._buf.shape[1])
    x = np.tile(src._buf, (1, reps))[:, : cfg.report.interval_samples]
    b = ReportBuilder(cfg, 1)
    b.build(x, 0)  # warm-up (FFT plans, caches)
    t = time.process_time()
    for _ in range(intervals):
        b.build(x, 0)
    return x.shape[0] * intervals / (time.process_time() - t)


CORES = cores()


def tls_broker(tmp: Path) -> tuple[Mosquitto, dict[str, str]]:
    """A Mosquitto with only the mTLS listener and role grants of the local stack, and the bench
    device's certificate (--tls)."""
    from cloud import pki

    pki.init_ca(tmp / "pki")
    crt, key = pki.issued_path(tmp / "pki", "device", "bench-gw")
    pki.issue(tmp / "pki", "device", "bench-gw")
    broker = Mosquitto(
        tmp / "mosquitto",
        persistence=False,
        max_inflight_messages=1000,
        tls_pki=tmp / "pki",
    )
    return broker, {"ca": str(tmp / "pki" / "ca.crt"), "cert": str(crt), "key": str(key)}


def run_once(
    channels: int,
    seconds: float,
    log: logging.Logger,
    *,
    tls: bool = False,
    transport: str = "paho",
) -> dict[str, Any]:
    agent_core, other = CORES
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as d:
        tmp = Path(d)
        tls_files: dict[str, str] | None = None
        if tls or transport == "awsiot":
            broker, tls_files = tls_broker(tmp)
        else:
            broker = Mosquitto(tmp / "mosquitto", persistence=False, max_inflight_messages=1000)
        broker.start()
        try:
            if other is not None and broker.pid is not None:
                os.sched_setaffinity(broker.pid, {other})
            os.sched_setaffinity(0, {agent_core})  # threads started from now on inherit it
            if broker.pid is not None and other is not None:
                os.sched_setaffinity(broker.pid, {other})
            cfg = make_config(
                tmp, broker.port, channels, seconds, tls=tls_files, transport=transport
            )
            dsp_rate = dsp_only(cfg)
            agent = Agent(
                cfg,
                synthetic_source(cfg, period_s=0.25),
                exit_when_drained=True,
                overflow="block",
                drain_timeout_s=120,
            )
            stop = threading.Event()
            t0, c0 = time.perf_counter(), time.process_time()
            code = agent.run(stop)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0  # every agent thread, all on the pinned core
        finally:
            broker.stop()
    pub = agent.publisher.stats
    produced = agent.spool.stats.appended
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "channels": channels,
        "fs": cfg.report.fs,
        "stream_s": seconds,
        "wall_s": round(wall, 3),
        # per core = per CPU-second of the agent process (pinned to one core), so other
        # load on a shared machine does not count against it; the wall figure is below
        "realtime_channels_per_core": round(channels * seconds / cpu, 1),
        "realtime_channels_per_core_wall": round(channels * seconds / wall, 1),
        "cpu_s": round(cpu, 3),
        "dsp_channels_per_core": round(dsp_rate, 1),
        "reports_per_s": round(produced / wall, 1),
        "reports": produced,
        "published": pub.reports,
        "acked": pub.acked_reports,
        "messages": pub.messages,
        "dsp_share": round(agent.compute_s / cpu, 3),  # of the agent's CPU time
        "rss_mb": round(rss_mb, 1),
        "ring_peak": agent.ring.stats.peak,
        "spool_peak_bytes": agent.spool.stats.peak_bytes,
        "inflight_peak": pub.inflight_peak,
        "disconnects": agent.disconnects,
        "exit": code,
        "agent_core": agent_core,
        "broker_core": other,
        "tls": tls_files is not None,
        "transport": transport,
    }
    log.info("run: %s", out)
    return out


def run_child(channels: int, seconds: float, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """One run in a fresh process, so its peak RSS is its own."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.edge",
            "--single",
            "--json",
            "--channels",
            str(channels),
            "--seconds",
            str(seconds),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"bench run failed ({p.returncode}): {p.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=8.0, help="stream seconds per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs (fresh processes); median reported")
    ap.add_argument("--single", action="store_true", help="one run in this process")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    ap.add_argument("--tls", action="store_true", help="mutual TLS + ACL broker (local stack)")
    ap.add_argument("--transport", choices=["paho", "awsiot"], default="paho")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("bench.edge")
    if args.single:
        r = run_once(args.channels, args.seconds, log, tls=args.tls, transport=args.transport)
        print(json.dumps(r))
        return 0 if r["published"] == r["acked"] and r["exit"] == 0 else 1
    extra = ("--transport", args.transport, *(("--tls",) if args.tls else ()))
    runs = [run_child(args.channels, args.seconds, extra) for _ in range(args.repeat)]
    key = "realtime_channels_per_core"
    med = sorted(runs, key=lambda r: r[key])[len(runs) // 2]
    result = dict(med)
    result["runs"] = [r[key] for r in runs]
    result["rss_mb"] = max(r["rss_mb"] for r in runs)
    result["median_of"] = len(runs)
    result["published_eq_acked"] = all(r["published"] == r["acked"] for r in runs)
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    for r in runs:
        print(
            f"{r[key]:8.1f} ch/core  dsp-only {r['dsp_channels_per_core']:8.1f}  "
            f"rss {r['rss_mb']:.0f} MB  {r['published']}/{r['acked']} published/acked"
        )
    print(json.dumps(result))
    return 0 if all(r["published"] == r["acked"] and r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
