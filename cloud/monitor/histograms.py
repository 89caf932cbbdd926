"""Mergeable, fixed-edge histograms of what a deployed model sees and says.

Theory of operation
-------------------
The consumer hands every scored batch to :meth:`Histograms.observe` (one call,
numpy across the batch: O(features) per report). Each report becomes one row
of bin indexes, kept by identity until its commit; the store calls
:meth:`Histograms.cells` inside the commit with the result rows it *newly*
inserted, so a redelivered report is never counted twice whichever consumer
stores it, and the cells are added to the stored ones (``value = value + ..``):
any number of consumers merge into the same histograms.

A cell is keyed by (model version, bundle target, regime, time bucket, health
partition, feature, bin):

* **features** (:data:`FEATURES`): the report features the models consume, by
  the model side's names where they coincide (``log:velocity_rms``,
  ``kurtosis``, ...; ``log:`` = base-10 logarithm), the reduced spectrum
  (``spec[LO-HI]``: mean level in dB of :data:`SPECTRUM_BANDS`) and the
  prediction (``log:anomaly_score``). Edges are fixed per feature, independent
  of the bundle, so histograms of any two windows, versions or consumers add
  and compare. Bin 0 is the underflow, ``bins + 1`` the overflow, -1 missing.
* **categorical** counts under feature names ``class:{condition}`` and
  ``decided_by:{rule}`` (bin 0), and ``n`` (every report, bin 0).
* the reduced spectrum of one report in :data:`SPECTRUM_EVERY` (by identity: decoding
  a spectrum costs more than every other feature together); the others count as
  missing in the ``spec[..]`` histograms.
* **spectrum moments** for the multivariate test: ``spec_sum`` (bin i: sum of
  band i), ``spec_cross`` (bin ``i * B + j``, ``i <= j``: sum of products) and
  ``spec_n`` (complete vectors), over reports whose every band is present.
* **regime**: the running-speed band (:data:`REGIME_EDGES_RPM`), since most
  features scale with speed; ``unknown`` when the report has no speed.
* **health**: the partition the model put the result in: ``healthy``
  (condition healthy and not anomalous), ``unknown``, ``sensor_fault``, or
  ``fault`` (a named fault class, or anomalous against the pump's baseline).
  Drift is *unexplained* only in what the model calls healthy or cannot name
  (:data:`UNEXPLAINED`): a pump whose fault the model names is explained.
* **time bucket**: :data:`BUCKET_NS` (one hour) of the report's window start.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dsp.quantize import unpack_codes
from dsp.report import Report
from dsp.results import HEALTHY, SENSOR_FAULT, UNKNOWN

from ..store.records import HistCell, Identity, ResultRow

log = logging.getLogger(__name__)
F64 = NDArray[np.float64]
BUCKET_NS = 3600 * 1_000_000_000
LOG_FLOOR = 1e-9
REGIME_EDGES_RPM: tuple[float, ...] = (0.0, 900.0, 1500.0, 2100.0, 3300.0, math.inf)
HEALTH = ("healthy", "unknown", "sensor_fault", "fault")
UNEXPLAINED: tuple[str, ...] = ("healthy", "unknown")
# Half-octave bands of the reduced spectrum, 10 Hz - 3.6 kHz (a 12 kHz sensor reaches
# them): the multivariate test's vector.
SPECTRUM_BANDS: tuple[tuple[float, float], ...] = tuple(
    (10.0 * 2 ** (k / 2), 10.0 * 2 ** ((k + 1) / 2)) for k in range(17)
)
SPECTRUM_EVERY = 16  # reports per reduced spectrum decoded (see spectrum_sampled)
MAX_PENDING = 1 << 16  # observed reports awaiting their commit (older ones are forgotten)


@dataclass(frozen=True, slots=True)
class Feature:
    """A monitored feature: fixed edges ``linspace(lo, hi, bins + 1)`` on its scale."""

    name: str
    lo: float
    hi: float
    bins: int

    @property
    def edges(self) -> F64:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def centers(self) -> F64:
        """Bin centres including underflow / overflow (placed half a bin outside)."""
        w = (self.hi - self.lo) / self.bins
        return np.concatenate(([self.lo - w / 2], self.edges[:-1] + w / 2, [self.hi + w / 2]))


def _log(name: str, lo: float = -6.0, hi: float = 3.0, bins: int = 90) -> Feature:
    return Feature(f"log:{name}", lo, hi, bins)


def spectrum_name(band: tuple[float, float]) -> str:
    return f"spec[{band[0]:.0f}-{band[1]:.0f}]"


SCALAR_FEATURES: tuple[Feature, ...] = (
    _log("velocity_rms"), _log("rms"), _log("peak"), _log("crest", -0.5, 2.0, 50),
    _log("kurtosis", -0.5, 2.5, 60), Feature("skewness", -10.0, 10.0, 80),
    _log("v1x"), _log("v2x"), _log("v3x"), _log("vbpf"),
    _log("env_bpfo"), _log("env_bpfi"), _log("env_bsf"), _log("env_ftf"),
    _log("env_kurtosis", -1.0, 3.0, 80), Feature("rpm", 0.0, 12000.0, 60),
)
SPECTRUM_FEATURES: tuple[Feature, ...] = tuple(
    Feature(spectrum_name(b), -160.0, 40.0, 100) for b in SPECTRUM_BANDS
)
PREDICTION_FEATURES: tuple[Feature, ...] = (_log("anomaly_score", -3.0, 4.0, 70),)
FEATURES: tuple[Feature, ...] = SCALAR_FEATURES + SPECTRUM_FEATURES + PREDICTION_FEATURES
BY_NAME = {f.name: f for f in FEATURES}
_NS = len(SCALAR_FEATURES)
_NB = len(SPECTRUM_BANDS)
_LOG = np.array([f.name.startswith("log:") for f in FEATURES])
_LO = np.array([f.lo for f in FEATURES])
_WIDTH = np.array([(f.hi - f.lo) / f.bins for f in FEATURES])
_BINS = np.array([f.bins for f in FEATURES])


def regime(rpm: float | None) -> str:
    """The speed band of ``rpm`` ("unknown" without one)."""
    if not rpm or not math.isfinite(rpm) or rpm <= 0:
        return "unknown"
    for lo, hi in itertools.pairwise(REGIME_EDGES_RPM):
        if rpm < hi:
            return f"{lo:.0f}-{hi:.0f}rpm" if math.isfinite(hi) else f">={lo:.0f}rpm"
    return "unknown"


_REGIME_NAMES = ("unknown", *(regime(lo + 1.0) for lo in REGIME_EDGES_RPM[:-1]))
_REGIME_EDGES = np.array(REGIME_EDGES_RPM[1:-1])


def regime_names(rpm: F64) -> list[str]:
    """:func:`regime` of every value of ``rpm`` (NaN or <= 0: unknown)."""
    idx = np.searchsorted(_REGIME_EDGES, rpm, side="right") + 1
    idx[~(np.isfinite(rpm) & (rpm > 0))] = 0
    return [_REGIME_NAMES[i] for i in idx.tolist()]


def health(r: ResultRow) -> str:
    if r.condition == SENSOR_FAULT:
        return "sensor_fault"
    if r.anomalous or r.condition not in (HEALTHY, UNKNOWN):
        return "fault"
    return "healthy" if r.condition == HEALTHY else "unknown"


def spectrum_levels(report: Report) -> F64:
    """Mean level (dB) of the report's power spectrum in each :data:`SPECTRUM_BANDS`
    band; NaN where the spectrum does not reach a band."""
    sp = report.spectrum
    codes = unpack_codes(sp.data, sp.n).astype(np.float64)
    out = np.full(_NB, np.nan)
    if codes.size == 0:
        return out
    csum = np.concatenate(([0.0], np.cumsum(codes)))
    lo = np.ceil(np.array([b[0] for b in SPECTRUM_BANDS]) / sp.df).astype(np.int64)
    hi = np.ceil(np.array([b[1] for b in SPECTRUM_BANDS]) / sp.df).astype(np.int64)
    ok = hi <= codes.size
    lo, hi = np.minimum(lo, codes.size), np.minimum(hi, codes.size)
    ok &= hi > lo
    n = np.maximum(hi - lo, 1)
    mean_codes = (csum[hi] - csum[lo]) / n
    out[ok] = mean_codes[ok] * sp.step_db + sp.offset_db
    return out


def spectrum_sampled(report: Report) -> bool:
    """Whether the reduced spectrum of ``report`` is monitored: one report in
    :data:`SPECTRUM_EVERY`, by identity (the same on every consumer and redelivery).
    Decoding a spectrum costs more than all the other features together."""
    return (report.seq * 0x9E3779B1 + report.epoch) % SPECTRUM_EVERY == 0


def bin_index(values: F64) -> NDArray[np.int64]:
    """``(n, len(FEATURES))`` values on their scale -> bin indexes (-1 = missing)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        idx = np.floor((values - _LO) / _WIDTH) + 1
        idx = np.minimum(np.maximum(idx, 0.0), _BINS + 1.0)
    idx[~np.isfinite(values)] = -1
    return idx.astype(np.int64)


