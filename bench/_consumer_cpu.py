"""The real consumer's CPU per report with monitoring on and off (``bench.monitor``).

Everything is real and local: one model server (``python -m models.serving.server``,
built-in bundle) for the whole benchmark, a fresh Mosquitto broker per pair (a broker
kept for the whole benchmark biased every pair of an invocation alike: A/A ratios of
0.96-1.03 by invocation), and per run a fresh ``pumpwatch cloud --config FILE``
process over a fresh SQLite store
(the consumer's defaults: batches of up to 128 reports or 50 ms, ``synchronous=full``,
histograms flushed every 10 s), its config differing only in ``[monitor] enabled``.
Every run is fed the same reports (same identities, bytes and order) on its own topic
root by a paho QoS 1 publisher in this process. The CPU of a consumer is the utime +
stime of its process (all threads, from ``/proc/PID/stat``); the broker's, the model
server's and this process's CPU are not counted.

Three ways to run a pair (on, off), each started with ``warmup`` reports published
(again until they are stored, which also proves the subscription) and not counted:

* **interleaved** (the default): both consumers run, and the reports are fed in
  ``chunks``, in turn: chunk 1 to one consumer until every report of it is stored,
  then chunk 1 to the other, then chunk 2 (the order alternating per chunk), so the
  one measured runs alone with the broker and the model server while the other idles,
  and a change of the shared host's speed (which moves one run of several seconds by
  up to ~15 % against the next) hits both alike. A consumer's window runs from the
  start of its first chunk to the start of its ``tail`` (a chunk of other reports
  published after the last counted one, not counted), or, for the one fed last, to
  the end of the other's tail: each window holds its own reports' whole work (the
  acks and result publications after the last row is stored included) and as much
  idling as the other's.
* **sequential**: one consumer after the other, each fed every report at once (a
  user's consumer alone): the window runs from the first publish until every report
  has a result row, so the work after the last row (its histogram bookkeeping, acks
  and publications) falls outside it.
* **concurrent**: both at once, each fed every report (the noise hits both alike, but
  each pays for sharing the cores with the other, which dilutes the ratio: a lower
  bound).

``SIGTERM`` then stops the consumers (their final histogram flush is outside the
window; the 10 s flushes that fall inside it are in).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
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
                 on: bool, *, control: bool = False) -> None:
        self.on = on  # its role in the pair; monitoring runs when on, unless a control run
        self.root = f"m{name}"
        self.db = work / f"{name}.db"
        cfg = consumer_config(
            broker_port=broker.port, endpoint_url=server.url, db=self.db,
            topic_root=self.root, client_id=f"bench-{name}", group=f"bench-{name}",
            batch={"max_size": 128, "max_delay_ms": 50}, store={"synchronous": "full"},
            monitor={"enabled": on and not control},
        )
        self.proc = ConsumerProcess(write_toml(work / f"{name}.toml", cfg),
                                    work / f"{name}.log")
        self.cpu0 = self.t0 = 0.0
        self.expected = 0  # result rows its store holds once every report fed is stored
        self.busy_s = 0.0  # wall time of its chunks (interleaved)
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


Chunk = tuple[Messages, int]  # messages and the reports they hold
MODES = ("interleaved", "sequential", "concurrent")


@contextlib.contextmanager
def _started(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
             sides_on: Sequence[bool], warmup: Chunk, control: bool = False,
             ) -> Iterator[tuple[list[_Side], Publisher]]:
    """One consumer per entry of ``sides_on`` (monitoring on or off), started, connected
    and warmed up; stopped on exit."""
    # named by position, not by what they run: names of one length whichever is on
    sides = [_Side(work, broker, server, f"{name}{'xy'[i]}", on, control=control)
             for i, on in enumerate(sides_on)]
    for s in sides:
        s.proc.start()
    try:
        if not _until(lambda: all(s.connected() for s in sides), 60):
            raise RuntimeError("consumers did not connect:\n"
                               + "\n".join(s.proc.log_tail() for s in sides))
        with Publisher("127.0.0.1", broker.port, f"bench-pub-{name}", max_inflight=200) as pub:
            # the warm-up, again until stored (a message published before a consumer's
            # subscription is granted has no subscriber): duplicates are stored once
            messages, reports = warmup
            while True:
                for topic, payload in messages:
                    for s in sides:
                        pub.publish(s.root + topic, payload)
                if _until(lambda: all(s.stored() >= reports for s in sides), 10):
                    break
            for s in sides:
                if (got := s.stored()) != reports:
                    raise RuntimeError(f"{got} rows after the warm-up, expected {reports}")
                s.expected = reports
            yield sides, pub
    finally:
        for s in sides:
            s.proc.stop(30)


def _feed(pub: Publisher, side: _Side, chunk: Chunk) -> None:
    """Publish ``chunk`` to ``side`` and wait until every report of it is stored."""
    messages, reports = chunk
    for topic, payload in messages:
        pub.publish(side.root + topic, payload)
    side.expected += reports
    if not _until(lambda: side.stored() >= side.expected, 300):
        raise RuntimeError(f"{side.root}: {side.stored()}/{side.expected} rows stored in 300 s")


def side_runs(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
              sides_on: Sequence[bool], warmup: Chunk, chunks: Sequence[Chunk],
              control: bool = False) -> list[Run]:
    """Sequential (one side) or concurrent runs: every side fed every chunk at once; a
    side's window ends when its last report is stored."""
    messages = [m for c in chunks for m in c[0]]
    reports = sum(n for _, n in chunks)
    with _started(work, broker, server, name, sides_on=sides_on, warmup=warmup,
                  control=control) as (sides, pub):
        for s in sides:
            s.cpu0, s.t0 = process_cpu_s(s.pid), time.monotonic()
        for topic, payload in messages:
            for s in sides:
                pub.publish(s.root + topic, payload)
        total = sides[0].expected + reports

        def finished() -> bool:
            for s in sides:
                if s.done is None and s.stored() >= total:
                    s.done = Run(on=s.on, cpu_s=process_cpu_s(s.pid) - s.cpu0,
                                 reports=reports, wall_s=time.monotonic() - s.t0)
            return all(s.done is not None for s in sides)

        if not _until(finished, 300):
            raise RuntimeError("not all reports stored in 300 s: " + ", ".join(
                f"{s.stored()}/{total}" for s in sides))
    runs = [s.done for s in sides]
    assert all(r is not None for r in runs)
    return runs  # type: ignore[return-value]


