"""Mergeable, fixed-edge histograms of what a deployed model sees and says.

Theory of operation
-------------------
The consumer hands every scored batch to :meth:`Histograms.observe`, which
computes nothing: the batch (its reports and result rows) travels with its job
to the commit that stores its rows (:meth:`Histograms.prepare`); the store
calls the hook inside the commit with the result rows it *newly* inserted, so
a redelivered report is never counted twice whichever consumer stores it.
Committed reports are binned together, a thousand at a time (numpy across
them: O(features) per report, no cost per batch), into counts held in memory,
and every ``flush_s`` a commit adds them to the stored cells (``value = value
+ ..``): any number of consumers merge into the same histograms.

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

import functools
import itertools
import logging
import math
import operator
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dsp.quantize import unpack_deltas
from dsp.report import Report, Spectrum
from dsp.results import HEALTHY, SENSOR_FAULT, UNKNOWN

from ..store.records import HistCell, ResultRow

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
BIN_ROWS = 1024  # committed reports binned together (see Histograms)


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


REGIME_NAMES = ("unknown", *(regime(lo + 1.0) for lo in REGIME_EDGES_RPM[:-1]))
_REGIME_EDGES = np.array(REGIME_EDGES_RPM[1:-1])


def regime_index(rpm: F64) -> NDArray[np.intp]:
    """Index in :data:`REGIME_NAMES` of :func:`regime` of every value of ``rpm`` (NaN or
    <= 0: unknown, 0)."""
    idx = np.searchsorted(_REGIME_EDGES, rpm, side="right") + 1
    idx[~(np.isfinite(rpm) & (rpm > 0))] = 0
    return idx


def regime_names(rpm: F64) -> list[str]:
    """:func:`regime` of every value of ``rpm`` (NaN or <= 0: unknown)."""
    return [REGIME_NAMES[i] for i in regime_index(rpm).tolist()]


def health(r: ResultRow) -> str:
    return _health(r.condition, r.anomalous)


def _health(condition: str, anomalous: bool) -> str:
    if condition == SENSOR_FAULT:
        return "sensor_fault"
    if anomalous or condition not in (HEALTHY, UNKNOWN):
        return "fault"
    return "healthy" if condition == HEALTHY else "unknown"


_BAND_LO_HZ = np.array([b[0] for b in SPECTRUM_BANDS])
_BAND_HI_HZ = np.array([b[1] for b in SPECTRUM_BANDS])


@functools.lru_cache(maxsize=64)
def _band_lines(df: float, n: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Lines ``[lo, hi)`` of each band on a spectrum of ``n`` lines ``df`` Hz apart, and
    the bands it reaches (indexes)."""
    lo = np.ceil(_BAND_LO_HZ / df).astype(np.intp)
    hi = np.ceil(_BAND_HI_HZ / df).astype(np.intp)
    ok = hi <= n
    lo, hi = np.minimum(lo, n), np.minimum(hi, n)
    ok &= hi > lo
    for a in (lo, hi):
        a.flags.writeable = False  # cached: shared by every call
    reach = np.flatnonzero(ok)
    reach.flags.writeable = False
    return lo, hi, reach


def spectrum_levels_many(spectra: Sequence[Spectrum]) -> F64:
    """``(len(spectra), len(SPECTRUM_BANDS))``: the mean level (dB) of each spectrum's
    lines in each band; NaN where it does not reach a band.

    Spectra of one layout (``df``, ``n``) are decoded together: their delta codes side by
    side in one array, and only the lines up to the top band are summed (the cumulative
    sum modulo 256 of a prefix is the prefix of the codes)."""
    out = np.full((len(spectra), _NB), np.nan)
    layouts: dict[tuple[float, int], list[int]] = {}
    for i, sp in enumerate(spectra):
        layouts.setdefault((sp.df, sp.n), []).append(i)
    for (df, n), idx in layouts.items():
        lo, hi, reach = _band_lines(df, n)
        if not reach.size:
            continue
        top = int(hi[reach].max())
        raw = b"".join([unpack_deltas(spectra[i].data, n) for i in idx])
        delta = np.frombuffer(raw, dtype=np.uint8).reshape(len(idx), n)[:, :top]
        codes = np.cumsum(delta, axis=1, dtype=np.uint8)  # wraps modulo 256, as encoded
        csum = np.zeros((len(idx), top + 1), dtype=np.int64)
        np.cumsum(codes, axis=1, dtype=np.int64, out=csum[:, 1:])
        lo_r, hi_r = lo[reach], hi[reach]
        mean_codes = (csum[:, hi_r] - csum[:, lo_r]) / (hi_r - lo_r)
        step = np.array([spectra[i].step_db for i in idx])
        offset = np.array([spectra[i].offset_db for i in idx])
        out[np.ix_(np.array(idx, dtype=np.intp), reach)] = (
            mean_codes * step[:, None] + offset[:, None])
    return out


