"""The pump page's alarm lifecycle in real headless Chromium, against a real dashboard
process (with a token) over a real SQLite store: an operator acknowledges an asset alarm
and closes it with a verdict; the store holds the verdict, and a second page open on the
same pump sees the change through the live stream."""

from __future__ import annotations

import asyncio
import concurrent.futures
from pathlib import Path
from typing import Any

import pytest

from cloud.store import make_store
from tests.test_alarm_lifecycle import TOKEN, seed
from tests.test_dashboard_browser import DashboardProcess, browser  # noqa: F401 -- fixture


def in_thread(coro: Any) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as ex:  # Playwright's loop owns this thread
        return ex.submit(asyncio.run, coro).result()


def test_operator_closes_an_alarm_with_a_verdict(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    in_thread(seed(url))
    monkeypatch.setenv("PUMPWATCH_DASHBOARD_TOKEN", TOKEN)
    dash = DashboardProcess(url, tmp_path / "dash.log")
    base = dash.start()
    try:
        ctx = browser.new_context()
        page, watcher = ctx.new_page(), ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for p in (page, watcher):
            p.goto(f"{base}?token={TOKEN}#/pump/p1")
            p.wait_for_selector(".lc-alarm[data-status='open'], #lifecycle-error:not([hidden])")
        err = page.locator("#lifecycle-error")
        assert err.is_hidden(), err.inner_text()
        card = page.locator(".lc-alarm")
        assert card.count() == 1 and card.get_attribute("data-severity") == "critical"
        assert "Replace the drive-end bearing" in card.inner_text()
        page.fill("#lifecycle-by", "ann")
        page.click(".lc-ack")
        page.wait_for_selector(".lc-alarm[data-status='acknowledged']")
        page.select_option(".lc-verdict-input", "bearing_outer")
        page.fill(".lc-taken-input", "replaced DE bearing")
        page.fill(".lc-note-input", "spalled outer race")
        page.click(".lc-close")
        page.wait_for_selector(".lc-alarm[data-status='closed']")
        text = page.locator(".lc-alarm").inner_text()
        assert "closed by ann: bearing_outer" in text and "replaced DE bearing" in text
        assert page.locator(".lc-events li").count() == 2
        # the other page got it from the stream (it never clicked anything)
        watcher.wait_for_selector(".lc-alarm[data-status='closed']", timeout=15_000)
        assert not errors, errors
        ctx.close()
    finally:
        dash.stop()

    async def stored() -> Any:
        s = make_store(url)
        await s.open()
        try:
            return await s.alarms(kind="asset", pump="p1")
        finally:
            await s.close()

    (row,) = in_thread(stored())
    assert row.lifecycle.verdict == "bearing_outer" and row.lifecycle.closed_by == "ann"
    assert row.lifecycle.note == "spalled outer race" and row.state == "cleared"
