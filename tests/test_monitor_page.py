"""The dashboard's Models page in real headless Chromium: each monitored version with its
drift status and unexplained features, read from the store through /api/monitoring."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import numpy as np

from cloud.monitor.run import evaluate, summary
from cloud.store import make_store
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
        drift = page.locator("tr[data-version='pumps/1']")
        assert drift.get_attribute("data-status") == "drift"
        assert "log:v1x" in drift.inner_text()
        assert page.locator("tr[data-version='pumps/2']").get_attribute("data-status") == "ok"
        page.close()
    finally:
        dash.stop()