def feature_values(reports: Sequence[Report], results: Sequence[ResultRow]) -> F64:
    """``(n, len(FEATURES))`` monitored values (on their histogram's scale)."""
    n = len(reports)
    rows = [
        (f.velocity_rms, f.rms, f.peak, f.crest, f.kurtosis, f.skewness,
         f.v1x, f.v2x, f.v3x, f.vbpf, f.env_bpfo, f.env_bpfi, f.env_bsf, f.env_ftf,
         f.env_kurtosis, rep.speed.rpm or None)
        for rep in reports for f in (rep.features,)
    ]
    values = np.empty((n, len(FEATURES)))
    values[:, :_NS] = np.array(rows, dtype=np.float64).reshape(n, _NS)
    values[:, _NS:_NS + _NB] = np.nan
    for i, rep in enumerate(reports):
        if spectrum_sampled(rep):
            values[i, _NS:_NS + _NB] = spectrum_levels(rep)
    values[:, -1] = [r.anomaly_score for r in results]
    with np.errstate(invalid="ignore", divide="ignore"):
        values[:, _LOG] = np.log10(np.maximum(values[:, _LOG], LOG_FLOOR))
    return values


@dataclass(slots=True, eq=False)
class _Batch:
    """One observed batch: per report its key, bins, spectrum levels and categories."""

    keys: list[tuple[str, str, str, int, str]]
    bins: NDArray[np.int16]
    spectra: NDArray[np.float32]
    categories: list[tuple[str, ...]]