def interleaved_runs(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
                     first_on: bool, warmup: Chunk, chunks: Sequence[Chunk],
                     tail: Chunk, control: bool = False) -> tuple[Run, Run]:
    """(on, off), interleaved (see the module docstring); ``first_on``: the on one fed
    first in the first chunk."""
    with _started(work, broker, server, name, sides_on=(first_on, not first_on),
                  warmup=warmup, control=control) as (sides, pub):
        order = sides
        for k, chunk in enumerate(chunks):
            order = sides if k % 2 == 0 else sides[::-1]
            for s in order:
                if k == 0:
                    s.cpu0 = process_cpu_s(s.pid)
                t0 = time.monotonic()
                _feed(pub, s, chunk)
                s.busy_s += time.monotonic() - t0
        last, other = order  # the one fed first in the last chunk gets the tail
        cpu_last = process_cpu_s(last.pid) - last.cpu0
        _feed(pub, last, tail)
        cpu_other = process_cpu_s(other.pid) - other.cpu0
    reports = sum(n for _, n in chunks)
    by = {s.on: Run(on=s.on, cpu_s=cpu, reports=reports, wall_s=s.busy_s)
          for s, cpu in ((last, cpu_last), (other, cpu_other))}
    return by[True], by[False]


def pair_run(work: Path, broker: Mosquitto, server: ModelServerProcess, name: str, *,
             first_on: bool, mode: str, warmup: Chunk, chunks: Sequence[Chunk],
             tail: Chunk, control: bool = False) -> tuple[Run, Run]:
    """(on, off) in ``mode`` (see the module docstring); ``first_on``: the on one fed (or
    run) first; ``control``: both with monitoring off (an A/A run: the harness's own
    bias and spread)."""
    if mode == "interleaved":
        return interleaved_runs(work, broker, server, name, first_on=first_on, warmup=warmup,
                                chunks=chunks, tail=tail, control=control)
    order = (first_on, not first_on)
    if mode == "concurrent":
        runs = side_runs(work, broker, server, name, sides_on=order, warmup=warmup,
                         chunks=chunks, control=control)
    elif mode == "sequential":
        runs = [side_runs(work, broker, server, name, sides_on=(on,), warmup=warmup,
                          chunks=chunks, control=control)[0] for on in order]
    else:
        raise ValueError(f"mode {mode!r}: not one of {', '.join(MODES)}")
    by = {r.on: r for r in runs}
    return by[True], by[False]


def consumer_overhead(work: Path, *, warmup: Chunk, chunks: Sequence[Chunk], tail: Chunk,
                      pairs: int, mode: str = "interleaved", control_pairs: int = 0,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """``pairs`` pairs of runs (which one is fed first alternating) after one pair not
    counted; after each of the first ``control_pairs`` of them a control pair (both sides
    with monitoring off, run as a pair is: the ratio the harness gives when there is
    nothing to find)."""
    runs: list[tuple[Run, Run]] = []
    controls: list[tuple[Run, Run]] = []
    with ModelServerProcess() as server:
        schedule = [(-1, False)]
        for p in range(pairs):
            schedule += [(p, False), (p, True)] if p < control_pairs else [(p, False)]
        for p, control in schedule:  # pair -1: the warm-up (server, page cache)
            # a fresh broker per pair: what a broker's state does to the delivery pattern
            # (and so to the consumers' batches) is not carried from one pair to the next
            name = f"{p + 1:02d}{'c' if control else 'p'}"
            with Mosquitto(work / f"mosquitto{name}", max_inflight_messages=1000,
                           log_types=("error", "warning")) as broker:
                on, off = pair_run(work, broker, server, name, first_on=p % 2 == 0,
                                   mode=mode, warmup=warmup, chunks=chunks, tail=tail,
                                   control=control)
            ratio = on.per_report_s / off.per_report_s
            what = "control pair (both off)" if control else "consumer pair"
            say(f"{what} {p}{' (warm-up, not counted)' if p < 0 else ''}: on "
                f"{on.per_report_s * 1e6:.1f} us/report ({on.wall_s:.1f} s), off "
                f"{off.per_report_s * 1e6:.1f} ({off.wall_s:.1f} s): {ratio:.3f}")
            if p >= 0:
                (controls if control else runs).append((on, off))
    ratios = [on.per_report_s / off.per_report_s for on, off in runs]
    out: dict[str, Any] = {
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
        "cpu_pairs": pairs, "cpu_mode": mode, "cpu_chunks": len(chunks),
        "cpu_reports_per_run": sum(n for _, n in chunks),
        "cpu_warmup_reports_per_run": warmup[1],
    }
    if controls:
        cr = [on.per_report_s / off.per_report_s for on, off in controls]
        out |= {"cpu_control_ratio": round(statistics.median(cr), 4),
                "cpu_control_ratios": [round(r, 4) for r in cr]}
    return out
