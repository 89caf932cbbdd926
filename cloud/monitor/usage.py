"""Model usage per model version, bundle and pump: mergeable counters and latency histograms.

Theory of operation
-------------------
The consumer counts per *batch*, never per report: one :meth:`Usage.invocation`
per endpoint call answered (its latency, and how many reports of each pump it
scored), one :meth:`Usage.error` per call that failed, one
:meth:`Usage.dead_letter` per report the model refused. The consumer adds each
batch's counts to the ones it holds and writes them with the monitoring
histograms' flush (every ``flush_s``, 10 s by default: one upsert per cell, not
one per pump and commit) in a commit (``Commit.usage``), where the store adds
them to the stored cells (``value = value + excluded.value``, table
``monitor_usage``), so any number of consumers merge into the same cells. A call
that failed makes the consumer write what it holds at once (it queues an empty
commit), so an outage's errors are visible during the outage; an idle consumer
writes what it holds when the flush falls due, and a stopping one before it
exits. A consumer killed loses at most ``flush_s`` of counts, as the histograms.

A cell is keyed by (model version, bundle target, pump, time bucket, metric, bin):

``invocations`` (pump ``*``)
    endpoint calls answered with results, once per model version in the answer.
``reports`` (per pump)
    reports scored.
``errors:unavailable`` / ``errors:rejected`` (pump ``*``)
    calls that failed (throttled, not ready, 5xx, timeout, connection) or that the
    model refused (ModelError: the batch is bisected), attributed to the version the
    target last answered with ("" before its first answer).
``dead_letters`` (per pump)
    reports the model refused alone (dead-lettered, kind ``model``); and, under the
    version :data:`PRE_MODEL` (``"pre-model"``, target ``""``), the reports
    dead-lettered *before* the model (validation: malformed, schema, name, spoofed,
    oversize, ...), which no model version saw: per pump where the report decoded and
    came from the device it names, else pump :data:`UNKNOWN_PUMP` (``"?"``, outside
    the name rule; a whole message that failed counts once there).
``latency`` (pump ``*``, bin ``i``)
    the call's latency on the fixed log edges :data:`LATENCY_EDGES_S` (10 bins per
    decade, 0.1 ms to 100 s; bin 0 below, bin ``len(edges)`` above): quantiles are
    read from the merged histogram (:func:`quantile`), to within a bin (+-12 %).

The time bucket is :data:`~.histograms.BUCKET_NS` (one hour) of the call's wall-clock
time (usage is load, so it is counted when it happens, not by window time).
"""

from __future__ import annotations

import collections
import math
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store.base import Store
from ..store.records import ResultRow, UsageCell
from .histograms import BUCKET_NS

ALL_PUMPS = "*"
PRE_MODEL = "pre-model"  # the "version" of reports dead-lettered before any model saw them
UNKNOWN_PUMP = "?"  # a dead letter whose pump is not known (no valid name looks like it)
INVOCATIONS = "invocations"
REPORTS = "reports"
DEAD_LETTERS = "dead_letters"
LATENCY = "latency"
ERROR_OUTCOMES: tuple[str, ...] = ("unavailable", "rejected")
ERRORS: tuple[str, ...] = tuple(f"errors:{o}" for o in ERROR_OUTCOMES)
METRICS: tuple[str, ...] = (INVOCATIONS, REPORTS, *ERRORS, DEAD_LETTERS, LATENCY)
LATENCY_LO_S = 1e-4
LATENCY_PER_DECADE = 10
LATENCY_EDGES_S: tuple[float, ...] = tuple(
    LATENCY_LO_S * 10 ** (k / LATENCY_PER_DECADE) for k in range(6 * LATENCY_PER_DECADE + 1))
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
USAGE_WINDOW_NS = 24 * 3600 * 1_000_000_000  # what the dashboard and `monitor status` show
Key = tuple[str, str, str, int, str, int]


_VERSION_PUMP = operator.attrgetter("model_version", "pump")


def reports_by_version_pump(results: Iterable[ResultRow]) -> collections.Counter[tuple[str, str]]:
    """``results`` counted per (model version, pump): :meth:`Usage.invocation`'s
    ``reports``."""
    return collections.Counter(map(_VERSION_PUMP, results))