_NAMES = [f.name for f in FEATURES]
_WIDTH_MAX = int(_BINS.max()) + 3  # column = bin + 1 (so "missing", -1, is column 0)
_IU = np.triu_indices(_NB)
_ROWS = np.arange(len(FEATURES))
Key = tuple[str, str, str, int, str]


class _Acc:
    """Counts of one key, in arrays (added to per report group, turned into cells once)."""

    __slots__ = ("cats", "counts", "n", "spec_cross", "spec_n", "spec_sum")

    def __init__(self) -> None:
        self.counts = np.zeros((len(FEATURES), _WIDTH_MAX))
        self.cats: dict[str, float] = {}
        self.n = 0.0
        self.spec_n = 0.0
        self.spec_sum = np.zeros(_NB)
        self.spec_cross = np.zeros((_NB, _NB))

    def add(self, bins: NDArray[np.integer], spectra: NDArray[np.floating],
            categories: Sequence[Sequence[str]]) -> None:
        m = len(bins)
        flat = (_ROWS * _WIDTH_MAX + bins.astype(np.int64) + 1).ravel()
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        self.n += m
        for cs in categories:
            for c in cs:
                self.cats[c] = self.cats.get(c, 0.0) + 1.0
        spec = spectra.astype(np.float64)
        spec = spec[np.isfinite(spec).all(axis=1)]
        if spec.shape[0]:
            self.spec_n += spec.shape[0]
            self.spec_sum += spec.sum(0)
            self.spec_cross += spec.T @ spec

    def merge(self, other: _Acc) -> None:
        self.counts += other.counts
        for c, v in other.cats.items():
            self.cats[c] = self.cats.get(c, 0.0) + v
        self.n += other.n
        self.spec_n += other.spec_n
        self.spec_sum += other.spec_sum
        self.spec_cross += other.spec_cross

    def cells(self, key: Key) -> list[HistCell]:
        rows, cols = np.nonzero(self.counts)
        out: list[HistCell] = [(*key, _NAMES[j], int(c) - 1, float(self.counts[j, c]))
                               for j, c in zip(rows.tolist(), cols.tolist(), strict=True)]
        out.append((*key, "n", 0, self.n))
        out += [(*key, name, 0, v) for name, v in self.cats.items()]
        if self.spec_n:
            out.append((*key, "spec_n", 0, self.spec_n))
            out += [(*key, "spec_sum", i, float(v)) for i, v in enumerate(self.spec_sum)]
            out += [(*key, "spec_cross", int(i * _NB + j), float(self.spec_cross[i, j]))
                    for i, j in zip(*_IU, strict=True)]
        return out


def aggregate(
    key: Key, bins: NDArray[np.integer], spectra: NDArray[np.floating],
    categories: Sequence[Sequence[str]],
) -> list[HistCell]:
    """The cells of ``m`` reports of one key: ``bins`` (m, len(FEATURES)) bin indexes,
    ``spectra`` (m, len(SPECTRUM_BANDS)) band levels, each report's category names."""
    acc = _Acc()
    acc.add(bins, spectra, categories)
    return acc.cells(key)


