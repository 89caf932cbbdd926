"""The dashboard's Models page in real headless Chromium: each monitored version with its
drift status and unexplained features, its usage (calls, reports, errors, dead letters,
latency quantiles per bundle and pump) and its label-based quality (precision, confusion,
time to detection from closed asset alarms), read from the store through /api/monitoring."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.monitor.run import evaluate, summary
from cloud.monitor.usage import Usage
from cloud.store import AlarmChange, Commit, make_store
from tests.test_consumer_alarms import row
from tests.test_dashboard_browser import DashboardProcess, browser  # noqa: F401 -- fixture
from tests.test_monitor_cli import DAY, T0, at
from tests.test_monitor_drift import cells, values


def test_models_page_shows_each_versions_drift(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'r.db'}"
    rng = np.random.default_rng(8)
    ref = at(cells(values(rng, 3000)), T0, "pumps/1")

    async def seed() -> None:
        s = make_store(url, synchronous="normal")
        await s.open()
        for v, shift in (("pumps/1", {"log:v1x": 2.0}), ("pumps/2", {})):
            live = at(cells(values(rng, 600, shift=shift)), T0 + DAY, v)
            rep = evaluate(v, live, since_ns=T0 + DAY, until_ns=T0 + 2 * DAY,
                           reference_cells=[(v, *c[1:]) for c in ref])
            await s.record_monitor_run(summary(rep, checked_ns=T0 + 2 * DAY))
        # usage: pumps/1 on two bundles (now: inside the page's 24 h window)
        u = Usage()
        for k in range(20):
            u.invocation(target="pumpwatch/site-a", latency_s=0.004 + 0.001 * k,
                         reports={("pumps/1", "p1"): 7, ("pumps/1", "p2"): 3})
        u.invocation(target="pumpwatch/site-b", latency_s=0.2, reports={("pumps/1", "p9"): 5})
        u.error(model_version="pumps/1", target="pumpwatch/site-a", outcome="unavailable")
        u.dead_letter(model_version="pumps/1", target="pumpwatch/site-a", pump="p2")
        await s.commit(Commit(usage=u.cells()))
        # quality: two asset alarms raised by pumps/2, one closed as confirmed, one as no fault
        evaluate_alarms = AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1,
                                                   zone_alarm_at=None)).evaluate
        raised = [msgspec.structs.replace(row(100, anomalous=True, pump=p),
                                          condition="outer_race", model_version="pumps/2")
                  for p in ("P1", "P2")]
        await s.commit(Commit(results=raised), alarms=evaluate_alarms)
        now = time.time_ns()
        for a, verdict in zip(sorted(await s.alarms(kind="asset"), key=lambda a: a.pump),
                              ("outer_race", "no_fault_found"), strict=True):
            await s.change_alarm(a.id, AlarmChange(
                action="close", actor="ann", at_ns=now, verdict=verdict, action_taken="checked",
                onset_ns=a.raised_ns - 30 * 10**9))
        await s.close()

    with concurrent.futures.ThreadPoolExecutor(1) as ex:  # Playwright's loop owns this thread
        ex.submit(asyncio.run, seed()).result()
    dash = DashboardProcess(url, tmp_path / "dash.log")
    base = dash.start()
    try:
        page = browser.new_page()
        page.goto(base)
        page.click("#models-link")  # the fleet page's header links the Models page
        page.wait_for_selector(
            "#models tbody tr[data-version='pumps/2'], #models-error:not([hidden])")
        assert page.locator("#models-error").is_hidden(), page.locator("#models-error").inner_text()
        drift = page.locator("#models tr[data-version='pumps/1']")
        assert drift.get_attribute("data-status") == "drift"
        assert "log:v1x" in drift.inner_text()
        ok = page.locator("#models tr[data-version='pumps/2']")
        assert ok.get_attribute("data-status") == "ok"

        a = page.locator("#usage tr[data-target='pumpwatch/site-a']")
        assert a.get_attribute("data-version") == "pumps/1"
        assert a.locator("td.calls").inner_text() == "20"
        assert a.locator("td.reports").inner_text() == "200"
        assert a.locator("td.errors").inner_text() == "1 (1 / 0)"
        assert a.locator("td.dead-letters").inner_text() == "1"
        p50 = float(a.locator("td.p50").inner_text().removesuffix(" ms"))
        assert 10 <= p50 <= 16  # the calls took 4..23 ms: their median 13.5, within a bin
        b = page.locator("#usage tr[data-target='pumpwatch/site-b']")
        assert 158 <= float(b.locator("td.p99").inner_text().removesuffix(" ms")) <= 252  # 1 bin
        page.click("#usage-pumps-block summary")  # the per-pump table opens on a click
        pumps = page.locator("#usage-pumps tr[data-pump='p2']")
        assert pumps.locator("td.reports").inner_text() == "60"
        assert pumps.locator("td.dead-letters").inner_text() == "1"
        assert page.locator("#usage-empty").is_hidden()

        q = page.locator("#quality tr[data-version='pumps/2']")
        assert q.locator("td.closed").inner_text() == "2"
        assert q.locator("td.precision").inner_text() == "50.0%"
        assert q.locator("td.agreement").inner_text() == "100.0%"
        assert q.locator("td.ttd").inner_text() == "30 s / 30 s (n=1)"
        agree = page.locator("#confusion tr[data-verdict='outer_race']")
        assert agree.get_attribute("data-named") == "outer_race"
        assert agree.locator("td.n").inner_text() == "1"
        assert page.locator("#confusion tr[data-verdict='no_fault_found'] td.n").inner_text() \
            == "1"
        page.close()
    finally:
        dash.stop()