def latency_bin(seconds: float) -> int:
    """The latency histogram bin of ``seconds`` (0: below the first edge; len(edges): at or
    above the last)."""
    if not seconds > LATENCY_LO_S:
        return 0
    k = math.floor(LATENCY_PER_DECADE * math.log10(seconds / LATENCY_LO_S) + 1e-9) + 1
    return min(k, len(LATENCY_EDGES_S))


def quantile(counts: Mapping[int, float], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a latency histogram ``{bin: count}``, interpolated
    geometrically within its bin; None when empty. Below the first edge reads as the first
    edge, above the last as the last."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q=}")
    total = sum(counts.values())
    if total <= 0:
        return None
    want = q * total
    seen = 0.0
    edges = LATENCY_EDGES_S
    for b in sorted(counts):
        n = counts[b]
        if n <= 0:
            continue
        if seen + n >= want:
            if b <= 0:
                return edges[0]
            if b >= len(edges):
                return edges[-1]
            frac = (want - seen) / n
            lo, hi = edges[b - 1], edges[b]
            return float(lo * (hi / lo) ** frac)
        seen += n
    return edges[-1]


@dataclass(frozen=True, slots=True)
class Invocation:
    """One call answered, as :meth:`Usage.invocation` counts it, not yet counted: what a
    batch carries to its commit (a :class:`Usage` of its own per batch costs a second
    pass over its cells when merged)."""

    target: str
    latency_s: float
    reports: Mapping[tuple[str, str], int]  # (model version, pump) -> reports scored
    now_ns: int


