"""Edge agent benchmark: how many 25.6 kHz channels one core sustains end to end.

``python -m bench.edge --json`` runs the whole agent (acquisition ring and its
interval framing, dsp with every feature and the envelope, report encoding, spool with fsync,
MQTT publishing and PUBACKs) pinned to one core, against a local Mosquitto
pinned to the other core, fed from pre-generated samples in memory as fast as
it will go. The last line printed is one JSON object:

* ``realtime_channels_per_core``: channels x stream seconds / CPU seconds of
  the agent process (all its threads, pinned to one core), from start until the
  last report is PUBACKed; ``realtime_channels_per_core_wall`` divides by wall
  time instead (lower when other work shares the core);
* ``reports_per_s``, ``published``, ``acked`` (reports), ``messages``;
* ``rss_mb``: peak resident memory of the agent's process when the agent
  stops (the dsp-only and FFT-limit passes run after it), at ``channels``.
  The process is the agent's alone: the broker, its test helper and the PKI
  code (``cryptography``) run in the parent, so the imports are the agent's
  (plus ``bench.edge`` itself); the bench signal stands in for a sensor
  driver and holds about 1 MB (``source_mb``, inside ``rss_mb``); the ring is
  sized as a live agent's (one interval plus ``pipeline.ring_s``, ``--ring
  live``), though the source waits instead of dropping samples;
* ``dsp_channels_per_core``: the same data through ``dsp.analyze`` + encoding
  alone (what the pipeline costs on top of the DSP is the difference).

As the real agent runs: the malloc tuning of ``edge/run.py``
(``edge.memory.keep_large_blocks``) is applied in every run, the envelope is
on, and the signal changes: every channel carries bearing-like impacts
ringing at one of two resonances (3.2 or 7.5 kHz), and each channel's
resonance moves every ``--band-change-s`` stream seconds (staggered across
channels), so the band tracker re-selects bands at a steady rate. The DSP runs
in the agent's default channel chunks (``pipeline.chunk_channels``, 32) unless
``--chunk-channels`` says otherwise (printed as ``chunk_channels``).

One invocation (no ``--single``) runs, each ``--repeat`` times in fresh
processes, medians reported: ``channels`` with TLS off and on
(``realtime_channels_per_core``/``_tls``, ``rss_mb``/``rss_mb_tls``), and 32
and 1024 channels with TLS off for ``cpu_s_per_channel_s_32/_256/_1024``
(agent CPU seconds per channel-second: flat when the per-channel cost does
not grow with the channel count). ``fft_limit_channels_per_core`` is measured
in the same invocation: the FFTs one report interval of the agent's DSP
performs (recorded by wrapping ``scipy.fft`` during a dsp-only pass: the
same shapes and precisions) are timed alone on the agent's core, and the
channel-seconds they cover divided by that time is the ceiling an agent doing
nothing but its FFTs would reach; ``limit_share`` is the realtime figure over
it, ``fft_mflop_per_channel_s`` the work (5/2 N log2 N per real transform,
5 N log2 N per complex one) and ``fft_gflops`` the core's rate on it.

``--single`` runs once in this process; without ``--port`` it starts its own
broker, whose helper's imports (and with ``--tls`` ``cryptography``) then count
in ``rss_mb`` (``broker_helper`` says so).

The machine is shared: read the load printed with the figures (``loadavg``).
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any


import scipy.fft

import dsp

from edge.agent import Agent, ring_capacity
from edge.config import EdgeConfig, config_from_dict
from edge.memory import keep_large_blocks
from edge.pipeline import ReportBuilder
from edge.ring import SampleRing
from simulator.source import Block

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
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
    chunk_channels: int | None = None,
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
                # no consumer behind the bench's broker confirms anything: PUBACK settles
                "confirm": False,
                "transport": transport,
                **({"tls": tls} if tls else {}),
            },
            "spool": {"path": str(tmp / "spool")},
            "status": {"interval_s": 5.0},
            # the agent's default unless asked (--chunk-channels)
            "pipeline": {} if chunk_channels is None else {"chunk_channels": chunk_channels},
            "pumps": pumps,
        },
        source="bench",
    )


class ShiftingSource:
    """The bench signal (module doc): per channel a 1x line, blade pass, noise and
    impacts at about BPFO of a 6205 ringing at one of two resonances.

    Precomputed as ``VARIANTS`` rows of a 0.25 s loop per resonance; channel ``c``
    plays row ``c % VARIANTS``, shifted in time by its own offset, and reads from the
    resonance its schedule says. So the source holds about 1 MB at any channel count,
    as a sensor driver's buffers would (a copy of 2 x 0.25 s of every channel would be
    13 MB at 256 channels, memory of the bench, not of the agent). Each block is one
    reused buffer: the agent copies a block into its ring before it asks for the next.
    """

    VARIANTS = 16

    def __init__(
        self,
        cfg: EdgeConfig,
        *,
        seconds: float,
        change_s: float = 4.0,
        seed: int = 0,
    ) -> None:
        self._names = tuple(ch.source for _p, ch in cfg.channels)
        channels, fs, block = len(self._names), cfg.report.fs, cfg.source.block_size
        self._fs, self._total, self._block, self._change = fs, round(seconds * fs), block, change_s
        n = round(0.25 * fs)
        n -= n % block
        self._n = n
        rng = np.random.default_rng(seed)
        t = np.arange(n) / fs
        f1 = round(49.2 * n / fs) * fs / n  # whole cycles per loop
        period = int(fs / (4 * f1 * 3.58)) or 1  # impacts at ~3.58 x 4 x 1x: whole per loop
        taps = np.arange(int(0.004 * fs)) / fs
        rows = min(self.VARIANTS, channels)
        self._tables = []  # per resonance (rows, n + block): a block never wraps
        for fr in (3200.0, 7500.0):
            ring = (np.exp(-taps * 900.0) * np.sin(2 * np.pi * fr * taps)).astype(np.float32)
            tab = np.empty((rows, n + block), dtype=np.float32)
            for v in range(rows):
                imp = np.zeros(n, dtype=np.float32)
                imp[(v * 7) % period :: period] = 4.0
                row = tab[v, :n]
                row[:] = rng.standard_normal(n, dtype=np.float32)
                row *= 0.3
                row += np.convolve(np.concatenate([imp, imp[: len(ring) - 1]]), ring, mode="valid")[
                    :n
                ]
                row += (2.0 * np.sin(2 * np.pi * f1 * t + v)).astype(np.float32)
                row += (0.6 * np.sin(2 * np.pi * 6 * f1 * t + 2 * v)).astype(np.float32)
            tab[:, n:] = tab[:, :block]
            self._tables.append(tab)
        self._row = [c % rows for c in range(channels)]
        self._shift = [(c * 977) % n for c in range(channels)]
        self._out = np.empty((channels, block), dtype=np.float32)
        # channel c's resonance flips every change_s, its schedule offset by c/channels
        self._offset = (np.arange(channels) / max(1, channels)) * change_s

    @property
    def channels(self) -> tuple[str, ...]:
        return self._names

    @property
    def fs(self) -> float:
        return self._fs

    @property
    def nbytes(self) -> int:
        """What the source holds (its tables and the block buffer)."""
        return sum(t.nbytes for t in self._tables) + self._out.nbytes

    def blocks(self) -> Iterator[Block]:
        a, b = self._tables
        out, rows, shift, n_loop = self._out, self._row, self._shift, self._n
        start = time.time_ns()
        i = 0
        while i < self._total:
            n = min(self._block, self._total - i)
            use_b = ((i / self._fs + self._offset) // self._change) % 2 == 1
            for c, (r, sh, on_b) in enumerate(zip(rows, shift, use_b.tolist(), strict=True)):
                j = (i + sh) % n_loop
                out[c, :n] = (b if on_b else a)[r, j : j + n]
            yield Block(out[:, :n], start + round(i * 1e9 / self._fs), self._fs, self._names)
            i += n


def dsp_only(cfg: EdgeConfig, change_s: float, intervals: int = 8) -> float:
    """Channels per second through analyze + make_report + encode alone (64 channels:
    in the run's chunks the per-channel cost is the same, and it keeps the peak RSS
    down), on the run's signal (its resonances moving every ``change_s``)."""
    cfg = make_config(
        Path(cfg.spool.path), cfg.mqtt.port, 64, 1.0, chunk_channels=cfg.pipeline.chunk_channels
    )
    warm = 1 + dsp.BandTracking().warmup  # plans, caches and the tracker's first searches
    gen = _intervals(cfg, intervals + warm, change_s)
    b = ReportBuilder(cfg, 1)
    spent = 0.0
    for k, x in enumerate(gen):
        t = time.process_time()
        b.build(x, k * 10**9)
        if k >= warm:
            spent += time.process_time() - t
    return len(b.specs) * intervals / spent


