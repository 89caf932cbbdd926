"""Monitoring histograms: binned per batch, added inside the commit, merged across writers.

On both stores: a redelivered report is counted once; two consumers (two store
connections) committing concurrently into the same cells sum exactly; a failed commit
that is retried still counts its rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import dsp
from cloud.monitor import histograms
from cloud.monitor.histograms import (
    BY_NAME,
    FEATURES,
    SPECTRUM_BANDS,
    Histograms,
    bin_index,
    regime,
    regime_names,
    spectrum_levels,
    spectrum_levels_many,
    spectrum_sampled,
)
from cloud.store import Commit, ResultRow, Store, make_store
from tests.test_store_sqlite import result

S = 1_000_000_000


def reports(n: int, *, seed: int = 0, amp: float = 1.0) -> list[dsp.Report]:
    rng = np.random.default_rng(seed)
    fs = 25600.0
    cfg = dsp.ReportConfig().at_rate(fs)
    spec = dsp.ChannelSpec(asset=dsp.Asset(), rpm=1800.0, rpm_source="given")
    out = []
    for i in range(n):
        t = np.arange(int(fs)) / fs
        x = (amp * np.sin(2 * np.pi * 30 * t) + 0.1 * rng.standard_normal(t.size))
        (res,) = dsp.analyze(x.astype(np.float32)[None, :], cfg, [spec])
        out.append(dsp.make_report(res, cfg, spec, device="d1", epoch=16, seq=i, site="s",
                                   pump="p1", channel="x", t0_ns=i * S))
    return out


def rows_for(reps: list[dsp.Report], **over: object) -> list[ResultRow]:
    return [msgspec.structs.replace(result(seq=r.seq, t0=r.t0_ns), extra={"decided_by":
                                    "classifier"}, **over) for r in reps]


def totals(cells: list[tuple[Any, ...]]) -> dict[tuple[str, int], float]:
    out: dict[tuple[str, int], float] = {}
    for *_key, feature, b, v in cells:
        out[(feature, b)] = out.get((feature, b), 0.0) + v
    return out


def held(h: Histograms) -> bool:
    return h.held  # (a call, so that mypy does not narrow the property across steps)


def test_binning_has_fixed_edges_with_under_overflow_and_missing() -> None:
    f = BY_NAME["skewness"]
    values = np.full((4, len(FEATURES)), np.nan)
    j = [x.name for x in FEATURES].index("skewness")
    values[:, j] = [-11.0, -9.9, 9.99, 1e9]
    idx = bin_index(values)
    assert idx[:, j].tolist() == [0, 1, f.bins, f.bins + 1]
    assert (idx[:, j - 1] == -1).all()  # missing stays missing
    assert regime(0.0) == "unknown" and regime(1800.0) == "1500-2100rpm"
    assert regime(5000.0) == ">=3300rpm"
    rpm = np.array([np.nan, 0.0, 899.0, 900.0, 1800.0, 3300.0, 9000.0])
    assert regime_names(rpm) == [regime(float(x)) for x in rpm]


def test_feature_values_read_each_field_missing_ones_as_missing() -> None:
    # Per report, field by field: a missing line (None), a speed of 0 (none measured) and
    # a result without a speed (the regime then comes from the report's speed).
    import math

    reps = reports(3, seed=7)
    reps[1] = msgspec.structs.replace(
        reps[1], features=msgspec.structs.replace(reps[1].features, env_bpfo=None, v2x=None),
        speed=dsp.Speed(0.0, "unknown"))
    rows = rows_for(reps)
    rows[2] = msgspec.structs.replace(rows[2], rpm=None, anomaly_score=0.25)
    got = histograms.feature_values(reps, rows)
    for i, (rep, row) in enumerate(zip(reps, rows, strict=True)):
        for j, f in enumerate(histograms.SCALAR_FEATURES):
            name = f.name.removeprefix("log:")
            v = (rep.speed.rpm or None) if name == "rpm" else getattr(rep.features, name)
            if v is None:
                assert np.isnan(got[i, j]), (i, f.name)
            else:
                want = math.log10(max(v, histograms.LOG_FLOOR)) if f.name.startswith("log:") \
                    else v
                assert got[i, j] == pytest.approx(want), (i, f.name)
        assert got[i, -1] == pytest.approx(math.log10(row.anomaly_score))
    assert np.isnan(got[1, [f.name for f in FEATURES].index("rpm")])
    raw = histograms._raw(histograms._row_values(reps, rows))
    assert raw[2, -1] == reps[2].speed.rpm and raw[0, -1] == rows[0].rpm  # the regime's speed


def test_every_feature_of_a_report_lands_in_one_bin_and_categories_count() -> None:
    reps = reports(6)
    h = Histograms(flush_s=0)
    rows = rows_for(reps)
    h.prepare([h.observe(reps, rows)])
    t = totals(h(rows))
    assert t[("n", 0)] == 6 and t[("class:healthy", 0)] == 6
    assert t[("decided_by:classifier", 0)] == 6
    for f in FEATURES:
        assert sum(v for (name, _b), v in t.items() if name == f.name) == 6, f.name
    # a 1 g, 30 Hz line lands in the right velocity bin (not under/overflow)
    vel = [b for (name, b), _v in t.items() if name == "log:velocity_rms"]
    assert all(0 < b <= BY_NAME["log:velocity_rms"].bins for b in vel)
    sampled = sum(map(spectrum_sampled, reps))  # 1 in 16 reports' spectra, by identity
    assert t.get(("spec_n", 0), 0) == sampled and 1 <= sampled < 6
    many = reports(64, seed=3)
    obs = h.observe(many, rows_for(many))
    assert obs is not None
    assert [i for i, _ in obs.spectra] == [i for i, r in enumerate(many) if spectrum_sampled(r)]
    h.committed()
    assert h(rows) == [] and h.unobserved == 6  # a commit's rows count in that commit only


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'r.db'}"
    else:
        yield str(request.getfixturevalue("postgres_url"))


async def opened(url: str) -> Store:
    s = make_store(url, synchronous="normal") if url.startswith("sqlite") else make_store(url)
    await s.open()
    return s


async def test_two_consumers_merge_and_redeliveries_count_once(url: str) -> None:
    reps = reports(40, seed=1)
    a, b = await opened(url), await opened(url)
    try:
        ha, hb = Histograms(flush_s=0), Histograms(flush_s=0)
        rows = rows_for(reps)
        # consumer A stores the even reports, B the odd ones, concurrently, in small commits;
        # then B is redelivered A's first ten (already stored: must not count again)
        async def run(store: Store, h: Histograms, part: list[int]) -> None:
            for k in range(0, len(part), 5):
                idx = part[k:k + 5]
                batch_reps, batch_rows = [reps[i] for i in idx], [rows[i] for i in idx]
                h.prepare([h.observe(batch_reps, batch_rows)])
                await store.commit(Commit(results=batch_rows), histograms=h)
                h.committed()

        await asyncio.gather(run(a, ha, list(range(0, 40, 2))), run(b, hb, list(range(1, 40, 2))))
        await run(b, hb, list(range(0, 20, 2)))
        got = await a.histograms(since_ns=0, until_ns=10**12)
        expect = Histograms(flush_s=0)
        expect.prepare([expect.observe(reps, rows)])
        assert totals(got) == pytest.approx(totals(expect(rows)))
        assert totals(got)[("n", 0)] == 40
        assert {c[0] for c in got} == {"m1"} and {c[3] for c in got} == {0}
        assert await a.histograms(since_ns=10**12, until_ns=2 * 10**12) == []
    finally:
        await a.close()
        await b.close()


async def test_counts_are_held_until_a_flush_and_a_failed_commit_counts_once(
    tmp_path: Path,
) -> None:
    reps = reports(12, seed=2)
    rows = rows_for(reps)
    now = [0.0]
    h = Histograms(flush_s=10.0, clock=lambda: now[0])
    s = await opened(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        h.prepare([h.observe(reps[:6], rows[:6])])
        await s.commit(Commit(results=rows[:6]), histograms=h)
        h.committed()
        assert await s.histograms(since_ns=0, until_ns=10**12) == []  # held
        now[0] = 11.0
        h.prepare([h.observe(reps[6:], rows[6:])])
        assert h(rows[6:])  # a flush is due: this commit fails (never committed) ...
        await s.commit(Commit(results=rows[6:]), histograms=h)  # ... and is retried
        h.committed()
        got = totals(await s.histograms(since_ns=0, until_ns=10**12))
        assert got[("n", 0)] == 12 and h.flushes == 1
    finally:
        await s.close()


async def test_monitor_runs_keep_the_newest_check_and_the_first_bucket_is_known(
    url: str,
) -> None:
    from cloud.store import MonitorRun

    s = await opened(url)
    try:
        assert await s.histogram_start("m1") is None
        reps = reports(4, seed=3)
        rows = [msgspec.structs.replace(r, t0_ns=7200 * S + r.t0_ns) for r in rows_for(reps)]
        h = Histograms(flush_s=0)
        h.prepare([h.observe(reps, rows)])
        await s.commit(Commit(results=rows), histograms=h)
        assert await s.histogram_start("m1") == 7200 * S
        for checked, status in ((5, "drift"), (9, "ok"), (7, "drift")):  # 7 arrives late
            await s.record_monitor_run(MonitorRun(model_version="m1", checked_ns=checked,
                                                  status=status, summary="{}"))
        (run,) = await s.monitor_runs()
        assert (run.checked_ns, run.status) == (9, "ok")
    finally:
        await s.close()


def test_spectrum_levels_of_a_batch_are_each_reports_band_means() -> None:
    # Reference: every line dequantized, the band's lines [ceil(lo/df), ceil(hi/df))
    # averaged. Two layouts in one batch (12 kHz and 25.6 kHz sensors), decoded together.
    reps = reports(3, seed=4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(12000).astype(np.float32)
    cfg = dsp.ReportConfig().at_rate(12000.0)
    spec = dsp.ChannelSpec(asset=dsp.Asset(), rpm=1800.0, rpm_source="given")
    (res,) = dsp.analyze(x[None, :], cfg, [spec])
    reps.append(dsp.make_report(res, cfg, spec, device="d1", epoch=16, seq=99, site="s",
                                pump="p1", channel="x", t0_ns=0))
    got = spectrum_levels_many([r.spectrum for r in reps])
    for row, r in zip(got, reps, strict=True):
        db, df = r.spectrum.db(), r.spectrum.df
        for k, (lo, hi) in enumerate(SPECTRUM_BANDS):
            a, b = int(np.ceil(lo / df)), int(np.ceil(hi / df))
            if b <= db.size and b > a:
                assert row[k] == pytest.approx(db[a:b].mean(), abs=1e-9)
            else:
                assert np.isnan(row[k])
    assert np.array_equal(got[1], spectrum_levels(reps[1]), equal_nan=True)
    assert reps[0].spectrum.df != reps[-1].spectrum.df  # two layouts in the batch
    assert np.isfinite(got).all()  # both sensors reach every band


@pytest.mark.parametrize("bin_rows", [1, 4, 1024])  # binned per commit, every few, at flush
def test_commits_count_their_new_rows_once_and_a_retry_only_its_own(
    bin_rows: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(histograms, "BIN_ROWS", bin_rows)
    reps = reports(16, seed=5)
    rows = rows_for(reps)
    h = Histograms(flush_s=1e9)
    # one commit of three jobs' batches; new: rows 3-8 (the rest stored before), and rows
    # 3 and 4 are in it twice (a redelivery in another job)
    h.prepare([h.observe(reps[:6], rows[:6]), h.observe(reps[6:12], rows[6:12]),
               h.observe(reps[3:5], rows[3:5])])
    assert h(rows[3:9] + rows[3:5]) == []  # held: no flush due
    h.committed()
    h.prepare([h.observe(reps[9:], rows[9:])])
    h(rows[9:])  # this attempt fails ...
    h(rows[12:])  # ... and the retry finds 9-11 stored by another consumer meanwhile
    h.committed()
    assert h.held and h([]) == []
    h.prepare([])
    h(rows[:2])  # new rows of no prepared batch: not counted, and counted as such
    h.committed()
    assert h.unobserved == 2
    h.flush_next()
    t = totals(h([]))
    assert t[("n", 0)] == 10 and t[("class:healthy", 0)] == 10
    expect = Histograms(flush_s=0)
    idx = [*range(3, 9), *range(12, 16)]
    expect.prepare([expect.observe([reps[i] for i in idx], [rows[i] for i in idx])])
    assert t == pytest.approx(totals(expect([rows[i] for i in idx])))


async def test_a_report_twice_in_one_commit_is_stored_and_counted_once(url: str) -> None:
    reps = reports(6, seed=8)
    rows = rows_for(reps)
    s = await opened(url)
    try:
        h = Histograms(flush_s=0)
        h.prepare([h.observe(reps, rows), h.observe(reps[:2], rows[:2])])
        out = await s.commit(Commit(results=rows + rows[:2]), histograms=h)
        h.committed()
        assert out.results_inserted == 6
        assert totals(await s.histograms(since_ns=0, until_ns=10**12))[("n", 0)] == 6
    finally:
        await s.close()


def test_a_batch_that_cannot_be_read_is_counted_as_an_error_not_raised() -> None:
    reps = reports(3, seed=10)
    rows = rows_for(reps)
    h = Histograms(flush_s=0)
    assert h.observe(reps, rows[:2]) is None  # the consumer's commit goes on
    assert h.errors == 1 and h.observed == 0
    h.prepare([None, h.observe(reps[2:], rows[2:])])
    assert totals(h(rows[2:]))[("n", 0)] == 1


def test_the_flush_is_decided_once_per_commit_when_it_is_prepared() -> None:
    # the consumer writes its usage counts in the commit prepare says flushes: the hook
    # must not decide otherwise when the boundary passes while the commit runs
    reps = reports(4, seed=9)
    rows = rows_for(reps)
    now = [0.0]
    h = Histograms(flush_s=10.0, clock=lambda: now[0])
    assert h.prepare([h.observe(reps[:2], rows[:2])]) is False
    now[0] = 10.5
    assert h(rows[:2]) == []  # held: not this commit's flush
    h.committed()
    assert h.held and h.flushes == 0
    assert h.prepare([h.observe(reps[2:], rows[2:])]) is True
    assert totals(h(rows[2:]))[("n", 0)] == 4
    assert totals(h(rows[2:]))[("n", 0)] == 4  # a retry of the commit flushes as well
    h.committed()
    assert h.flushes == 1 and not h.held


async def test_held_counts_are_written_by_a_commit_without_rows(tmp_path: Path) -> None:
    # what a consumer does when it stops (Consumer._flush_monitoring)
    reps = reports(5, seed=6)
    rows = rows_for(reps)
    h = Histograms(flush_s=3600.0)
    s = await opened(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        h.prepare([h.observe(reps, rows)])
        await s.commit(Commit(results=rows), histograms=h)
        h.committed()
        assert held(h) and await s.histograms(since_ns=0, until_ns=10**12) == []
        h.flush_next()
        await s.commit(Commit(), histograms=h)
        h.committed()
        assert not held(h) and h.flushes == 1
        got = totals(await s.histograms(since_ns=0, until_ns=10**12))
        assert got[("n", 0)] == 5
    finally:
        await s.close()
