"""Model monitoring benchmark: histogram cost in the consumer's commit path, run time, drift.

    python -m bench.monitor [--json] [--pairs 9] [--pumps 24] [--seconds 12]

* ``cpu_overhead_ratio``: the real consumer's CPU seconds per report with monitoring on
  / off (:mod:`bench._consumer_cpu`): ``pumpwatch cloud`` processes against a Mosquitto
  per pair and one model server (their CPU not counted), their configs differing only in
  ``[monitor] enabled``, fed the same ``--consumer-reports`` reports (24 simulated
  pumps, 8 reports per message) after a warm-up of ``--warmup-reports``; per run the
  utime + stime of the consumer's process. Median of ``--pairs`` pairs (which one is fed
  first alternating) after one pair not counted (target <= 1.05); ``--control-pairs``
  A/A pairs (both off) among them give ``cpu_control_ratio``, the harness's own bias. By
  default a pair's two consumers are fed in turn, ``--chunks`` chunks each (``--mode
  interleaved``): the one measured runs alone with the broker and the model server while
  the other idles, and the shared host's changes of speed, which move one run of several
  seconds by up to ~15 % against the next, hit both alike (one run after the other,
  ``--mode sequential``, spread single pairs over 0.84-1.29 on this host). ``--mode
  concurrent`` runs them at once (each pays for sharing the cores with the other, which
  dilutes the ratio: a lower bound).
* ``store_path_overhead_ratio``: the same ratio for the consumer's store path alone, in
  this process: batches of 64 reports decoded from their wire bytes
  (``parse_message``), the request encoded and a recorded answer decoded, result rows
  built and committed with the alarm tracker to a fresh SQLite store
  (``synchronous=normal``); "on" adds ``Histograms.observe`` and ``prepare``, the commit hook and
  ``committed``, and the per-batch usage counts, written with the flush. On and off step
  batch by batch in turn (the order alternating), so both see the same machine; median
  of ``--pairs`` pairs after one not counted. Each run ends with one histogram flush
  (the consumer flushes every 10 s, i.e. once per ~20-40k reports, here once per
  ``--cpu-reports``), and MQTT, the endpoint's HTTP and the consumer's queues are left
  out: an upper bound of the real ratio, kept as the figure that tracks the monitor's
  own cost.
* ``monitor_run_s``: ``cloud.monitor.run.monitor`` over one day of a 200-channel
  fleet's histograms (1 report per channel and second, 4 regimes, healthy and fault
  partitions; cells drawn as multinomial counts) against the day before, read from a
  SQLite store (target <= 10 s).
* ``false_drift_rate``: synthetic pumps of one distribution (``tests.infra``'s
  ``synth_reports``: 16 healthy pumps and 2 with an outer-race fault, each report its
  own random 1 s signal), scored by the built-in bundle (which calls them healthy or
  names the fault); the live reference is one pool of ``--pool`` reports, the windows
  are ``--windows`` random subsets of 300 reports of a second pool drawn with other
  seeds; the share of windows with unexplained drift (target <= 0.01). The windows
  overlap (one pool): the rate is per window, not over independent fleets. (The
  built-in bundle calls most of ``models.training``'s random machines a fault, which
  leaves too few unexplained results to test: that is the trained bundle's data.)
* ``constructed_shift_detected``: the same pumps with a structural resonance at 3 kHz
  no reference pump has (``resonant_reports``; the model still calls them healthy): 1
  when the run says drift, with the features it names (must be 1).
* ``real``: the real recordings (CWRU, IMS: measuring only) replayed and scored as
  above, against the simulated reference: status, the unexplained features and the
  worst distances per data set. A figure, not a pass/fail.

The last line printed is one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

import dsp
from bench._consumer_cpu import MODES, consumer_overhead
from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.monitor.drift import Thresholds
from cloud.monitor.histograms import (
    FEATURES,
    SPECTRUM_BANDS,
    UNEXPLAINED,
    Histograms,
)
from cloud.monitor.run import evaluate, monitor
from cloud.monitor.usage import Usage, reports_by_version_pump
from cloud.consumer._validate import parse_message
from cloud.store import (
    ArchivedReport,
    Commit,
    EvidenceRow,
    HistCell,
    ResultRow,
    UsageCell,
    make_store,
)
from dsp.results import InvocationRequest, InvocationResponse
from models.serving.bundle import builtin_bundle
from models.serving.handler import score
from models.training.train_sim import CLASSES, pump_reports, random_pump
from tests.infra.model_server import resonant_reports, synth_reports

HOUR = 3600 * 1_000_000_000
DAY = 24 * HOUR
NB = len(SPECTRUM_BANDS)


def say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------------------------


def simulated(n: int, seconds: int, seed: int, *, rpm: tuple[float, float] | None = None,
              classes: Sequence[str] = CLASSES) -> list[list[dsp.Report]]:
    """Reports of ``n`` random machines (classes in turn), per pump (the CPU runs')."""
    rng = np.random.default_rng(seed)
    out: list[list[dsp.Report]] = []
    i = 0
    while len(out) < n:
        cls = classes[len(out) % len(classes)]
        cfg, gain = random_pump(rng, cls, split="train", name=f"p{seed}-{i}")
        i += 1
        if rpm is not None and not rpm[0] <= cfg.speed.rpm <= rpm[1]:
            continue
        out.append(pump_reports(cfg, seed=int(rng.integers(2**31)), seconds=seconds,
                                gain=gain, channels=(0,)))
    return out


def scored(reports: Sequence[dsp.Report], t0_ns: int = 0) -> list[ResultRow]:
    """Result rows as the consumer stores them, scored by the built-in bundle."""
    bundle = builtin_bundle()
    rows: list[ResultRow] = []
    for k in range(0, len(reports), 256):
        part = reports[k:k + 256]
        for rep, r in zip(part, score(bundle, list(part)).results, strict=True):
            rows.append(ResultRow(
                device=rep.device, epoch=rep.epoch, seq=rep.seq, site=rep.site, pump=rep.pump,
                channel=rep.channel, t0_ns=t0_ns + rep.t0_ns, condition=r.condition,
                probabilities=r.probabilities, anomaly_score=r.anomaly_score,
                anomaly_threshold=r.anomaly_threshold, anomalous=r.anomalous,
                baseline=r.baseline, iso_zone=r.iso_zone, velocity_rms=r.velocity_rms,
                rpm=r.rpm, evidence=[EvidenceRow(e.name, e.value, e.note) for e in r.evidence],
                model_version="builtin/1", target="pumpwatch", published_ns=None,
                received_ns=0, extra={"decided_by": r.decided_by or "classifier"},
            ))
    return rows


def unique(reports: list[dsp.Report]) -> list[dsp.Report]:
    """Give every report its own identity (the simulator numbers each pump from 0)."""
    return [msgspec.structs.replace(r, device=f"d-{r.pump}", epoch=1, seq=i)
            for i, r in enumerate(reports)]


def cells_of(reports: Sequence[dsp.Report], rows: Sequence[ResultRow]) -> list[HistCell]:
    h = Histograms(flush_s=0)
    h.prepare([h.observe(reports, rows)])
    return h(rows)


# -- cpu overhead -------------------------------------------------------------------------------


def wire(reports: Sequence[dsp.Report], root: str = "pumpwatch") -> list[tuple[str, bytes]]:
    """MQTT messages of ``reports``: 8 of one device per message (a gateway's channels),
    ``{root}/devices/{device}/reports``; devices in turn."""
    by_device: dict[str, list[bytes]] = {}
    for r in reports:
        by_device.setdefault(r.device, []).append(dsp.encode_report(r))
    per = {d: [dsp.encode_batch(d, raws[i:i + 8]) for i in range(0, len(raws), 8)]
           for d, raws in by_device.items()}
    out: list[tuple[str, bytes]] = []
    for k in range(max(map(len, per.values()), default=0)):
        out += [(f"{root}/devices/{d}/reports", msgs[k]) for d, msgs in per.items()
                if k < len(msgs)]
    return out


class _StorePath:
    """The consumer's per-report CPU path, one batch per :meth:`step` (see the module
    docstring), over its own fresh SQLite store."""

    def __init__(self, messages: list[tuple[str, bytes]], response: bytes, *, on: bool,
                 tag: int, work: Path) -> None:
        self.messages, self.response, self.on, self.tag = messages, response, on, tag
        self.store = make_store(f"sqlite:///{work / f'o{tag}.db'}", synchronous="normal")
        self.tracker = AlarmTracker(AlarmConfig())
        self.hist = Histograms() if on else None  # the consumer's default: a flush every 10 s
        self.usage = Usage() if on else None  # per batch, written with the flush (as the consumer)
        self.req_enc = msgspec.msgpack.Encoder()
        self.resp_dec = msgspec.msgpack.Decoder(InvocationResponse)
        self.reports = 0
        self.cpu_s = 0.0

    @property
    def batches(self) -> int:
        return -(-len(self.messages) // 8)

    async def step(self, b: int) -> None:
        """Batch ``b``: 8 messages of 8 reports, one batch of 64; its CPU time added."""
        t0 = time.process_time()
        tag, messages, hist, usage = self.tag, self.messages, self.hist, self.usage
        k = 8 * b
        accepted = []
        for topic, payload in messages[k:k + 8]:
            accepted += parse_message(topic, payload, root="pumpwatch", max_payload=128 * 1024,
                                      received_ns=time.time_ns()).accepted
        reps = [a.report for a in accepted]
        self.req_enc.encode(InvocationRequest(v=1, reports=reps))  # what the endpoint is sent
        resp = self.resp_dec.decode(self.response)  # its answer (a batch of the same size)
        rows, archive = [], []
        for a, r in zip(accepted, resp.results, strict=False):
            rep = a.report
            rows.append(ResultRow(
                device=rep.device, epoch=rep.epoch + tag, seq=rep.seq, site=rep.site,
                pump=rep.pump, channel=rep.channel, t0_ns=rep.t0_ns, condition=r.condition,
                probabilities=r.probabilities, anomaly_score=r.anomaly_score,
                anomaly_threshold=r.anomaly_threshold, anomalous=r.anomalous,
                baseline=r.baseline, iso_zone=r.iso_zone, velocity_rms=r.velocity_rms,
                rpm=r.rpm, evidence=[EvidenceRow(e.name, e.value, e.note) for e in r.evidence],
                model_version=resp.model_version, target="pumpwatch", published_ns=None,
                received_ns=time.time_ns(), extra={"decided_by": r.decided_by or "classifier"}))
            archive.append(ArchivedReport(
                device=rep.device, epoch=rep.epoch + tag, seq=rep.seq, site=rep.site,
                pump=rep.pump, channel=rep.channel, t0_ns=rep.t0_ns, received_ns=0,
                report=a.raw))
        if hist is not None and b == self.batches - 1:
            hist.flush_next()  # the run's counts are written, as a flush would
        flush = hist is not None and hist.prepare([hist.observe(reps, rows)])
        cells: list[UsageCell] = []
        if usage is not None:
            batch = Usage()
            batch.invocation(target="pumpwatch", latency_s=0.005,
                             reports=reports_by_version_pump(rows))
            usage.merge(batch)
            if flush:  # written with the flush, as the consumer
                cells = usage.take()
        await self.store.commit(Commit(results=rows, archive=archive, usage=cells),
                                alarms=self.tracker.evaluate, histograms=hist)
        if hist is not None:
            hist.committed()
        self.reports += len(rows)
        self.cpu_s += time.process_time() - t0


async def _store_pair(messages: list[tuple[str, bytes]], response: bytes, *, tag: int,
                      work: Path) -> tuple[float, float]:
    """CPU seconds per report (on, off) of one store path each, stepped batch by batch in
    turn (the order alternating per batch): both see the same machine at the same time."""
    on = _StorePath(messages, response, on=True, tag=tag, work=work)
    off = _StorePath(messages, response, on=False, tag=tag + 1, work=work)
    for s in (on, off):
        await s.store.open()
    for b in range(on.batches):
        for s in ((on, off) if b % 2 == 0 else (off, on)):
            await s.step(b)
    for s in (on, off):
        await s.store.close()
    return on.cpu_s / on.reports, off.cpu_s / off.reports


def store_path_overhead(reports: list[dsp.Report], pairs: int, work: Path,
                        quiet: bool) -> dict[str, Any]:
    messages = wire(reports)
    response = msgspec.msgpack.encode(score(builtin_bundle(), reports[:64]))
    ratios, on_s, off_s = [], [], []
    # warm-up, not counted: the process's first run pays one-off costs
    asyncio.run(_store_pair(messages, response, tag=0, work=work))
    for p in range(pairs):
        on, off = asyncio.run(_store_pair(messages, response, tag=2 * p + 2, work=work))
        ratios.append(on / off)
        on_s.append(on)
        off_s.append(off)
        say(f"store path pair {p}: on {on * 1e6:.0f} us/report, off {off * 1e6:.0f}: "
            f"{ratios[-1]:.3f}", quiet)
    return {"store_path_overhead_ratio": round(statistics.median(ratios), 4),
            "store_path_ratios": [round(r, 4) for r in ratios],
            "store_path_us_per_report_on": round(statistics.median(on_s) * 1e6, 1),
            "store_path_us_per_report_off": round(statistics.median(off_s) * 1e6, 1),
            "store_path_pairs": pairs, "store_path_reports_per_run": len(reports)}


# -- monitor run time ---------------------------------------------------------------------------


def _day_cells(rng: np.random.Generator, day0: int, channels: int) -> list[HistCell]:
    """One day of a fleet's histograms: per hour, regime and partition, multinomial counts
    of a fixed per-feature distribution, and spectrum sums of a fixed Gaussian."""
    regimes = ("900-1500rpm", "1500-2100rpm", "2100-3300rpm", ">=3300rpm")
    mix = np.random.default_rng(7).normal(size=(NB, 4))
    mu = np.full(NB, -60.0)
    cov = mix @ mix.T * 9 + np.eye(NB) * 0.1
    out: list[HistCell] = []
    per = channels * 3600 // len(regimes)
    for h in range(24):
        for rg in regimes:
            for health, n in (("healthy", int(per * 0.95)), ("fault", per - int(per * 0.95))):
                key = ("fleet/1", "pumpwatch", rg, day0 + h * HOUR, health)
                for f in FEATURES:
                    centers = np.arange(f.bins + 2)
                    p = np.exp(-0.5 * ((centers - f.bins / 2) / (f.bins / 12)) ** 2)
                    counts = rng.multinomial(n, p / p.sum())
                    out += [(*key, f.name, int(b), float(c)) for b, c in enumerate(counts) if c]
                out += [(*key, "n", 0, float(n)), (*key, "class:healthy", 0, float(n)),
                        (*key, "decided_by:classifier", 0, float(n)), (*key, "spec_n", 0, float(n))]
                s = n * mu + rng.normal(0, 1, NB) * np.sqrt(n)
                c2 = n * (cov + np.outer(mu, mu))
                out += [(*key, "spec_sum", i, float(v)) for i, v in enumerate(s)]
                iu = np.triu_indices(NB)
                out += [(*key, "spec_cross", int(i * NB + j), float(c2[i, j]))
                        for i, j in zip(*iu, strict=True)]
    return out


async def _run_time(work: Path, channels: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    store = make_store(f"sqlite:///{work / 'day.db'}", synchronous="off")
    await store.open()
    day0 = 1_780_000_000 * 1_000_000_000 // DAY * DAY
    n_cells = 0
    for d in range(2):
        cells = _day_cells(rng, day0 + d * DAY, channels)
        n_cells += len(cells)

        def hook(rows: Sequence[ResultRow], cells: list[HistCell] = cells) -> list[HistCell]:
            return cells
        row = ResultRow(device="x", epoch=1, seq=d, site="s", pump="p", channel="c", t0_ns=0,
                        condition="healthy", probabilities={}, anomaly_score=0.0,
                        anomaly_threshold=1.0, anomalous=False, baseline="", iso_zone="A",
                        velocity_rms=1.0, rpm=None, evidence=[], model_version="fleet/1",
                        target="pumpwatch", published_ns=None, received_ns=0)
        await store.commit(Commit(results=[row]), histograms=hook)
    t0 = time.perf_counter()
    rep = await monitor(store, "fleet/1", since_ns=day0 + DAY, until_ns=day0 + 2 * DAY)
    elapsed = time.perf_counter() - t0
    await store.close()
    return {"monitor_run_s": round(elapsed, 3), "monitor_run_cells_per_day": n_cells // 2,
            "monitor_run_reports": rep.usage["reports"], "monitor_run_status": rep.status,
            "monitor_run_channels": channels}


# -- drift figures ------------------------------------------------------------------------------


def pool(n: int, seed: int, *, seq0: int = 0) -> list[dsp.Report]:
    """Healthy synthetic pumps (16) and two with an outer-race fault: one distribution."""
    healthy = synth_reports(n, pumps=tuple(f"h{i}" for i in range(16)), seed=seed,
                            device="bench", seq0=seq0)
    faulty = synth_reports(max(16, n // 8), pumps=("f0", "f1"), seed=seed + 1, outer=6.0,
                           device="bench", seq0=seq0 + n)
    return healthy + faulty


def false_drift(n: int, windows: int, seed: int) -> tuple[dict[str, Any], list[HistCell]]:
    ref_reps = pool(n, seed)
    live_reps = pool(n, seed + 10, seq0=10 * n)
    ref = cells_of(ref_reps, scored(ref_reps))
    live_rows = scored(live_reps)
    rng = np.random.default_rng(seed)
    size = min(300, len(live_reps) * 3 // 4)
    drifted = 0
    named: dict[str, int] = {}
    for _ in range(windows):
        idx = np.sort(rng.choice(len(live_reps), size=size, replace=False))
        reps = [live_reps[i] for i in idx]
        rows = [live_rows[i] for i in idx]
        rep = evaluate("builtin/1", cells_of(reps, rows), since_ns=0, until_ns=1,
                       reference_cells=ref)
        if rep.status == "drift":
            drifted += 1
            for f in rep.unexplained:
                named[f] = named.get(f, 0) + 1
    return {"false_drift_rate": round(drifted / windows, 4), "false_drift_windows": windows,
            "false_drift_window_reports": size, "false_drift_features": named,
            "in_distribution_reports": len(ref_reps) + len(live_reps),
            "in_distribution_unexplained_share": round(
                sum(1 for r in live_rows if _unexplained(r)) / len(live_rows), 3)}, ref


def _unexplained(r: ResultRow) -> bool:
    from cloud.monitor.histograms import health

    return health(r) in UNEXPLAINED


def constructed_shift(n: int, seed: int, ref: list[HistCell]) -> dict[str, Any]:
    """A structural resonance (3 kHz, broadband excited) no reference pump has, on pumps
    the model still calls healthy."""
    reps = resonant_reports(n, pumps=tuple(f"r{i}" for i in range(16)), seed=seed,
                            device="bench", seq0=50 * n)
    rep = evaluate("builtin/1", cells_of(reps, scored(reps)), since_ns=0, until_ns=1,
                   reference_cells=ref, thresholds=Thresholds())
    return {"constructed_shift_detected": int(rep.status == "drift"),
            "constructed_shift_features": rep.unexplained[:8],
            "constructed_shift_worst_js": round(max((t.js for t in rep.features), default=0.0), 3)}


def real_figures(reference: list[HistCell]) -> dict[str, Any]:
    from bench.labels import replay_reports
    from bench.real_streams import cwru_streams, ims_streams
    from bench.real_data import MISSING, real_data_dir

    real = real_data_dir()
    if real is None:
        return {"real": MISSING}
    out: dict[str, Any] = {}
    for name, streams in (("cwru", cwru_streams(real)), ("ims", ims_streams(real))):
        reps: list[dsp.Report] = []
        for s in streams:
            reps += replay_reports(s.recordings, pump=s.pump, asset=s.asset, rpm=s.rpm,
                                   full_scale=s.full_scale).reports
        reps = unique(reps)
        rows = scored(reps)
        # the shared recordings are short: tested from 20 reports (the default needs 200)
        rep = evaluate("builtin/1", cells_of(reps, rows), since_ns=0, until_ns=1,
                       reference_cells=reference, thresholds=Thresholds(min_count=20))
        worst = sorted(rep.features, key=lambda t: -t.js)[:5]
        out[name] = {"reports": len(reps), "status": rep.status,
                     "unexplained": rep.unexplained[:10],
                     "worst": {t.feature: round(t.js, 3) for t in worst},
                     "spectrum_reconstruction": [round(s.reconstruction_ratio, 2)
                                                 for s in rep.spectrum],
                     "unexplained_share": round(sum(map(_unexplained, rows)) / len(rows), 3)}
    return {"real": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--pumps", type=int, default=24)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--pool", type=int, default=800, help="healthy reports per drift pool")
    ap.add_argument("--cpu-reports", type=int, default=4096,
                    help="reports per CPU run (the fleet's reports, repeated)")
    ap.add_argument("--consumer-reports", type=int, default=16384,
                    help="reports per run of the real consumer (after its warm-up)")
    ap.add_argument("--warmup-reports", type=int, default=1024,
                    help="reports per consumer run before its CPU is read (not counted)")
    ap.add_argument("--mode", choices=MODES, default="interleaved",
                    help="how a pair's two consumers are run (bench._consumer_cpu): fed in "
                    "turn chunk by chunk (default), one after the other, or at once")
    ap.add_argument("--control-pairs", type=int, default=0,
                    help="control pairs (both consumers with monitoring off) run between the "
                    "first pairs: cpu_control_ratio, the harness's own bias and spread")
    ap.add_argument("--chunks", type=int, default=8,
                    help="chunks of the --consumer-reports the interleaved mode feeds in turn")
    ap.add_argument("--no-consumer", action="store_true", help="skip the real consumer runs")
    ap.add_argument("--no-store-path", action="store_true",
                    help="skip the in-process store path runs")
    ap.add_argument("--only-cpu", action="store_true", help="stop after the CPU figures")
    ap.add_argument("--channels", type=int, default=200)
    ap.add_argument("--no-real", action="store_true")
    args = ap.parse_args()
    quiet = False
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        say("simulating the in-distribution fleet", quiet)
        pumps = simulated(args.pumps, args.seconds, 1)
        flat = unique([r for p in pumps for r in p])
        reps = (flat * (-(-args.cpu_reports // len(flat))))[:args.cpu_reports]
        gc.collect()
        gc.freeze()  # the fixture lives to the end: not scanned by every collection
        if not args.no_consumer:
            say("the real consumer, monitoring on and off", quiet)
            creps = unique((flat * (-(-args.consumer_reports // len(flat))))
                           [:args.consumer_reports])
            warm = [msgspec.structs.replace(r, epoch=2) for r in creps[:args.warmup_reports]]
            step = -(-len(creps) // max(1, args.chunks))
            parts = [creps[k:k + step] for k in range(0, len(creps), step)]
            tail = [msgspec.structs.replace(r, epoch=3) for r in parts[0]]
            out |= consumer_overhead(
                work, warmup=(wire(warm, ""), len(warm)),
                chunks=[(wire(c, ""), len(c)) for c in parts], tail=(wire(tail, ""), len(tail)),
                pairs=args.pairs, mode=args.mode, control_pairs=args.control_pairs,
                say=lambda m: say(m, quiet))
        if not args.no_store_path:
            say("the store path in process, monitoring on and off", quiet)
            out |= store_path_overhead(unique(reps), args.pairs, work, quiet)
        if args.only_cpu:
            print(json.dumps(out))
            return
        say("monitor run over one day", quiet)
        out |= asyncio.run(_run_time(work, args.channels))
        say("false drift", quiet)
        got, ref = false_drift(args.pool, args.windows, 5)
        out |= got
        say("constructed shift", quiet)
        out |= constructed_shift(args.pool // 2, 11, ref)
        if not args.no_real:
            say("real recordings", quiet)
            out |= real_figures(ref)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
