"""The dashboard's /metrics, scraped over HTTP from the real app on a real socket, on both
stores (written through the consumer's store code)."""

from __future__ import annotations

import asyncio
import time

from tests.infra.scrape import Scrape, assert_documented, parse
from tests.test_dashboard_api import Client, commit, reports, served
from tests.test_dashboard_api import db as db  # the fixture: SQLite and PostgreSQL


async def scrape(client: Client) -> Scrape:
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return parse(await resp.text())


async def scrape_until(client: Client, name: str, at_least: float) -> Scrape:
    """Scrape until ``name`` reaches ``at_least`` (the event), or fail after 20 s."""
    deadline = time.monotonic() + 20
    while True:
        s = await scrape(client)
        if s.value(name) >= at_least:
            return s
        assert time.monotonic() < deadline, f"{name} stayed below {at_least}"
        await asyncio.sleep(0.05)


async def test_dashboard_metrics_count_requests_and_stream_events(db: str) -> None:
    await commit(db, reports(("p1", "p2"), 4, epoch=3))
    async with served(db) as client:
        for _ in range(3):
            async with client.get("/api/pumps") as resp:
                assert resp.status == 200
        async with client.get("/api/pumps/nope/history") as resp:
            assert resp.status == 404
        s0 = await scrape_until(client, "pumpwatch_dashboard_stream_polls_total", 2)
        sent0 = s0.value("pumpwatch_dashboard_stream_results_sent_total")
        # results committed while the app runs go out on the live stream, once each
        await commit(db, reports(("p1", "p2"), 6, epoch=4))
        await scrape_until(client, "pumpwatch_dashboard_stream_results_sent_total", sent0 + 6)
        polls = (await scrape(client)).value("pumpwatch_dashboard_stream_polls_total")
        s = await scrape_until(client, "pumpwatch_dashboard_stream_polls_total", polls + 2)

    assert s.value("pumpwatch_dashboard_stream_results_sent_total") == sent0 + 6
    assert s.value("pumpwatch_dashboard_requests_total", route="/api/pumps", code="200") == 3
    assert s.value("pumpwatch_dashboard_requests_total", route="/api/pumps/{pump}/history",
                   code="404") == 1
    assert s.value("pumpwatch_dashboard_request_seconds_count", route="/api/pumps") == 3
    assert s.value("pumpwatch_dashboard_stream_polls_total") > 0
    assert s.value("pumpwatch_dashboard_stream_subscribers") == 0
    assert s.value("pumpwatch_dashboard_stream_poll_errors_total") == 0
    assert_documented(s, "pumpwatch_dashboard_")