class Histograms:
    """The consumer's side of the monitoring histograms (see the module docstring).

    Three calls: :meth:`observe` per scored batch, the store calls the object itself
    (:class:`cloud.store.HistogramHook`) inside the commit, and :meth:`committed` after
    it returned. The hook stages the new rows' counts; :meth:`committed` adds them to
    the counts held in memory, and every ``flush_s`` the hook returns all of them as
    cells for that commit to add (``flush_s = 0``: every commit). A commit that failed
    and is retried stages its rows again, so nothing is counted twice; what is held
    when the process dies (at most ``flush_s`` of reports) is lost, never doubled. The
    database sees one upsert per cell per flush, whatever the report rate. A bug here
    never blocks a commit: it is logged and counted, and the histograms miss rows.
    """

    def __init__(self, *, bucket_ns: int = BUCKET_NS, flush_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket_ns = bucket_ns
        self.flush_s = flush_s
        self._clock = clock
        self._pending: OrderedDict[Identity, tuple[_Batch, int]] = OrderedDict()
        self._held: dict[Key, _Acc] = {}
        self._staged: dict[Key, _Acc] = {}
        self._flushing = False
        self._last_flush = clock()
        self.observed = 0
        self.forgotten = 0
        self.errors = 0
        self.flushes = 0

    def flush_next(self) -> None:
        """Make the next commit write every count held (e.g. before stopping)."""
        self._last_flush = -math.inf

    def observe(self, reports: Sequence[Report], results: Sequence[ResultRow]) -> None:
        """Bin one scored batch (``reports[i]`` scored as ``results[i]``)."""
        try:
            self._observe(reports, results)
        except Exception:
            self.errors += 1
            log.exception("monitoring histograms: binning %d reports failed", len(reports))

    def __call__(self, rows: Sequence[ResultRow]) -> list[HistCell]:
        try:
            return self.cells(rows)
        except Exception:
            self.errors += 1
            self._staged, self._flushing = {}, False
            log.exception("monitoring histograms: cells of %d results failed", len(rows))
            return []

    def committed(self, rows: Sequence[ResultRow]) -> None:
        """The commit holding ``rows`` returned: keep what it staged (or forget what it
        flushed) and the rows' observations."""
        for r in rows:
            self._pending.pop(r.identity, None)
        if self._flushing:
            self._held = {}
            self._last_flush = self._clock()
            self.flushes += 1
        else:
            for key, acc in self._staged.items():
                held = self._held.get(key)
                if held is None:
                    self._held[key] = acc
                else:
                    held.merge(acc)
        self._staged, self._flushing = {}, False

    def _observe(self, reports: Sequence[Report], results: Sequence[ResultRow]) -> None:
        if not reports:
            return
        values = feature_values(reports, results)
        bins = bin_index(values).astype(np.int16)
        spectra = values[:, _NS:_NS + _NB].astype(np.float32)
        rpm = np.array([r.rpm if r.rpm is not None else rep.speed.rpm
                        for r, rep in zip(results, reports, strict=True)], dtype=np.float64)
        regimes = regime_names(rpm)
        bucket = self.bucket_ns
        batch = _Batch(
            keys=[(r.model_version, r.target, regimes[i], r.t0_ns - r.t0_ns % bucket, health(r))
                  for i, r in enumerate(results)],
            bins=bins, spectra=spectra, categories=[],
        )
        for r in results:
            rule = r.extra.get("decided_by")
            batch.categories.append((f"class:{r.condition}", f"decided_by:{rule}")
                                    if isinstance(rule, str) else (f"class:{r.condition}",))
        pending = self._pending
        for i, r in enumerate(results):
            pending[r.identity] = (batch, i)
        self.observed += len(results)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
            self.forgotten += 1

    def cells(self, rows: Sequence[ResultRow]) -> list[HistCell]:
        """Stage ``rows`` (newly stored); the cells to add in this commit (all counts held,
        when a flush is due; else none)."""
        groups: dict[tuple[int, Key], tuple[_Batch, list[int]]] = {}
        for r in rows:
            hit = self._pending.get(r.identity)
            if hit is not None:
                batch, i = hit
                key = batch.keys[i]
                g = groups.get((id(batch), key))
                if g is None:
                    groups[(id(batch), key)] = (batch, [i])
                else:
                    g[1].append(i)
        staged: dict[Key, _Acc] = {}
        for (_b, key), (batch, idx) in groups.items():
            acc = staged.get(key)
            if acc is None:
                acc = staged[key] = _Acc()
            acc.add(batch.bins[idx], batch.spectra[idx], [batch.categories[i] for i in idx])
        self._staged = staged
        self._flushing = self._clock() - self._last_flush >= self.flush_s
        if not self._flushing:
            return []
        out: list[HistCell] = []
        for key in self._held.keys() | staged.keys():
            total = _Acc()
            for part in (self._held.get(key), staged.get(key)):
                if part is not None:
                    total.merge(part)
            out += total.cells(key)
        return out