def spectrum_levels(report: Report) -> F64:
    """Mean level (dB) of the report's power spectrum in each :data:`SPECTRUM_BANDS`
    band; NaN where the spectrum does not reach a band."""
    levels: F64 = spectrum_levels_many([report.spectrum])[0]
    return levels


def spectrum_sampled(report: Report) -> bool:
    """Whether the reduced spectrum of ``report`` is monitored: one report in
    :data:`SPECTRUM_EVERY`, by identity (the same on every consumer and redelivery).
    Decoding a spectrum costs more than all the other features together."""
    return (report.seq * 0x9E3779B1 + report.epoch) % SPECTRUM_EVERY == 0


def bin_index(values: F64) -> NDArray[np.int64]:
    """``(n, len(FEATURES))`` values on their scale -> bin indexes (-1 = missing)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        idx = np.subtract(values, _LO)
        idx /= _WIDTH  # a division, as the edges are defined (not * 1 / width)
        np.floor(idx, out=idx)
        np.clip(idx, -1.0, _BINS, out=idx)  # underflow -> 0, overflow -> bins + 1
        idx += 1.0
    idx[~np.isfinite(values)] = -1
    return idx.astype(np.int64)


Row = tuple[float | None, ...]  # a report's scalars: see _row_values


def _row_values(reports: Sequence[Report], results: Sequence[ResultRow]) -> list[Row]:
    """Per report: the scalar features (:data:`SCALAR_FEATURES`), the anomaly score and
    the speed its regime is taken from (the result's, else the report's)."""
    return [
        (f.velocity_rms, f.rms, f.peak, f.crest, f.kurtosis, f.skewness,
         f.v1x, f.v2x, f.v3x, f.vbpf, f.env_bpfo, f.env_bpfi, f.env_bsf, f.env_ftf,
         f.env_kurtosis, rep.speed.rpm or None, r.anomaly_score,
         r.rpm if r.rpm is not None else rep.speed.rpm)
        for rep, r in zip(reports, results, strict=True) for f in (rep.features,)
    ]


def _values(raw: F64, spectra: Sequence[tuple[int, Spectrum]]) -> tuple[F64, F64]:
    """``(n, len(FEATURES))`` monitored values (on their histogram's scale) of ``raw``
    (``(n, len(SCALAR_FEATURES) + 2)``: rows of :func:`_row_values`, None as NaN) with the
    reduced spectra of ``spectra`` (row, spectrum) decoded; and their speeds."""
    n = raw.shape[0]
    values = np.empty((n, len(FEATURES)))
    values[:, :_NS] = raw[:, :_NS]
    values[:, _NS:_NS + _NB] = np.nan
    if spectra:
        values[[i for i, _ in spectra], _NS:_NS + _NB] = spectrum_levels_many(
            [sp for _, sp in spectra])
    values[:, -1] = raw[:, _NS]
    with np.errstate(invalid="ignore", divide="ignore"):
        values[:, _LOG] = np.log10(np.maximum(values[:, _LOG], LOG_FLOOR))
    return values, raw[:, _NS + 1]


def _raw(rows: Sequence[Row]) -> F64:
    """``rows`` as one array, None as NaN (numpy's conversion; fromiter over the flattened
    rows costs about 2/3 of ``np.array(rows)``)."""
    n = len(rows) * (_NS + 2)
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=n)
    return flat.reshape(len(rows), _NS + 2)


def feature_values(reports: Sequence[Report], results: Sequence[ResultRow]) -> F64:
    """``(n, len(FEATURES))`` monitored values (on their histogram's scale)."""
    spectra = [(i, rep.spectrum) for i, rep in enumerate(reports) if spectrum_sampled(rep)]
    return _values(_raw(_row_values(reports, results)), spectra)[0]


Key = tuple[str, str, str, int, str]
Category = tuple[str, str | None]  # (condition, decided_by rule or None)


@dataclass(slots=True, eq=False)
class _Batch:
    """Committed rows binned together (:func:`_bin`): per report the index of its key in
    ``keys``, its bins, the index of its category in ``categories``; the complete reduced
    spectra."""

    keys: list[Key]
    kidx: NDArray[np.intp]  # (n,)
    bins: NDArray[np.int16]  # (n, len(FEATURES))
    categories: list[Category]
    cidx: NDArray[np.intp]  # (n,)
    spec_rows: NDArray[np.intp]  # rows with every band present
    spec: F64  # (len(spec_rows), len(SPECTRUM_BANDS))


Fact = tuple[str, str, int, str, bool, str | None]  # see _facts


def _facts(results: Sequence[ResultRow], bucket: int) -> list[Fact]:
    """Per result what its key and category are made of: model version, target, time
    bucket, condition, anomalous, the ``decided_by`` rule (None without one)."""
    return [(r.model_version, r.target, r.t0_ns - r.t0_ns % bucket, r.condition, r.anomalous,
             rule if isinstance(rule := r.extra.get("decided_by"), str) else None)
            for r in results]


@dataclass(slots=True, eq=False)
class Observed:
    """One scored batch, read while the consumer still has it at hand (its reports' and
    results' fields are in cache: read a thousand reports later, they cost about twice as
    much): its scalars as one array (:func:`_row_values`, one numpy call per batch) and
    per report what its key and category are made of (:func:`_facts`, tuples), the
    sampled spectra by row, and the result rows (their identities, for a commit that
    stored only some of them; dropped once committed). The rest of numpy's work is spread
    over the :data:`BIN_ROWS` committed reports binned together. Carried with its job to
    the commit (:meth:`Histograms.prepare`), then kept until binned."""

    raw: F64  # (n, len(SCALAR_FEATURES) + 2), see _row_values
    facts: list[Fact]
    spectra: list[tuple[int, Spectrum]]
    results: Sequence[ResultRow]


Part = tuple[Observed, NDArray[np.intp] | None]  # the rows ``idx`` of a batch (None: all)


def _index(items: Sequence[Hashable]) -> tuple[list[Any], NDArray[np.intp]]:
    """The distinct ``items`` (first seen first) and the index of each item in them."""
    seen: dict[Hashable, int] = {}
    idx = [seen.setdefault(k, len(seen)) for k in items]
    return list(seen), np.array(idx, dtype=np.intp)


def _bin(parts: Sequence[Part]) -> _Batch:
    """Bin the rows ``idx`` (distinct, ascending; None: all) of each observed batch,
    together."""
    raws: list[F64] = []
    facts: list[Fact] = []
    spectra: list[tuple[int, Spectrum]] = []
    for obs, idx in parts:
        base = len(facts)
        if idx is None:
            raws.append(obs.raw)
            facts += obs.facts
            spectra += [(base + i, sp) for i, sp in obs.spectra]
        else:
            pick = idx.tolist()
            raws.append(obs.raw[idx])
            facts += [obs.facts[i] for i in pick]
            at = {i: k for k, i in enumerate(pick)}
            spectra += [(base + at[i], sp) for i, sp in obs.spectra if i in at]
    distinct, fidx = _index(facts)
    keys, key_of = _index([(v, t, b, _health(c, a)) for v, t, b, c, a, _ in distinct])
    cats, cat_of = _index([(c, rule) for _, _, _, c, _, rule in distinct])
    values, rpm = _values(np.concatenate(raws), spectra)
    nr = len(REGIME_NAMES)
    codes, kidx = np.unique(key_of[fidx] * nr + regime_index(rpm), return_inverse=True)
    local: list[Key] = []
    for c in codes.tolist():
        k = keys[c // nr]
        local.append((k[0], k[1], REGIME_NAMES[c % nr], k[2], k[3]))
    spec = values[:, _NS:_NS + _NB]
    spec_rows = np.flatnonzero(np.isfinite(spec).all(axis=1))
    return _Batch(keys=local, kidx=kidx.reshape(-1).astype(np.intp),
                  bins=bin_index(values).astype(np.int16), categories=cats,
                  cidx=cat_of[fidx], spec_rows=spec_rows, spec=spec[spec_rows])


_IDENTITY = operator.attrgetter("device", "epoch", "seq")  # ResultRow.identity, in C
_NAMES = [f.name for f in FEATURES]
_W = int(_BINS.max()) + 3  # column of a bin: bin + 1 (so "missing", -1, is column 0)
_FW = len(FEATURES) * _W
_COLS = np.arange(len(FEATURES), dtype=np.intp) * _W + 1  # + bin = the cell's column
_IU = np.triu_indices(_NB)
_CROSS_BINS = (_IU[0] * _NB + _IU[1]).tolist()


def category_names(c: Category) -> tuple[str, ...]:
    """The categorical counts one result adds to (``class:{condition}``, and
    ``decided_by:{rule}`` when the result names its rule)."""
    cond, rule = c
    return (f"class:{cond}",) if rule is None else (f"class:{cond}", f"decided_by:{rule}")


class _Counts:
    """Counts of any number of keys, one row per key (its *slot*) in preallocated arrays
    grown by doubling: adding a batch is a few array operations, whatever its keys."""

    __slots__ = ("cats", "counts", "keys", "n", "slots", "spec_cross", "spec_n", "spec_sum")

    def __init__(self, capacity: int = 8) -> None:
        self.slots: dict[Key, int] = {}
        self.keys: list[Key] = []
        self.counts = np.zeros((capacity, _FW), dtype=np.int64)  # slot, feature * _W + col
        self.n = np.zeros(capacity, dtype=np.int64)
        self.spec_n = np.zeros(capacity, dtype=np.int64)
        self.spec_sum = np.zeros((capacity, _NB))
        self.spec_cross = np.zeros((capacity, _NB, _NB))
        self.cats: Counter[tuple[int, str]] = Counter()

    def __bool__(self) -> bool:
        return bool(self.keys)

    def slot(self, key: Key) -> int:
        s = self.slots.get(key)
        if s is None:
            s = self.slots[key] = len(self.keys)
            self.keys.append(key)
            if s == self.n.size:
                for name in ("counts", "n", "spec_n", "spec_sum", "spec_cross"):
                    old = getattr(self, name)
                    new = np.zeros((2 * old.shape[0], *old.shape[1:]), dtype=old.dtype)
                    new[:old.shape[0]] = old
                    setattr(self, name, new)
        return s

    def copy(self) -> _Counts:
        c = _Counts(self.n.size)
        c.slots, c.keys, c.cats = dict(self.slots), list(self.keys), Counter(self.cats)
        for name in ("counts", "n", "spec_n", "spec_sum", "spec_cross"):
            getattr(c, name)[...] = getattr(self, name)
        return c

    def add_rows(self, slots: NDArray[np.intp], bins: NDArray[np.integer],
                 spec_slots: NDArray[np.intp], spec: F64,
                 names: Counter[tuple[int, str]]) -> None:
        """Add ``m`` reports: their slots, bins ``(m, len(FEATURES))``, the complete
        spectra (``(k, len(SPECTRUM_BANDS))``) with their slots, category counts."""
        if slots.size:
            flat = (slots * _FW)[:, None] + _COLS + bins
            np.add.at(self.counts.reshape(-1), flat.ravel(), 1)
            np.add.at(self.n, slots, 1)
        self.cats.update(names)
        if not spec_slots.size:
            return
        for s in np.unique(spec_slots).tolist():
            sub = spec[spec_slots == s]
            self.spec_n[s] += sub.shape[0]
            self.spec_sum[s] += sub.sum(axis=0)
            self.spec_cross[s] += sub.T @ sub

    def add(self, batch: _Batch) -> None:
        """Add every row of ``batch``."""
        key_slot = np.array([self.slot(k) for k in batch.keys], dtype=np.intp)
        kidx, bins, cidx = batch.kidx, batch.bins, batch.cidx
        spec_rows, spec = batch.spec_rows, batch.spec
        slots = key_slot[kidx]
        nc = len(batch.categories)
        per = np.bincount(kidx * nc + cidx, minlength=len(batch.keys) * nc)
        names: Counter[tuple[int, str]] = Counter()
        for j in np.flatnonzero(per).tolist():
            s, count = int(key_slot[j // nc]), int(per[j])
            for name in category_names(batch.categories[j % nc]):
                names[(s, name)] += count
        self.add_rows(slots, bins, key_slot[batch.kidx[spec_rows]], spec, names)

    def cells(self) -> list[HistCell]:
        used = len(self.keys)
        keys = self.keys
        counts = self.counts[:used]
        s_idx, col = np.nonzero(counts)
        values = counts[s_idx, col].tolist()
        out: list[HistCell] = [
            (*keys[s], _NAMES[c // _W], c % _W - 1, float(v))
            for s, c, v in zip(s_idx.tolist(), col.tolist(), values, strict=True)
        ]
        for s, key in enumerate(keys):
            if self.n[s]:
                out.append((*key, "n", 0, float(self.n[s])))
            if self.spec_n[s]:
                out.append((*key, "spec_n", 0, float(self.spec_n[s])))
                out += [(*key, "spec_sum", i, v) for i, v in enumerate(self.spec_sum[s].tolist())]
                cross = self.spec_cross[s][_IU].tolist()
                out += [(*key, "spec_cross", b, v)
                        for b, v in zip(_CROSS_BINS, cross, strict=True)]
        out += [(*keys[s], name, 0, float(v)) for (s, name), v in self.cats.items() if v]
        return out


def aggregate(
    key: Key, bins: NDArray[np.integer], spectra: NDArray[np.floating],
    categories: Sequence[Sequence[str]],
) -> list[HistCell]:
    """The cells of ``m`` reports of one key: ``bins`` (m, len(FEATURES)) bin indexes,
    ``spectra`` (m, len(SPECTRUM_BANDS)) band levels, each report's category names."""
    acc = _Counts(1)
    s = acc.slot(key)
    spec = np.asarray(spectra, dtype=np.float64)
    spec = spec[np.isfinite(spec).all(axis=1)]
    acc.add_rows(np.full(len(bins), s, dtype=np.intp), np.asarray(bins, dtype=np.intp),
                 np.full(spec.shape[0], s, dtype=np.intp), spec,
                 Counter((s, name) for cs in categories for name in cs))
    return acc.cells()


class Histograms:
    """The consumer's side of the monitoring histograms (see the module docstring).

    Per commit: :meth:`observe` per scored batch (it returns the batch as an
    :class:`Observed`, which travels with the batch's rows), :meth:`prepare` with the
    observed batches whose rows the next commit stores, the store calls the object itself
    (:class:`cloud.store.HistogramHook`) inside the commit with the rows it newly inserted,
    and :meth:`committed` after the commit returned. The hook stages the new rows (which
    rows of which observed batch: all of them, unless some were already stored);
    :meth:`committed` keeps them, and once :data:`BIN_ROWS` are kept bins them together
    and adds them to the counts held (:class:`_Counts`). Every ``flush_s`` the hook
    returns all of it as cells for that commit to add (``flush_s = 0``: every commit). A
    commit that failed and is retried stages its rows again, so nothing is counted twice;
    what is held when the process dies (at most ``flush_s`` of reports) is lost, never
    doubled; a consumer that stops writes what it holds (:meth:`flush_next`, then a
    commit with no rows). The database sees one upsert per cell per flush, whatever the
    report rate. A bug here never blocks a commit: it is logged and counted, and the
    histograms miss rows.
    """

    def __init__(self, *, bucket_ns: int = BUCKET_NS, flush_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket_ns = bucket_ns
        self.flush_s = flush_s
        self._clock = clock
        self._parts: list[Observed] = []  # the next commit's observed batches (prepare)
        self._parts_rows = 0
        self._held = _Counts()
        self._kept: list[Part] = []  # committed, not yet binned
        self._kept_rows = 0
        self._staged: list[Part] = []
        self._staged_rows = 0
        self._flushing = False
        self._flush_decided: bool | None = None  # by prepare, for its commit
        self._last_flush = clock()
        self.observed = 0
        self.unobserved = 0  # new rows the hook was given that no prepared batch holds
        self.errors = 0
        self.flushes = 0

    @property
    def held(self) -> bool:
        """Whether counts are held that no commit has written yet."""
        return bool(self._held) or bool(self._kept)

    def flush_next(self) -> None:
        """Make the next commit write every count held (e.g. before stopping)."""
        self._last_flush = -math.inf

    def due(self) -> bool:
        """Whether a commit prepared now writes every count held (``flush_s`` since the
        last flush, or :meth:`flush_next`)."""
        return self._clock() - self._last_flush >= self.flush_s

    def observe(self, reports: Sequence[Report], results: Sequence[ResultRow]
                ) -> Observed | None:
        """One scored batch (``reports[i]`` scored as ``results[i]``), to hand to
        :meth:`prepare` with the commit that stores its rows; None when reading it failed
        (logged and counted: its rows are missing from the histograms)."""
        try:
            if len(reports) != len(results):
                raise ValueError(f"{len(reports)} reports scored as {len(results)} results")
            obs = Observed(
                raw=_raw(_row_values(reports, results)), facts=_facts(results, self.bucket_ns),
                spectra=[(i, rep.spectrum) for i, rep in enumerate(reports)
                         if spectrum_sampled(rep)],
                results=results)
        except Exception:
            self.errors += 1
            log.exception("monitoring histograms: observing %d reports failed", len(reports))
            return None
        self.observed += len(results)
        return obs

    def prepare(self, observed: Sequence[Observed | None]) -> bool:
        """The next commit stores the rows of ``observed`` (in this order: its results).
        Returns whether it writes every count held: decided here, once for the commit and
        its retries, so the consumer writes its usage counts in the same commit (a check
        of :meth:`due` in the hook could fall on the other side of the boundary)."""
        self._parts = [o for o in observed if o is not None]
        self._parts_rows = sum(len(o.results) for o in self._parts)
        self._flush_decided = self.due()
        return self._flush_decided

    def __call__(self, rows: Sequence[ResultRow]) -> list[HistCell]:
        try:
            return self.cells(rows)
        except Exception:
            self.errors += 1
            self._staged, self._staged_rows, self._flushing = [], 0, False
            log.exception("monitoring histograms: cells of %d results failed", len(rows))
            return []

    def committed(self) -> None:
        """The commit returned: keep what it staged (or forget what it flushed)."""
        self._parts, self._parts_rows, self._flush_decided = [], 0, None
        if self._flushing:
            self._held, self._kept, self._kept_rows = _Counts(), [], 0
            self._last_flush = self._clock()
            self.flushes += 1
        else:
            for o, _ in self._staged:
                o.results = ()  # their identities were needed by the commit's staging only
            self._kept += self._staged
            self._kept_rows += self._staged_rows
            if self._kept_rows >= BIN_ROWS:
                kept, self._kept, self._kept_rows = self._kept, [], 0
                try:
                    self._held.add(_bin(kept))
                except Exception:
                    self.errors += 1
                    log.exception("monitoring histograms: binning %d results failed",
                                  sum(len(o.facts) if i is None else i.size for o, i in kept))
        self._staged, self._staged_rows, self._flushing = [], 0, False

    def _stage(self, rows: Sequence[ResultRow]) -> tuple[list[Part], int]:
        """Which rows of the prepared batches ``rows`` (distinct, newly inserted) are."""
        parts = self._parts
        if len(rows) == self._parts_rows:  # all of them (the usual commit: nothing redelivered)
            return [(o, None) for o in parts if o.results], len(rows)
        new = set(map(_IDENTITY, rows))
        staged: list[Part] = []
        n = 0
        for o in parts:
            idx: list[int] = []
            for i, ident in enumerate(map(_IDENTITY, o.results)):
                if ident in new:
                    new.remove(ident)  # a report twice in one commit counts once
                    idx.append(i)
            if idx:
                staged.append((o, None if len(idx) == len(o.results)
                               else np.array(idx, dtype=np.intp)))
                n += len(idx)
        if new:
            self.unobserved += len(new)
            log.warning("monitoring histograms: %d new results of no prepared batch "
                        "(not counted)", len(new))
        return staged, n

    def cells(self, rows: Sequence[ResultRow]) -> list[HistCell]:
        """Stage ``rows`` (newly stored: distinct rows of the prepared batches); the cells
        to add in this commit (all counts held, when a flush is due: as :meth:`prepare`
        decided, else now; else none)."""
        staged, n = self._stage(rows)
        self._staged, self._staged_rows = staged, n
        decided = self._flush_decided
        self._flushing = self.due() if decided is None else decided
        if not self._flushing:
            return []
        total = self._held.copy()
        parts = self._kept + staged
        if parts:
            total.add(_bin(parts))
        return total.cells()
