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
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import (
    ConsumerProcess,
    Publisher,
    consumer_config,
    stored_results,
    write_toml,
)

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (every thread), seconds (``/proc/PID/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) * TICK_S  # fields 14 and 15 of proc(5)


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


class _Side:
    """One consumer of a pair: its config, process, store and root."""

    def __init__(self, work: Path, broker: Mosquitto, server: ModelServerProcess, name: str,
                 on: bool) -> None:
        self.on = on
        self.root = f"m{name}"
        self.db = work / f"{name}.db"
        cfg = consumer_config(
            broker_port=broker.port, endpoint_url=server.url, db=self.db,
            topic_root=self.root, client_id=f"bench-{name}", group=f"bench-{name}",
            batch={"max_size": 128, "max_delay_ms": 50}, store={"synchronous": "full"},
            monitor={"enabled": on},
        )
        self.proc = ConsumerProcess(write_toml(work / f"{name}.toml", cfg),
                                    work / f"{name}.log")
        self.cpu0 = self.t0 = 0.0
        self.done: Run | None = None

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def connected(self) -> bool:
        if not self.proc.running:
            raise RuntimeError(f"consumer exited:\n{self.proc.log_tail()}")
        return "mqtt connected" in self.proc.log_tail(200)

    def stored(self) -> int:
        if not self.proc.running:
            raise RuntimeError(f"consumer exited:\n{self.proc.log_tail()}")
        return stored_results(self.db)


def _until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)  # a poll interval (the condition is what is waited for)
    return True


def side_runs(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
              sides_on: Sequence[bool], warmup: Messages, warmup_reports: int,
              messages: Messages, reports: int) -> list[Run]:
    """One consumer per entry of ``sides_on`` (monitoring on or off), all at once, each fed
    every message (in turn, in that order); their runs."""
    sides = [_Side(work, broker, server, f"{name}{'on' if on else 'off'}", on)
             for on in sides_on]
    for s in sides:
        s.proc.start()
    try:
        if not _until(lambda: all(s.connected() for s in sides), 60):
            raise RuntimeError("consumers did not connect:\n"
                               + "\n".join(s.proc.log_tail() for s in sides))
        with Publisher("127.0.0.1", broker.port, f"bench-pub-{name}", max_inflight=200) as pub:
            # the warm-up, again until stored (a message published before a consumer's
            # subscription is granted has no subscriber): duplicates are stored once
            while True:
                for topic, payload in warmup:
                    for s in sides:
                        pub.publish(s.root + topic, payload)
                if _until(lambda: all(s.stored() >= warmup_reports for s in sides), 10):
                    break
            for s in sides:
                if (got := s.stored()) != warmup_reports:
                    raise RuntimeError(f"{got} rows after the warm-up, expected "
                                       f"{warmup_reports}")
                s.cpu0, s.t0 = process_cpu_s(s.pid), time.monotonic()
            for topic, payload in messages:
                for s in sides:
                    pub.publish(s.root + topic, payload)

            def finished() -> bool:
                for s in sides:
                    if s.done is None and s.stored() >= warmup_reports + reports:
                        s.done = Run(on=s.on, cpu_s=process_cpu_s(s.pid) - s.cpu0,
                                     reports=reports, wall_s=time.monotonic() - s.t0)
                return all(s.done is not None for s in sides)

            if not _until(finished, 300):
                raise RuntimeError("not all reports stored in 300 s: "
                                   + ", ".join(f"{s.stored() - warmup_reports}/{reports}"
                                               for s in sides))
    finally:
        for s in sides:
            s.proc.stop(30)
    runs = [s.done for s in sides]
    assert all(r is not None for r in runs)
    return runs  # type: ignore[return-value]


def pair_run(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
             first_on: bool, concurrent: bool, **feed: Any) -> tuple[Run, Run]:
    """(on, off): both consumers at once (``concurrent``: they see the same machine at the
    same time), or one after the other; ``first_on``: the on one fed (or run) first."""
    order = (first_on, not first_on)
    if concurrent:
        runs = side_runs(work, broker, server, name, sides_on=order, **feed)
    else:
        runs = [side_runs(work, broker, server, name, sides_on=(on,), **feed)[0]
                for on in order]
    by = {r.on: r for r in runs}
    return by[True], by[False]


def consumer_overhead(work: Path, *, warmup: Messages, warmup_reports: int, messages: Messages,
                      reports: int, pairs: int, concurrent: bool = False,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """``pairs`` pairs of runs (which one is fed first alternating) after one pair not
    counted."""
    broker = Mosquitto(work / "mosquitto", max_inflight_messages=1000,
                       log_types=("error", "warning"))
    runs: list[tuple[Run, Run]] = []
    with broker, ModelServerProcess() as server:
        for p in range(-1, pairs):  # pair -1: the warm-up (broker, server, page cache)
            on, off = pair_run(work, broker, server, f"{p + 1:02d}", first_on=p % 2 == 0,
                               concurrent=concurrent, warmup=warmup, warmup_reports=warmup_reports,
                               messages=messages, reports=reports)
            ratio = on.per_report_s / off.per_report_s
            say(f"consumer pair {p}{' (warm-up, not counted)' if p < 0 else ''}: on "
                f"{on.per_report_s * 1e6:.0f} us/report ({on.wall_s:.1f} s), off "
                f"{off.per_report_s * 1e6:.0f} ({off.wall_s:.1f} s): {ratio:.3f}")
            if p >= 0:
                runs.append((on, off))
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
        "cpu_pairs": pairs, "cpu_pairs_concurrent": concurrent,
        "cpu_reports_per_run": reports,
        "cpu_warmup_reports_per_run": warmup_reports,
    }
