"""The real consumer's CPU per report with monitoring on and off (``bench.monitor``).

Everything is real and local: one Mosquitto broker and one model server
(``python -m models.serving.server``, built-in bundle) for the whole benchmark, and
per run a fresh ``pumpwatch cloud --config FILE`` process over a fresh SQLite store
(the consumer's defaults: batches of up to 128 reports or 50 ms, ``synchronous=full``,
histograms flushed every 10 s), its config differing only in ``[monitor] enabled``.
Every run is fed the same reports (same identities, bytes and order) on its own topic
root by a paho QoS 1 publisher in this process.

Per run: the consumer starts and connects; ``warmup`` reports are published (again
until they are stored, which also proves the subscription) and not counted; then the
consumer's CPU (utime + stime of its process, all threads, from ``/proc/PID/stat``) is
read, the ``reports`` are published, and once every one of them has a result row the
CPU is read again: CPU seconds per report = the difference / ``reports``. The broker's,
the model server's and this process's CPU are not counted. ``SIGTERM`` then stops the
consumer (its final histogram flush is outside the window; the 10 s flushes that fall
inside it are in).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import ConsumerProcess, Publisher, consumer_config, write_toml

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (every thread), seconds (``/proc/PID/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) * TICK_S  # fields 14 and 15 of proc(5)


def stored(db: Path) -> int:
    """Result rows in the consumer's SQLite store (0 before it exists)."""
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            (n,) = con.execute("SELECT count(*) FROM results").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    return int(n)


def wait_stored(db: Path, n: int, timeout: float, proc: ConsumerProcess) -> bool:
    """Poll until ``n`` result rows are stored; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while stored(db) < n:
        if time.monotonic() > deadline:
            return False
        if not proc.running:
            raise RuntimeError(f"consumer exited:\n{proc.log_tail()}")
        time.sleep(0.02)  # a poll interval (the condition is the row count)
    return True


@dataclass(frozen=True, slots=True)
class Run:
    on: bool
    cpu_s: float
    reports: int
    wall_s: float

    @property
    def per_report_s(self) -> float:
        return self.cpu_s / self.reports


Messages = Sequence[tuple[str, bytes]]  # (topic after the root: "/devices/...", payload)


def one_run(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
            on: bool, warmup: Messages, warmup_reports: int, messages: Messages,
            reports: int) -> Run:
    root = f"m{name}"
    db = work / f"{name}.db"
    cfg = consumer_config(
        broker_port=broker.port, endpoint_url=server.url, db=db, topic_root=root,
        client_id=f"bench-{name}", group=f"bench-{name}",
        batch={"max_size": 128, "max_delay_ms": 50}, store={"synchronous": "full"},
        monitor={"enabled": on},
    )
    proc = ConsumerProcess(write_toml(work / f"{name}.toml", cfg), work / f"{name}.log")
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while "mqtt connected" not in proc.log_tail(200):
            if time.monotonic() > deadline or not proc.running:
                raise RuntimeError(f"consumer did not connect:\n{proc.log_tail()}")
            time.sleep(0.02)
        assert proc.proc is not None
        pid = proc.proc.pid
        with Publisher("127.0.0.1", broker.port, f"bench-pub-{name}", max_inflight=200) as pub:
            # the warm-up, again until stored (a message published before the consumer's
            # subscription is granted has no subscriber): duplicates are stored once
            while True:
                for topic, payload in warmup:
                    pub.publish(root + topic, payload)
                if wait_stored(db, warmup_reports, 10, proc):
                    break
            if (got := stored(db)) != warmup_reports:
                raise RuntimeError(f"{got} rows after the warm-up, expected {warmup_reports}")
            cpu0, t0 = process_cpu_s(pid), time.monotonic()
            for topic, payload in messages:
                pub.publish(root + topic, payload)
            if not wait_stored(db, warmup_reports + reports, 300, proc):
                raise RuntimeError(f"{stored(db) - warmup_reports}/{reports} stored in 300 s")
            cpu1, t1 = process_cpu_s(pid), time.monotonic()
    finally:
        proc.stop(30)
    return Run(on=on, cpu_s=cpu1 - cpu0, reports=reports, wall_s=t1 - t0)


def consumer_overhead(work: Path, *, warmup: Messages, warmup_reports: int, messages: Messages,
                      reports: int, pairs: int,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """``pairs`` pairs of runs (order alternating) after one pair not counted."""
    broker = Mosquitto(work / "mosquitto", max_inflight_messages=1000,
                       log_types=("error", "warning"))
    runs: list[tuple[Run, Run]] = []
    with broker, ModelServerProcess() as server:
        for p in range(-1, pairs):  # pair -1: the warm-up (broker, server, page cache)
            got: dict[bool, Run] = {}
            for on in ((True, False) if p % 2 == 0 else (False, True)):
                got[on] = one_run(work, broker, server, f"{p + 1:02d}{'on' if on else 'off'}",
                                  on=on, warmup=warmup, warmup_reports=warmup_reports,
                                  messages=messages, reports=reports)
            ratio = got[True].per_report_s / got[False].per_report_s
            say(f"consumer pair {p}{' (warm-up, not counted)' if p < 0 else ''}: on "
                f"{got[True].per_report_s * 1e6:.0f} us/report ({got[True].wall_s:.1f} s), off "
                f"{got[False].per_report_s * 1e6:.0f} ({got[False].wall_s:.1f} s): {ratio:.3f}")
            if p >= 0:
                runs.append((got[True], got[False]))
    ratios = [on.per_report_s / off.per_report_s for on, off in runs]
    return {
        "cpu_overhead_ratio": round(statistics.median(ratios), 4),
        "cpu_ratios": [round(r, 4) for r in ratios],
        "consumer_cpu_us_per_report_on": round(
            statistics.median(on.per_report_s for on, _ in runs) * 1e6, 1),
        "consumer_cpu_us_per_report_off": round(
            statistics.median(off.per_report_s for _, off in runs) * 1e6, 1),
        "consumer_reports_per_s_on": round(
            statistics.median(on.reports / on.wall_s for on, _ in runs), 1),
        "consumer_reports_per_s_off": round(
            statistics.median(off.reports / off.wall_s for _, off in runs), 1),
        "cpu_pairs": pairs, "cpu_reports_per_run": reports,
        "cpu_warmup_reports_per_run": warmup_reports,
    }