class Usage:
    """Usage counts held until a commit (see the module docstring); sans-IO, ``now_ns``
    passed in (default: the wall clock)."""

    __slots__ = ("_bucket_ns", "_cells", "_clock")

    def __init__(self, *, bucket_ns: int = BUCKET_NS,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._bucket_ns = bucket_ns
        self._clock = clock
        self._cells: dict[Key, float] = {}

    def __bool__(self) -> bool:
        return bool(self._cells)

    def __len__(self) -> int:
        return len(self._cells)

    def _bucket(self, now_ns: int | None) -> int:
        t = self._clock() if now_ns is None else now_ns
        return t - t % self._bucket_ns

    def _add(self, key: Key, value: float) -> None:
        self._cells[key] = self._cells.get(key, 0.0) + value

    def invocation(self, *, target: str, latency_s: float,
                   reports: Mapping[tuple[str, str], int], now_ns: int | None = None) -> None:
        """One call answered in ``latency_s``; ``reports``: (model version, pump) -> reports
        scored (a call whose answer names two versions counts once for each)."""
        b = self._bucket(now_ns)
        lb = latency_bin(latency_s)
        for v in {v for v, _p in reports}:
            self._add((v, target, ALL_PUMPS, b, INVOCATIONS, 0), 1.0)
            self._add((v, target, ALL_PUMPS, b, LATENCY, lb), 1.0)
        for (v, pump), n in reports.items():
            self._add((v, target, pump, b, REPORTS, 0), float(n))

    def error(self, *, model_version: str, target: str, outcome: str,
              now_ns: int | None = None) -> None:
        """One call that failed (``outcome``: one of :data:`ERROR_OUTCOMES`)."""
        if outcome not in ERROR_OUTCOMES:
            raise ValueError(f"outcome must be one of {ERROR_OUTCOMES}, got {outcome=}")
        self._add((model_version, target, ALL_PUMPS, self._bucket(now_ns),
                   f"errors:{outcome}", 0), 1.0)

    def dead_letter(self, *, model_version: str, target: str, pump: str,
                    now_ns: int | None = None) -> None:
        """One report the model refused alone."""
        self._add((model_version, target, pump, self._bucket(now_ns), DEAD_LETTERS, 0), 1.0)

    def rejected_before_model(self, pumps: Iterable[str | None], *,
                              now_ns: int | None = None) -> None:
        """Reports dead-lettered before the model, one per entry (its pump, or None when
        unknown): version :data:`PRE_MODEL`, target ``""``."""
        b = self._bucket(now_ns)
        for pump in pumps:
            self._add((PRE_MODEL, "", UNKNOWN_PUMP if pump is None else pump, b,
                       DEAD_LETTERS, 0), 1.0)

    def merge(self, other: Usage | Invocation) -> None:
        if isinstance(other, Invocation):
            self.invocation(target=other.target, latency_s=other.latency_s,
                            reports=other.reports, now_ns=other.now_ns)
            return
        for k, v in other._cells.items():
            self._add(k, v)

    def cells(self) -> list[UsageCell]:
        return [(*k, v) for k, v in sorted(self._cells.items())]

    def take(self) -> list[UsageCell]:
        """The cells held, and forget them (they go into a commit)."""
        out = self.cells()
        self._cells = {}
        return out


def merge_cells(parts: Iterable[Sequence[UsageCell]]) -> list[UsageCell]:
    """Cells of several commits added by key (what the store does), sorted."""
    acc: dict[Key, float] = {}
    for cells in parts:
        for *key, value in cells:
            k: Key = tuple(key)  # type: ignore[assignment]
            acc[k] = acc.get(k, 0.0) + value
    return [(*k, v) for k, v in sorted(acc.items())]


def _empty() -> dict[str, Any]:
    return {"invocations": 0, "reports": 0, "errors": dict.fromkeys(ERROR_OUTCOMES, 0),
            "dead_letters": 0, "_latency": {}}


def _finish(s: dict[str, Any]) -> dict[str, Any]:
    lat: dict[int, float] = s.pop("_latency")
    s["errors_total"] = sum(s["errors"].values())
    calls = s["invocations"] + s["errors_total"]
    s["error_rate"] = s["errors_total"] / calls if calls else None
    s["latency_ms"] = {f"p{round(100 * q)}": None if (x := quantile(lat, q)) is None
                       else round(1e3 * x, 3) for q in QUANTILES}
    s["latency_calls"] = int(sum(lat.values()))
    return s


def summarize(cells: Sequence[UsageCell], *, max_pumps: int = 50) -> dict[str, dict[str, Any]]:
    """Per model version: its totals (invocations, reports, errors by outcome, error rate,
    dead letters, latency p50/p95/p99 in ms), per target the same, and per pump reports and
    dead letters (the ``max_pumps`` with the most reports; ``pumps_total`` counts all)."""
    out: dict[str, dict[str, Any]] = {}
    targets: dict[tuple[str, str], dict[str, Any]] = {}
    pumps: dict[str, dict[str, dict[str, int]]] = {}
    for v, t, pump, _b, metric, b, value in cells:
        for s in (out.setdefault(v, _empty()), targets.setdefault((v, t), _empty())):
            if metric == LATENCY:
                s["_latency"][b] = s["_latency"].get(b, 0.0) + value
            elif metric.startswith("errors:"):
                o = metric.split(":", 1)[1]
                s["errors"][o] = s["errors"].get(o, 0) + int(value)
            elif metric in (INVOCATIONS, REPORTS, DEAD_LETTERS):
                s[metric] += int(value)
        if pump != ALL_PUMPS and metric in (REPORTS, DEAD_LETTERS):
            p = pumps.setdefault(v, {}).setdefault(pump, {"reports": 0, "dead_letters": 0})
            p[metric] += int(value)
    for v, s in out.items():
        _finish(s)
        s["targets"] = {t: _finish(ts) for (tv, t), ts in sorted(targets.items()) if tv == v}
        by = pumps.get(v, {})
        top = sorted(by.items(), key=lambda kv: (-kv[1]["reports"], -kv[1]["dead_letters"],
                                                  kv[0]))[:max_pumps]
        s["pumps"] = dict(top)
        s["pumps_total"] = len(by)
    return dict(sorted(out.items()))


async def usage_json(store: Store, *, now_ns: int | None = None,
                     window_ns: int = USAGE_WINDOW_NS) -> dict[str, Any]:
    """:func:`summarize` of the hour buckets that overlap the last ``window_ns`` (the
    current, partial one included), with the window's bounds."""
    now = time.time_ns() if now_ns is None else now_ns
    since = (now - window_ns) - (now - window_ns) % BUCKET_NS
    until = now - now % BUCKET_NS + BUCKET_NS
    cells = await store.usage(since_ns=since, until_ns=until)
    return {"since_ns": since, "until_ns": until, "versions": summarize(cells)}


def edges_ms() -> list[float]:
    """The latency histogram's edges in ms (for documentation and plots)."""
    return (np.asarray(LATENCY_EDGES_S) * 1e3).round(6).tolist()


__all__ = [
    "ALL_PUMPS", "ERRORS", "ERROR_OUTCOMES", "LATENCY_EDGES_S", "METRICS", "PRE_MODEL",
    "QUANTILES", "UNKNOWN_PUMP", "USAGE_WINDOW_NS", "Usage", "edges_ms", "latency_bin",
    "merge_cells", "quantile", "summarize", "usage_json",
]