def _intervals(cfg: EdgeConfig, k: int, change_s: float) -> Iterator[np.ndarray]:
    """``k`` consecutive report intervals of the bench signal, one at a time, so the
    peak RSS stays the agent's. Each block is copied out of the source's one reused
    buffer (as the agent's ring does)."""
    n = cfg.report.interval_samples
    src = ShiftingSource(cfg, seconds=k * cfg.report.interval_s, change_s=change_s)
    parts: list[np.ndarray] = []
    have = 0
    for blk in src.blocks():
        parts.append(blk.samples.copy())
        have += blk.samples.shape[1]
        if have >= n:
            yield np.concatenate(parts, axis=1)[:, :n]
            parts, have = [], 0


def fft_limit(cfg: EdgeConfig, intervals: int, change_s: float) -> dict[str, float]:
    """Record the FFTs of the agent's DSP over ``intervals`` reports of one channel chunk
    (as many channels as the run's ``dsp.analyze`` calls take, so the transforms have the
    agent's shapes; resonances moving as in the run), then time exactly those alone."""
    chunk = min(cfg.pipeline.chunk_channels, len(cfg.channels))
    cfg = make_config(Path(cfg.spool.path), cfg.mqtt.port, chunk, 1.0, chunk_channels=chunk)
    gen = _intervals(cfg, intervals, change_s)
    b = ReportBuilder(cfg, 1)
    b.build(next(gen), 0)
    calls: list[tuple[str, tuple[int, ...], np.dtype[Any], int | None]] = []
    real = {name: getattr(scipy.fft, name) for name in ("rfft", "irfft", "fft", "ifft")}

    def wrap(name: str) -> Any:
        fn = real[name]

        def rec(a: Any, n: int | None = None, axis: int = -1, **kw: Any) -> Any:
            arr = np.asarray(a)
            calls.append((name, arr.shape, arr.dtype, n))
            return fn(a, n=n, axis=axis, **kw)

        return rec

    for name in real:
        setattr(scipy.fft, name, wrap(name))
    try:
        for k, x in enumerate(gen):
            b.build(x, (k + 1) * 10**9)
    finally:
        for name, fn in real.items():
            setattr(scipy.fft, name, fn)
    flop = 0.0
    inputs = []
    counts: dict[tuple[str, tuple[int, ...], np.dtype[Any], int | None], int] = {}
    for call in calls:
        counts[call] = counts.get(call, 0) + 1
    for (name, shape, dtype, n), times in counts.items():
        length = n if n is not None else shape[-1]
        batch = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        if name == "irfft":
            length = n if n is not None else 2 * (shape[-1] - 1)
        per = (2.5 if name in ("rfft", "irfft") else 5.0) * length * np.log2(max(2, length))
        flop += times * batch * per
        rng = np.random.default_rng(0)
        arr = (
            rng.standard_normal(shape).astype(dtype)
            if dtype.kind != "c"
            else (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
        )
        inputs.append((real[name], arr, n, times))
    best = 0.0  # each distinct transform: its best of 3 timings, times how often it ran
    for fn, arr, n, times in inputs:
        fn(arr, n=n, axis=-1)  # plan warm
        one = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            fn(arr, n=n, axis=-1)
            one = min(one, time.perf_counter() - t)
        best += one * times
    ch_s = chunk * (intervals - 1) * cfg.report.interval_s
    return {
        "fft_limit_channels_per_core": round(ch_s / best, 1),
        "fft_mflop_per_channel_s": round(flop / ch_s / 1e6, 2),
        "fft_gflops": round(flop / best / 1e9, 2),
        "fft_calls_per_interval": round(len(calls) / (intervals - 1), 1),
    }


CORES = cores()
BENCH_ONLY = ("cloud.pki", "cryptography", "tests.infra.mosquitto")


def start_broker(tmp: Path, *, tls: bool) -> tuple[Mosquitto, dict[str, str] | None]:
    """A fresh Mosquitto; with ``tls`` only the mTLS listener and role grants of the
    local stack, and the bench device's certificate (the files for ``[mqtt.tls]``)."""
    from tests.infra.mosquitto import Mosquitto

    if not tls:
        broker = Mosquitto(tmp / "mosquitto", persistence=False, max_inflight_messages=1000)
        return broker.start(), None
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
    return broker.start(), {"ca": str(tmp / "pki" / "ca.crt"), "cert": str(crt), "key": str(key)}


def run_once(
    channels: int,
    seconds: float,
    log: logging.Logger,
    *,
    port: int | None = None,
    tls_files: dict[str, str] | None = None,
    tls: bool = False,
    transport: str = "paho",
    change_s: float = 32.0,
    ring: str = "live",
    chunk_channels: int | None = None,
) -> dict[str, Any]:
    """One agent run in this process. With ``port``, against a broker someone else
    started (``run_child``: the broker, its test helper and the PKI code stay out of
    the measured process); without, this process starts one (its helper's imports,
    and with TLS ``cryptography``, then count in ``rss_mb``: ``broker_helper``)."""
    agent_core, other = CORES
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as d:
        tmp = Path(d)
        broker = None
        if port is None:
            broker, tls_files = start_broker(tmp, tls=tls or transport == "awsiot")
            port = broker.port
            if other is not None and broker.pid is not None:
                os.sched_setaffinity(broker.pid, {other})
        try:
            os.sched_setaffinity(0, {agent_core})  # threads started from now on inherit it
            malloc_tuned = keep_large_blocks()  # as edge/run.py does before the agent starts
            cfg = make_config(
                tmp, port, channels, seconds, tls=tls_files, transport=transport,
                chunk_channels=chunk_channels,
            )
            source = ShiftingSource(cfg, seconds=seconds, change_s=change_s)
            agent = Agent(
                cfg,
                source,
                exit_when_drained=True,
                overflow="block",
                drain_timeout_s=120,
            )
            if ring == "live":  # sized as a live agent's ring; the bench source still waits
                agent.ring = SampleRing(channels, ring_capacity(cfg, "drop"), overflow="block")
            switches = [0]
            inner = agent.builder.build_part

            def counted(lo: int, *a: Any, **kw: Any) -> Any:
                before = [None if st is None else st.band for st in agent.builder.band_states]
                out = inner(lo, *a, **kw)
                switches[0] += sum(
                    1
                    for b0, st in zip(before, agent.builder.band_states, strict=True)
                    if b0 is not None and st is not None and st.band != b0
                )
                return out

            agent.builder.build_part = counted  # type: ignore[method-assign]
            stop = threading.Event()
            t0, c0 = time.perf_counter(), time.process_time()
            code = agent.run(stop)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0  # every agent thread, all on the pinned core
            # the agent's peak, before the dsp-only and FFT-limit passes below add theirs
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            dsp_rate = dsp_only(cfg, change_s)
            limit = fft_limit(cfg, max(2, min(33, round(seconds) + 1)), change_s)
        finally:
            if broker is not None:
                broker.stop()
    pub = agent.publisher.stats
    produced = agent.spool.stats.appended
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
        "cpu_s_per_channel_s": round(cpu / (channels * seconds), 7),
        "band_searches": int(sum(s.searches for s in agent.builder.band_states if s is not None)),
        "band_switches": switches[0],
        "search_share": round(
            sum(s.searches for s in agent.builder.band_states if s is not None) / max(1, produced),
            3,
        ),
        "malloc_tuned": malloc_tuned,
        **limit,
        "rss_mb": round(rss_mb, 1),
        "source_mb": round(source.nbytes / 2**20, 2),  # the bench signal, inside rss_mb
        "broker_helper": broker is not None,  # the test broker's helper in this process
        # what the agent itself never imports, loaded in the measured process
        "bench_only_modules": sorted(m for m in BENCH_ONLY if m in sys.modules),
        "ring_peak": agent.ring.stats.peak,
        "ring": ring,
        "ring_capacity": agent.ring.capacity,
        "spool_peak_bytes": agent.spool.stats.peak_bytes,
        "inflight_peak": pub.inflight_peak,
        "disconnects": agent.disconnects,
        "exit": code,
        "agent_core": agent_core,
        "broker_core": other,
        "tls": tls_files is not None,
        "transport": transport,
        "chunk_channels": cfg.pipeline.chunk_channels,
    }
    log.info("run: %s", out)
    return out


