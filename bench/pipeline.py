"""Pipeline benchmark: publishers -> Mosquitto -> consumer -> model server -> SQLite.

    python -m bench.pipeline [--json] [--runs 3] [--reports 20000] [--latency-seconds 10]
    python -m bench.pipeline --json --store postgresql --consumers 2 --chaos
    python -m bench.pipeline --json --soak --messages 100000 [--minutes M]

With ``--soak`` the benchmark is the soak run described in :mod:`bench._soak`
(mixed good and bad load, edge devices with spools and confirmations, the broker
SIGKILLed with a 60 s autosave window, the consumer away past its session expiry,
an intruder in the shared group; targets lost == 0, unaccounted == 0,
duplicates_stored == 0, consumer_rss_peak_mb <= 300).

With ``--chaos``, ``--consumers`` > 1 or a ``--store`` other than ``sqlite``
the benchmark is the chaos run described in :mod:`bench._chaos` (faults
injected through a proxy, a consumer killed and restarted; targets lost == 0,
duplicates_stored == 0, dead_lettered == poison_injected, reports_per_s >= 500
over the whole run). Otherwise:

Everything is real and local: a Mosquitto broker (persistence on, as in the
tests), the model server (``python -m models.serving.server``, built-in physics
bundle), the consumer as its own process (``pumpwatch cloud --config``, SQLite
with ``synchronous=FULL``), and a paho QoS 1 publisher in this process sending
pre-encoded reports (1 s, 25.6 kHz, 1600 lines; 8 reports per MQTT message,
i.e. one gateway's channels) stamped with a ``published_ns`` user property.

Per run, two phases, each with a fresh consumer and database:

* **saturation**: ``--reports`` reports published as fast as the broker takes
  them. ``reports_per_s`` = reports / (last result committed - first
  published); ``invocations_per_report`` = endpoint calls / reports. The
  saturation phase runs twice, with the consumer's end-to-end confirmations off
  and on (``[confirm] enabled``; on: one confirmation message per device per
  commit): ``reports_per_s_confirm_off`` / ``_on`` and their ratio
  ``confirm_throughput_ratio`` (target >= 0.9); ``reports_per_s`` is the on one.
  The two phases of a run are a pair (their order alternates between runs); the
  ratio printed is the median of the runs' paired ratios
  (``runs_confirm_throughput_ratio``).
* **latency**: 500 reports/s offered (a message every 16 ms) for
  ``--latency-seconds``; ``p50_ms`` / ``p99_ms`` of (result committed -
  published), both clocks this machine's.

``lost`` = published identities without a result row, ``duplicates_stored`` =
result rows beyond one per published identity (both summed over all runs).
Figures are medians over ``--runs``. The machine is shared by the broker, the
model server, the consumer and the publisher (``nproc`` cores). The last line
printed is one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dsp
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import (
    ConsumerProcess,
    Publisher,
    chunks,
    consumer_config,
    encoded_reports,
    stored_results,
    write_toml,
)

PER_MESSAGE = 8
OFFERED_RPS = 500.0


def say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _rows(db: Path) -> list[tuple[str, int, int, int | None, int]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(
            "SELECT device, epoch, seq, published_ns, stored_ns FROM results"
        ).fetchall()
    finally:
        con.close()


def _final_stats(log: Path) -> dict[str, Any]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "final stats " in line:
            stats: dict[str, Any] = json.loads(line.split("final stats ", 1)[1])
            return stats
    raise RuntimeError(f"consumer wrote no final stats; log tail:\n{log.read_text()[-2000:]}")


class Phase:
    """One consumer process over one fresh database."""

    def __init__(self, work: Path, name: str, broker: Mosquitto, server: ModelServerProcess,
                 topic_root: str, *, confirm: bool = True) -> None:
        self.db = work / f"{name}.db"
        self.log = work / f"{name}.log"
        cfg = consumer_config(
            broker_port=broker.port, endpoint_url=server.url, db=self.db,
            topic_root=topic_root, client_id=f"bench-{name}", group=f"bench-{name}",
            batch={"max_size": 128, "max_delay_ms": 50},  # the defaults
            store={"synchronous": "full"},
            endpoint={"max_concurrency": 4},
            confirm={"enabled": confirm},
        )
        self.proc = ConsumerProcess(write_toml(work / f"{name}.toml", cfg), self.log)

    def start(self) -> None:
        self.proc.start()
        deadline = time.monotonic() + 30
        while "mqtt connected" not in self.proc.log_tail(200):
            if time.monotonic() > deadline or not self.proc.running:
                raise RuntimeError(f"consumer did not connect:\n{self.proc.log_tail()}")
            time.sleep(0.05)
        time.sleep(0.3)  # subscription granted

    def wait(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while stored_results(self.db) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> dict[str, Any]:
        self.proc.stop(30)
        return _final_stats(self.log)


def _account(db: Path, published: set[tuple[str, int, int]]) -> tuple[list[tuple[Any, ...]],
                                                                        int, int]:
    rows = _rows(db)
    ids = [(d, e if e >= 0 else e + (1 << 64), s) for d, e, s, _, _ in rows]
    distinct = set(ids)
    lost = len(published - distinct)
    duplicates = (len(ids) - len(distinct)) + len(distinct - published)
    return rows, lost, duplicates


def run_once(run: int, work: Path, broker: Mosquitto, server: ModelServerProcess,
             n_reports: int, latency_s: float, quiet: bool) -> dict[str, float]:
    devices = [f"gw{run}-{i:03d}" for i in range(16)]
    epoch = 1_000 + run
    topic_root = f"bench{run}"

    def messages(count: int, seq0: int) -> tuple[list[tuple[str, bytes]], set[Any]]:
        # Round-robin over gateways; each message = one gateway's 8 channels.
        per_dev = -(-count // len(devices))
        out: list[tuple[str, bytes]] = []
        ids: set[tuple[str, int, int]] = set()
        by_dev = {}
        for d in devices:
            seqs = range(seq0, seq0 + per_dev)
            by_dev[d] = chunks(encoded_reports(d, epoch, seqs, pumps=[f"{d}-p{k}" for k in
                                                                       range(4)]), PER_MESSAGE)
            ids.update((d, epoch, s) for s in seqs)
        for k in range(len(by_dev[devices[0]])):
            for d in devices:
                out.append((f"{topic_root}/devices/{d}/reports",
                            dsp.encode_batch(d, by_dev[d][k])))
        return out, ids

    # -- saturation, confirmations off then on ------------------------------------------
    sat_rps: dict[bool, float] = {}
    sat_lost = sat_dups = 0
    inv = cpu_us = 0.0
    # alternate the order per run: the first phase of a run pays for warm-up
    for confirm in ((False, True) if run % 2 == 0 else (True, False)):
        tag = "on" if confirm else "off"
        root = f"{topic_root}{tag}"
        sat_msgs, sat_ids = messages(n_reports, 0)
        sat_msgs = [(t.replace(topic_root, root, 1), p) for t, p in sat_msgs]
        phase = Phase(work, f"sat{run}{tag}", broker, server, root, confirm=confirm)
        phase.start()
        say(f"run {run}: saturation (confirmations {tag}), {len(sat_ids)} reports in "
            f"{len(sat_msgs)} messages", quiet)
        with Publisher("127.0.0.1", broker.port, f"bench-pub-sat{run}{tag}",
                       max_inflight=200) as pub:
            for topic, payload in sat_msgs:
                pub.publish(topic, payload)
            phase.wait(len(sat_ids), 120)
        sat_stats = phase.stop()
        rows, lost, dups = _account(phase.db, sat_ids)
        sat_lost += lost
        sat_dups += dups
        first_pub = min(p for *_, p, _ in rows if p is not None)
        last_stored = max(s for *_, s in rows)
        sat_rps[confirm] = len(rows) / ((last_stored - first_pub) / 1e9)
        inv = sat_stats["counters"]["invocations"] / max(1, len(sat_ids))
        cpu_us = sat_stats["cpu_s"] / max(1, len(sat_ids)) * 1e6
        say(f"  {sat_rps[confirm]:.0f} reports/s, {inv:.4f} invocations/report, lost {lost}, "
            f"consumer CPU {cpu_us:.0f} us/report, confirmation messages "
            f"{sat_stats['counters'].get('confirmations_sent', 0)}", quiet)
    rps = sat_rps[True]

    # -- latency at 500 reports/s offered ---------------------------------------------------
    n_lat = int(OFFERED_RPS * latency_s)
    lat_msgs, lat_ids = messages(n_lat, 1_000_000)
    phase = Phase(work, f"lat{run}", broker, server, topic_root + "l")
    lat_msgs = [(t.replace(topic_root, topic_root + "l", 1), p) for t, p in lat_msgs]
    phase.start()
    interval = PER_MESSAGE / OFFERED_RPS
    say(f"run {run}: latency, {len(lat_ids)} reports at {OFFERED_RPS:.0f}/s offered", quiet)
    with Publisher("127.0.0.1", broker.port, f"bench-pub-lat{run}", max_inflight=200) as pub:
        t_start = time.monotonic()
        for k, (topic, payload) in enumerate(lat_msgs):
            delay = t_start + k * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pub.publish(topic, payload)
        phase.wait(len(lat_ids), 60)
    phase.stop()
    rows, lat_lost, lat_dups = _account(phase.db, lat_ids)
    lat = sorted((s - p) / 1e6 for *_, p, s in rows if p is not None)
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    say(f"  p50 {p50:.1f} ms, p99 {p99:.1f} ms, lost {lat_lost}", quiet)
    return {
        "reports_per_s": rps,
        "reports_per_s_confirm_off": sat_rps[False],
        "reports_per_s_confirm_on": sat_rps[True],
        "confirm_throughput_ratio": sat_rps[True] / sat_rps[False],
        "invocations_per_report": inv,
        "p50_ms": p50,
        "p99_ms": p99,
        "lost": sat_lost + lat_lost,
        "duplicates_stored": sat_dups + lat_dups,
        "consumer_cpu_us_per_report": cpu_us,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print only the JSON line")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reports", type=int, default=20_000, help="reports in the saturation phase")
    ap.add_argument("--latency-seconds", type=float, default=8.0)
    ap.add_argument("--store", default="sqlite",
                    help="sqlite | postgresql (a throwaway server) | postgresql://URL")
    ap.add_argument("--consumers", type=int, default=1, help="consumer processes (chaos run)")
    ap.add_argument("--chaos", action="store_true", help="inject endpoint faults, kill and "
                    "restart a consumer")
    ap.add_argument("--poison", type=int, default=3, help="poison reports (chaos run)")
    ap.add_argument("--outage-s", type=float, default=1.5, help="503 outage length (chaos run)")
    ap.add_argument("--soak", action="store_true", help="mixed load + fault schedule with "
                    "edge spools and confirmations (see bench/_soak.py)")
    ap.add_argument("--messages", type=int, default=10_000, help="soak length in messages")
    ap.add_argument("--minutes", type=float, default=None, help="soak length in minutes "
                    "(instead of --messages)")
    ap.add_argument("--devices", type=int, default=8, help="edge devices (soak)")
    ap.add_argument("--rate", type=float, default=150.0,
                    help="soak: good messages offered per second (8 reports each)")
    args = ap.parse_args()
    quiet = args.json
    if args.soak:
        _soak_main(args, quiet)
        return
    if args.chaos or args.consumers > 1 or args.store != "sqlite":
        _chaos_main(args, quiet)
        return
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto", max_inflight_messages=1000,
                           log_types=("error", "warning"))
        with broker, ModelServerProcess() as server:
            runs = [
                run_once(r, work, broker, server, args.reports, args.latency_seconds, quiet)
                for r in range(args.runs)
            ]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "benchmark": "pipeline",
        "reports_per_s": round(med["reports_per_s"], 1),
        "reports_per_s_confirm_off": round(med["reports_per_s_confirm_off"], 1),
        "reports_per_s_confirm_on": round(med["reports_per_s_confirm_on"], 1),
        "confirm_throughput_ratio": round(med["confirm_throughput_ratio"], 3),
        "invocations_per_report": round(med["invocations_per_report"], 5),
        "p50_ms": round(med["p50_ms"], 1),
        "p99_ms": round(med["p99_ms"], 1),
        "lost": int(sum(r["lost"] for r in runs)),
        "duplicates_stored": int(sum(r["duplicates_stored"] for r in runs)),
        "runs": args.runs,
        "runs_reports_per_s": [round(r["reports_per_s"], 1) for r in runs],
        "runs_p99_ms": [round(r["p99_ms"], 1) for r in runs],
        "runs_confirm_throughput_ratio": [round(r["confirm_throughput_ratio"], 3)
                                          for r in runs],
        "consumer_cpu_us_per_report": round(med["consumer_cpu_us_per_report"], 1),
        "reports_per_message": PER_MESSAGE,
        "offered_reports_per_s": OFFERED_RPS,
        "saturation_reports": args.reports,
        "cpus": os.cpu_count(),
        "targets": {"reports_per_s": ">=2000", "confirm_throughput_ratio": ">=0.9",
                    "invocations_per_report": "<=0.03125",
                    "p99_ms": "<=250", "lost": 0, "duplicates_stored": 0},
    }
    print(json.dumps(result))


def _soak_main(args: argparse.Namespace, quiet: bool) -> None:
    from bench._soak import soak_run

    with tempfile.TemporaryDirectory(prefix="pw-soak-") as tmp:
        out = soak_run(work=Path(tmp), messages=args.messages, minutes=args.minutes,
                       devices=args.devices, rate=args.rate,
                       say=lambda m: say("  " + m, quiet))
    result = {
        "benchmark": "pipeline-soak", **out, "cpus": os.cpu_count(),
        "targets": {"lost": 0, "unaccounted": 0, "duplicates_stored": 0,
                    "consumer_rss_peak_mb": "<=300"},
    }
    print(json.dumps(result))


def _chaos_main(args: argparse.Namespace, quiet: bool) -> None:
    from bench._chaos import chaos_run

    runs_n = args.runs if "--runs" in sys.argv else 1
    runs = []
    for r in range(runs_n):
        with tempfile.TemporaryDirectory(prefix="pw-chaos-") as tmp:
            say(f"chaos run {r}: {args.consumers} consumers, store {args.store}, "
                f"{args.reports} reports, chaos={args.chaos}", quiet)
            out = chaos_run(work=Path(tmp), store=args.store, consumers=args.consumers,
                            n_reports=args.reports, n_poison=args.poison,
                            outage_s=args.outage_s, chaos=args.chaos,
                            say=lambda m: say("  " + m, quiet))
            say(f"  {out['reports_per_s']} reports/s, lost {out['lost']}, duplicates "
                f"{out['duplicates_stored']}, dead-lettered {out['dead_lettered']}/"
                f"{out['poison_injected']}, max backlog {out['max_backlog']}", quiet)
            runs.append(out)
    result = {
        "benchmark": "pipeline-chaos" if args.chaos else "pipeline-scaleout",
        "reports_per_s": statistics.median(r["reports_per_s"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "duplicates_stored": sum(r["duplicates_stored"] for r in runs),
        "poison_injected": sum(r["poison_injected"] for r in runs),
        "dead_lettered": sum(r["dead_lettered"] for r in runs),
        "max_backlog": max(r["max_backlog"] for r in runs),
        "runs": runs_n,
        "runs_reports_per_s": [r["reports_per_s"] for r in runs],
        "consumers": args.consumers,
        "store": runs[0]["store"],
        "chaos": args.chaos,
        "reports": runs[0]["reports"],
        "outage_s": args.outage_s,
        "events": runs[-1]["events"],
        "proxy": runs[-1]["proxy"],
        "cpus": os.cpu_count(),
        "targets": {"reports_per_s": ">=500", "lost": 0, "duplicates_stored": 0,
                    "dead_lettered": "== poison_injected"},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