def run_child(
    channels: int, seconds: float, *, tls: bool, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One run in a fresh process against a broker started here, so the child's peak
    RSS is the agent's: its imports, ring, DSP, spool and MQTT client, and the bench
    signal (``source_mb``), but neither the broker's test helper nor the PKI code."""
    _agent_core, other = CORES
    with tempfile.TemporaryDirectory(prefix="bench-edge-broker-") as d:
        broker, files = start_broker(Path(d), tls=tls or "awsiot" in extra)
        try:
            if other is not None and broker.pid is not None:
                os.sched_setaffinity(broker.pid, {other})
            tls_args: tuple[str, ...] = ()
            if files is not None:
                tls_args = (
                    "--tls-ca",
                    files["ca"],
                    "--tls-cert",
                    files["cert"],
                    "--tls-key",
                    files["key"],
                )
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
                    "--port",
                    str(broker.port),
                    *tls_args,
                    *extra,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
            )
        finally:
            broker.stop()
    if p.returncode not in (0, 1) or not p.stdout.strip():
        raise RuntimeError(f"bench run failed ({p.returncode}): {p.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=32.0, help="stream seconds per run")
    ap.add_argument("--repeat", type=int, default=3, help="runs (fresh processes); median reported")
    ap.add_argument("--single", action="store_true", help="one run in this process")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    ap.add_argument("--tls", action="store_true", help="--single: mutual TLS + ACL broker")
    ap.add_argument(
        "--ring",
        choices=["live", "replay"],
        default="live",
        help="the ring's size: a live agent's (interval + pipeline.ring_s) or a "
        "replay's (interval + 0.25 s)",
    )
    ap.add_argument("--port", type=int, help="--single: a broker already running here")
    ap.add_argument("--tls-ca", help="--single with --port: the broker's CA (mTLS)")
    ap.add_argument("--tls-cert", help="--single with --port: the device certificate")
    ap.add_argument("--tls-key", help="--single with --port: the device key")
    ap.add_argument("--transport", choices=["paho", "awsiot"], default="paho")
    ap.add_argument(
        "--band-change-s",
        type=float,
        default=32.0,
        help="stream seconds between a channel's resonance moves (module doc)",
    )
    ap.add_argument(
        "--chunk-channels",
        type=int,
        help="channels per dsp.analyze call (default: the agent's, pipeline.chunk_channels)",
    )
    ap.add_argument(
        "--scales",
        default="32,1024",
        help="other channel counts for cpu_s_per_channel_s_N (TLS off)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("bench.edge")
    if args.single:
        files = None
        if args.tls_ca:
            files = {"ca": args.tls_ca, "cert": args.tls_cert or "", "key": args.tls_key or ""}
        r = run_once(
            args.channels,
            args.seconds,
            log,
            port=args.port,
            tls_files=files,
            tls=args.tls,
            transport=args.transport,
            change_s=args.band_change_s,
            ring=args.ring,
            chunk_channels=args.chunk_channels,
        )
        print(json.dumps(r))
        return 0 if r["published"] == r["acked"] and r["exit"] == 0 else 1
    key = "realtime_channels_per_core"
    common = (
        "--transport",
        args.transport,
        "--band-change-s",
        str(args.band_change_s),
        "--ring",
        args.ring,
        *(() if args.chunk_channels is None else ("--chunk-channels", str(args.chunk_channels))),
    )
    load = [round(x, 2) for x in os.getloadavg()]

    def median_run(channels: int, tls: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        runs = [
            run_child(channels, args.seconds, tls=tls, extra=common) for _ in range(args.repeat)
        ]
        for r in runs:
            print(
                f"{channels:5d} ch tls={tls!s:5} {r[key]:8.1f} ch/core  dsp-only "
                f"{r['dsp_channels_per_core']:8.1f}  fft limit "
                f"{r['fft_limit_channels_per_core']:8.1f}"
                f"  rss {r['rss_mb']:.0f} MB  {r['published']}/{r['acked']} published/acked  "
                f"load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        return sorted(runs, key=lambda r: r[key])[len(runs) // 2], runs

    plain, plain_runs = median_run(args.channels, False)
    tls, tls_runs = median_run(args.channels, True)
    every = plain_runs + tls_runs
    result = dict(plain)
    limit = statistics.median(r["fft_limit_channels_per_core"] for r in every)
    result.update(
        {
            "runs": [r[key] for r in plain_runs],
            "realtime_channels_per_core_tls": tls[key],
            "runs_tls": [r[key] for r in tls_runs],
            "rss_mb": max(r["rss_mb"] for r in plain_runs),
            "rss_mb_tls": max(r["rss_mb"] for r in tls_runs),
            "fft_limit_channels_per_core": round(limit, 1),
            "limit_share": round(plain[key] / limit, 3),
            "limit_share_tls": round(tls[key] / limit, 3),
            f"cpu_s_per_channel_s_{args.channels}": plain["cpu_s_per_channel_s"],
            "median_of": args.repeat,
        }
    )
    ok = all(r["published"] == r["acked"] and r["exit"] == 0 for r in every)
    for n in (int(v) for v in args.scales.split(",") if v.strip()):
        med, runs = median_run(n, False)
        result[f"cpu_s_per_channel_s_{n}"] = med["cpu_s_per_channel_s"]
        ok &= all(r["published"] == r["acked"] and r["exit"] == 0 for r in runs)
    result["published_eq_acked"] = ok
    result["loadavg_start"] = load
    result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
