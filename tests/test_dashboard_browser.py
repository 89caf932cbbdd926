"""The dashboard page in a real headless browser, over a store filled by the real pipeline.

Simulated reports (real DSP) are published to a real Mosquitto, the consumer
(``pumpwatch cloud``, a subprocess) scores them on the local model server and
commits them to the store -- SQLite or PostgreSQL, the whole suite runs on
both; ``pumpwatch dashboard`` (another subprocess) serves the page; Debian's
``chromium`` driven by Playwright loads it. Alarms are raised by the
consumer's own alarm state machines in its commits: a zone alarm for one pump
whose ISO limits the consumer config sets low (every other pump's high, and
anomaly alarms out of reach), so the stamps the live stream follows are the
production ones. With PUMPWATCH_SCREENSHOTS=DIR the suite saves the screenshots the
README shows there (``PUMPWATCH_SCREENSHOTS=docs`` refreshes docs/dashboard.png and
docs/dashboard-pump.png); otherwise they go to a temporary folder, so a test run
leaves the checkout clean.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsp
from cloud.store import StoreError, make_store
from tests.infra.model_server import ModelServerProcess, synth_reports
from tests.infra.mosquitto import Mosquitto, mosquitto_available
from tests.infra.pipeline import (
    ROOT,
    ConsumerProcess,
    Publisher,
    chunks,
    consumer_config,
    write_toml,
)
from tests.infra.require import need

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Where the page's screenshots go: PUMPWATCH_SCREENSHOTS (e.g. ``docs``), else a temp dir.
SHOTS = Path(os.environ.get("PUMPWATCH_SCREENSHOTS") or tempfile.mkdtemp(prefix="shots-"))
S = 1_000_000_000
# pump -> synth_reports options: healthy, louder (zones B..D), outer / inner race faults
PUMPS: dict[str, dict[str, float]] = {
    "P-101": {}, "P-102": {"gain": 2.2}, "P-103": {"outer": 20.0},
    "P-104": {"gain": 4.0}, "P-105": {"inner": 15.0}, "P-106": {"gain": 6.5},
}


def wait_for(pred: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {within_s} s waiting for {what}")


def _missing(what: str) -> None:
    need(what, "run `bash scripts/system-deps.sh` and `.venv/bin/pip install -e .[dev]`")


class DashboardProcess:
    """``pumpwatch dashboard`` as a subprocess; restartable on the same port."""

    def __init__(self, store_url: str, log_path: Path, extra: tuple[str, ...] = ()) -> None:
        self.store_url = store_url
        self.log_path = log_path
        self.extra = extra  # more ``pumpwatch dashboard`` options (e.g. --model-server URL)
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> str:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pumpwatch", "dashboard", "--store",
                 self.store_url, "--port", str(self.port), *self.extra],
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE, stderr=log, text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, f"dashboard did not report its URL: {line!r}"
        self.port = int(m.group(1))
        return m.group(0)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


@dataclass
class Stack:
    store_url: str
    url: str
    broker: Mosquitto
    topic: str
    device: str
    dashboard: DashboardProcess | None = None

    def publish(self, reports: list[dsp.Report]) -> None:
        encoded = [dsp.encode_report(r) for r in reports]
        with Publisher("127.0.0.1", self.broker.port, f"pub-{time.monotonic_ns()}") as pub:
            pub.publish_all(
                self.topic, [dsp.encode_batch(self.device, c) for c in chunks(encoded, 8)]
            )

    def _read(self, what: str, pump: str = "") -> Any:
        async def run() -> Any:
            sqlite = self.store_url.startswith("sqlite")
            store = make_store(self.store_url, readonly=True) if sqlite else make_store(
                self.store_url)
            try:
                await store.open()
                if what == "count":
                    return (await store.counts()).results
                if what == "alarms":
                    return await store.alarms(pump=pump, kind="episode")  # not the asset alarm
                return max((r.stored_ns for r in await store.results(pump=pump)), default=None)
            finally:
                await store.close()

        # On a thread of its own: Playwright's sync API keeps an event loop running here.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def stored_ns(self, pump: str) -> int | None:
        return self._read("stored_ns", pump)

    def count(self) -> int:
        try:
            return int(self._read("count"))
        except StoreError:  # not created yet
            return 0

    def alarm_updated_ns(self, pump: str) -> int:
        return max(int(a.updated_ns) for a in self._read("alarms", pump))


# The consumer's alarm config: zone alarms at C, with limits that put only ALARM_PUMP there
# (every other pump's limits out of reach), and anomaly alarms out of reach.
ALARM_PUMP = "P-109"
ALARMS_TOML = f"""
[[alarms.zone_limits]]
pump = "{ALARM_PUMP}"
limits = [0.01, 0.02, 0.03]

[[alarms.zone_limits]]
pump = "*"
limits = [1000.0, 2000.0, 3000.0]
"""


def fleet_reports(now_ns: int, per_pump: int = 10) -> list[dsp.Report]:
    out: list[dsp.Report] = []
    for k, (pump, opts) in enumerate(PUMPS.items()):
        reps = synth_reports(per_pump, pumps=(pump,), seed=k, device="gw-1", site="plant-a",
                             epoch=4242, seq0=k * per_pump, **opts)  # type: ignore[arg-type]
        out += [
            msgspec.structs.replace(r, t0_ns=now_ns - (per_pump - i) * 5 * S)
            for i, r in enumerate(reps)
        ]
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    if not mosquitto_available():
        _missing("mosquitto not installed")
    tmp = tmp_path_factory.mktemp("dashboard")
    if request.param == "sqlite":
        store_url = f"sqlite:///{tmp / 'results.db'}"
    else:
        pg = request.getfixturevalue("postgres_server")
        store_url = pg.create_database(f"dash_{time.monotonic_ns()}")
    root = "dash"
    with contextlib.ExitStack() as stack:
        broker = Mosquitto(tmp / "mosquitto", max_inflight_messages=1000).start()
        stack.callback(broker.stop)
        server = stack.enter_context(ModelServerProcess())
        cfg = consumer_config(broker_port=broker.port, endpoint_url=server.url, db=store_url,
                              topic_root=root, client_id="dash-consumer",
                              alarms={"raise_k": 1000, "window_n": 1000,
                                      "zone_alarm_at": "C"})
        config = write_toml(tmp / "cloud.toml", cfg)
        config.write_text(config.read_text() + ALARMS_TOML)
        consumer = ConsumerProcess(config, tmp / "consumer.log")
        consumer.start()
        stack.callback(consumer.stop)
        wait_for(lambda: "mqtt connected" in consumer.log_tail(), 30, "consumer connected")
        time.sleep(0.3)  # subscription granted
        s = Stack(store_url=store_url, url="", broker=broker,
                  topic=f"{root}/devices/gw-1/reports", device="gw-1")
        reports = fleet_reports(time.time_ns())
        s.publish(reports)
        wait_for(lambda: s.count() >= len(reports), 60, f"{len(reports)} results stored")

        dash = DashboardProcess(store_url, tmp / "dashboard.log")
        stack.callback(dash.stop)
        s.dashboard = dash
        s.url = dash.start()
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (Python package) not installed")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _missing("chromium not installed")
    # Playwright gives every launch a fresh throwaway profile (--user-data-dir) itself.
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    outside: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: outside.append(r.url)
          if not r.url.startswith((stack.url, "data:")) else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(stack.url)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    pg.wait_for_selector("#live[data-state='open']", timeout=10000)
    yield pg
    context.close()
    assert not outside, f"the page fetched from outside the machine: {outside}"
    assert not errors, f"JavaScript errors: {errors}"


def tiles(page: Any) -> dict[str, dict[str, str]]:
    return {
        t["pump"]: t
        for t in page.eval_on_selector_all(".tile", "ts => ts.map(t => ({...t.dataset}))")
    }


def test_page_loads_with_every_pump_from_the_pipeline(page: Any, stack: Stack) -> None:
    shown = tiles(page)
    assert sorted(shown) == sorted(PUMPS)
    api = page.evaluate("fetch('/api/pumps').then(r => r.json())")
    for p in api["pumps"]:  # tiles are coloured by the same zone the API reports
        assert shown[p["pump"]]["zone"] == p["iso_zone"], p["pump"]
        assert shown[p["pump"]]["alarm"] == "none"
    zones = {shown[p]["zone"] for p in PUMPS}
    assert len(zones) >= 3, f"the simulated fleet should span zones, got {zones}"
    assert page.inner_text("#fleet-counts").startswith(f"{len(PUMPS)} pumps")


def test_result_stored_after_load_appears_within_2_s(page: Any, stack: Stack) -> None:
    (rep,) = synth_reports(1, pumps=("P-107",), device="gw-1", site="plant-a", epoch=4243,
                           seed=99)
    stack.publish([msgspec.structs.replace(rep, t0_ns=time.time_ns())])
    page.wait_for_selector('.tile[data-pump="P-107"]', timeout=20000)
    wait_for(lambda: stack.stored_ns("P-107") is not None, 10, "P-107 stored")
    stored_ns = stack.stored_ns("P-107")
    assert stored_ns is not None
    shown_ms = float(page.get_attribute('.tile[data-pump="P-107"]', "data-updated-ms") or 0)
    latency_s = (shown_ms - stored_ns / 1e6) / 1e3
    assert latency_s < 2.0, f"shown {latency_s:.2f} s after it was stored"
    assert len(tiles(page)) == len(PUMPS) + 1


def test_alarm_shows_on_its_tile_with_evidence(page: Any, stack: Stack) -> None:
    """The consumer raises a zone alarm in the commit of the pump's first result; the tile
    shows it within 2 s of the alarm's stamp."""
    now = time.time_ns()
    reps = synth_reports(10, pumps=(ALARM_PUMP,), device="gw-1", site="plant-a", epoch=4246,
                         seed=11, outer=20.0)
    stack.publish([msgspec.structs.replace(r, t0_ns=now - (10 - i) * 5 * S)
                   for i, r in enumerate(reps)])
    page.wait_for_selector(f'.tile[data-pump="{ALARM_PUMP}"][data-alarm="raised"]',
                           timeout=20000)
    shown_after_s = (time.time_ns() - stack.alarm_updated_ns(ALARM_PUMP)) / 1e9
    assert shown_after_s < 2.0, f"alarm shown {shown_after_s:.2f} s after it was written"
    (alarm,) = stack._read("alarms", ALARM_PUMP)
    alarm_id = alarm.id
    item = page.locator(f'#fleet-alarms .alarm[data-alarm-id="{alarm_id}"]')
    text = item.inner_text()
    assert "ISO 20816 zone" in text and "mm/s, zone D" in text, text
    assert alarm_id.startswith(f"{ALARM_PUMP}:x:iso_zone:")
    page.wait_for_timeout(300)  # let the tile flash settle
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "dashboard.png"))


def test_pump_view_draws_its_charts(page: Any, stack: Stack) -> None:
    page.click(f'.tile[data-pump="{ALARM_PUMP}"]')
    page.wait_for_selector(f"body[data-pump-loaded='{ALARM_PUMP}']", timeout=10000)
    for chart in ("chart-score", "chart-velocity", "chart-spectrum", "chart-envelope"):
        points = int(page.get_attribute(f"#{chart}", "data-points") or 0)
        assert points > 5, f"{chart} drew {points} points"
        inked = page.evaluate(
            """id => { const c = document.getElementById(id);
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
                       return n; }""",
            chart,
        )
        assert inked > 2000, f"{chart} looks blank ({inked} painted pixels)"
    bars = page.eval_on_selector_all("#probabilities .pct", "els => els.length")
    assert bars >= 2
    assert page.locator('#pump-alarms .alarm[data-state="raised"]').count() == 1
    assert "ISO 20816 zone" in page.inner_text("#pump-alarms")
    assert not page.is_hidden("#pump-alarm")
    # A result for this pump stored now extends its trend without a reload.
    before = int(page.get_attribute("#chart-score", "data-points") or 0)
    (rep,) = synth_reports(1, pumps=(ALARM_PUMP,), device="gw-1", site="plant-a",
                           epoch=4244, seed=7, outer=20.0)
    stack.publish([msgspec.structs.replace(rep, t0_ns=time.time_ns())])
    # (polled from here: the page's CSP forbids the eval wait_for_function would need)
    wait_for(lambda: int(page.get_attribute("#chart-score", "data-points") or 0) > before, 15,
             "the new result on the anomaly trend")
    page.wait_for_timeout(1500)  # the spectrum refresh follows within about a second
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "dashboard-pump.png"), full_page=True)


def test_page_catches_up_after_the_server_restarts(page: Any, stack: Stack) -> None:
    """EventSource reconnects with Last-Event-ID; the new server replays from the store."""
    assert stack.dashboard is not None
    page.goto(stack.url + "#/")
    page.wait_for_selector('.tile[data-pump="P-101"]')
    assert stack.dashboard.stop() == 0  # SIGTERM: a clean exit, open streams ended
    page.wait_for_selector("#live:not([data-state='open'])", timeout=5000)
    (rep,) = synth_reports(1, pumps=("P-108",), device="gw-1", site="plant-a", epoch=4245,
                           seed=5)
    stack.publish([msgspec.structs.replace(rep, t0_ns=time.time_ns())])
    wait_for(lambda: stack.stored_ns("P-108") is not None, 10, "P-108 stored")
    stack.dashboard.start()
    page.wait_for_selector('.tile[data-pump="P-108"]', timeout=10000)
    # data-updated-ms is set only by stream events: it came through the resumed stream
    assert page.get_attribute('.tile[data-pump="P-108"]', "data-updated-ms")
    page.wait_for_selector("#live[data-state='open']", timeout=5000)


def test_wall_display_layout_scales(browser: Any, stack: Stack) -> None:
    context = browser.new_context(viewport={"width": 3840, "height": 2160})
    pg = context.new_page()
    try:
        pg.goto(stack.url)
        pg.wait_for_selector(".tile", timeout=15000)
        laptop_px = 13.0
        font = float(pg.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)"))
        assert font > 1.5 * laptop_px, f"root font {font}px on a 4K wall display"
        width = pg.evaluate("document.querySelector('.tile').getBoundingClientRect().width")
        assert width >= 15 * font - 1  # tiles grow with the type
        overflow = pg.evaluate("document.documentElement.scrollWidth > window.innerWidth")
        assert not overflow
    finally:
        context.close()


# -- issue 22: header counts, log-scale score, harmonics and sidebands, range, waterfall -----

LONG_PUMP = "P-201"  # a week of history committed through the store (see long_history)
LONG_STEP_S = 300
LONG_ROWS = 7 * 86400 // LONG_STEP_S  # 2016 results: more than any request's max_points
LONG_ARCHIVED = 40  # the newest reports also archived: spectra for the waterfall
# SKF 6205 (the synthetic pumps' bearing) defect orders, from the design brief
ORDERS_6205 = {"BPFO": 3.5848, "BPFI": 5.4152, "BSF": 2.35675, "FTF": 0.39828}


def new_page(browser: Any, stack: Stack, url_tail: str) -> tuple[Any, Any, list[str], list[str]]:
    """A fresh page at ``stack.url + url_tail``; its history requests and JS errors."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    requests: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(stack.url + url_tail)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    return context, pg, requests, errors


def api_get(page: Any, path: str) -> Any:
    return page.evaluate("p => fetch(p).then(r => r.json())", path)


def data_json(page: Any, selector: str, name: str) -> Any:
    return msgspec.json.decode(page.get_attribute(selector, f"data-{name}") or "null")


@pytest.fixture(scope="module")
def long_history(stack: Stack) -> int:
    """A week of ``LONG_PUMP`` results, one per 5 min up to now, committed with the
    consumer's write path (the store's ``commit``); the newest ``LONG_ARCHIVED`` also
    archived with their real DSP reports. Returns the newest window time (ns)."""
    from tests.test_dashboard_api import archive_for, result_for

    now = time.time_ns()
    reps = synth_reports(LONG_ARCHIVED, pumps=(LONG_PUMP,), device="gw-2", site="plant-b",
                         epoch=9, seed=21, outer=20.0)
    rows, archive = [], []
    for i in range(LONG_ROWS):
        t0 = now - (LONG_ROWS - 1 - i) * LONG_STEP_S * S
        rep = msgspec.structs.replace(reps[i % LONG_ARCHIVED], seq=i, t0_ns=t0)
        # scores spread over decades, as a fault developing over the week would
        rows.append(result_for(rep, anomaly_score=0.05 * 1.003 ** i, anomaly_threshold=2.0))
        if i >= LONG_ROWS - LONG_ARCHIVED:
            archive.append(archive_for(rep))

    async def run() -> None:
        from cloud.store import Commit
        store = make_store(stack.store_url)
        await store.open()
        try:
            await store.commit(Commit(results=rows, archive=archive))
        finally:
            await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    return rows[-1].t0_ns


def history_query(requests: list[str], before: int = 0) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit
    hist = [u for u in requests[before:] if "/history?" in u]
    assert hist, f"no history request among {requests[before:]}"
    return dict(parse_qsl(urlsplit(hist[-1]).query))


def test_header_counts_on_a_pump_page_opened_by_url_are_the_fleets(
    browser: Any, stack: Stack
) -> None:
    context, pg, _, errors = new_page(browser, stack, "#/pump/P-103")
    try:
        pg.wait_for_selector("body[data-pump-loaded='P-103']", timeout=15000)
        fleet = api_get(pg, "/api/pumps")["pumps"]
        want = {"pumps": str(len(fleet)),
                "alarm": str(sum(p["alarm_state"] == "raised" for p in fleet)),
                "zone-d": str(sum(p["iso_zone"] == "D" for p in fleet))}
        got = {k: pg.get_attribute("#fleet-counts", f"data-{k}") for k in want}
        assert got == want
        assert len(fleet) >= len(PUMPS)
        assert pg.inner_text("#fleet-counts").startswith(f"{len(fleet)} pumps · "
                                                        f"{want['alarm']} in alarm")
        assert not errors, errors
    finally:
        context.close()


def test_anomaly_chart_has_a_logarithmic_y_axis(
    browser: Any, stack: Stack, long_history: int
) -> None:
    context, pg, _, errors = new_page(browser, stack, f"#/pump/{LONG_PUMP}?range=7d")
    try:
        pg.wait_for_selector("body[data-range-loaded='7d']", timeout=15000)
        assert pg.get_attribute("#chart-score", "data-y-scale") == "log"
        ticks = data_json(pg, "#chart-score", "y-ticks")
        assert len(ticks) >= 3, ticks
        values = [v for v, _ in ticks]
        assert max(values) / min(values) >= 100  # the week's scores span decades
        # tick pixels are evenly spaced in log10(value), and not in value
        per_decade = [(ticks[i][1] - ticks[0][1]) / (math.log10(v) - math.log10(ticks[0][0]))
                      for i, (v, _) in enumerate(ticks) if i]
        assert max(per_decade) == pytest.approx(min(per_decade), rel=0.02), ticks
        per_unit = [abs(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(ticks)]
        assert max(per_unit) / min(per_unit) > 2, ticks
        assert not errors, errors
    finally:
        context.close()


def test_envelope_marks_defect_harmonics_and_sidebands_where_physics_puts_them(
    page: Any, stack: Stack
) -> None:
    page.goto(stack.url + "#/pump/P-103")
    page.wait_for_selector("body[data-pump-loaded='P-103']", timeout=15000)
    sp = api_get(page, "/api/pumps/P-103/spectrum")
    fr = sp["rpm"] / 60
    env = sp["envelope"]
    top = env["f0"] + env["df"] * (env["n"] - 1)
    drawn = {m["name"]: m for m in data_json(page, "#chart-envelope", "markers")}
    left, _, width, _ = data_json(page, "#chart-envelope", "plot")
    expected: dict[str, float] = {}
    for base, order in ORDERS_6205.items():
        for k in range(1, 6):
            if k * order * fr <= top:
                expected[base if k == 1 else f"{k}x{base}"] = k * order * fr
    expected["BPFI-1x"] = (ORDERS_6205["BPFI"] - 1) * fr
    expected["BPFI+1x"] = (ORDERS_6205["BPFI"] + 1) * fr
    expected["BSF-FTF"] = (ORDERS_6205["BSF"] - ORDERS_6205["FTF"]) * fr
    expected["2xBSF+FTF"] = (2 * ORDERS_6205["BSF"] + ORDERS_6205["FTF"]) * fr
    assert {"2xBPFO", "2xBSF", "5xFTF"} <= set(expected)  # within the envelope at ~49 Hz
    for name, hz in expected.items():
        assert name in drawn, f"{name} at {hz:.1f} Hz not drawn (drawn: {sorted(drawn)})"
        assert drawn[name]["hz"] == pytest.approx(hz, rel=2e-3), name
        # at its frequency on the axis: x = left + (hz - f0) / span * width
        px = left + (hz - env["f0"]) / (top - env["f0"]) * width
        assert drawn[name]["px"] == pytest.approx(px, abs=1.5), name
    beyond = [n for n in drawn if drawn[n]["hz"] > top]
    assert not beyond


def test_range_picker_changes_the_query_and_points_stay_within_the_downsampling(
    browser: Any, stack: Stack, long_history: int
) -> None:
    newest_ms = long_history / 1e6
    context, pg, requests, errors = new_page(browser, stack, f"#/pump/{LONG_PUMP}?range=7d")
    try:
        pg.wait_for_selector("body[data-range-loaded='7d']", timeout=15000)
        q = history_query(requests)
        assert float(q["since"]) == pytest.approx((newest_ms + 1 - 7 * 86400e3) / 1e3, abs=1)
        max_points = int(q["max_points"])
        assert 60 <= max_points < LONG_ROWS
        week = api_get(pg, f"/api/pumps/{LONG_PUMP}/history?" + "&".join(
            f"{k}={v}" for k, v in q.items()))
        assert week["rows"] == LONG_ROWS and week["bucket_s"] > 0
        points = int(pg.get_attribute("#chart-score", "data-points") or 0)
        (s,) = week["series"]
        assert points == len(s["t_ms"]) <= max_points
        assert points > max_points // 2  # the week is drawn, just bucketed
        assert pg.get_attribute("#range-picker button[data-range='7d']",
                                "aria-pressed") == "true"

        before = len(requests)
        pg.click("#range-picker button[data-range='1h']")
        pg.wait_for_selector("body[data-range-loaded='1h']", timeout=15000)
        assert pg.evaluate("location.hash") == f"#/pump/{LONG_PUMP}?range=1h"
        q = history_query(requests, before)
        assert float(q["since"]) == pytest.approx((newest_ms + 1 - 3600e3) / 1e3, abs=1)
        hour = 3600 // LONG_STEP_S
        assert int(pg.get_attribute("#chart-score", "data-points") or 0) == hour  # raw rows

        before = len(requests)
        pg.click("#range-picker button[data-range='custom']")
        since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest_ms / 1e3 - 3 * 86400))
        until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest_ms / 1e3 - 86400))
        pg.fill("#range-since", since)
        pg.fill("#range-until", until)
        pg.click("#range-apply")
        pg.wait_for_selector("body[data-range-loaded='custom']", timeout=15000)
        q = history_query(requests, before)
        # a datetime-local input drops zero seconds ("18:52:00" reads back as "18:52")
        picked = [datetime.fromisoformat(q[k]) for k in ("since", "until")]
        assert picked == [datetime.fromisoformat(since), datetime.fromisoformat(until)]
        custom = api_get(pg, f"/api/pumps/{LONG_PUMP}/history?" + "&".join(
            f"{k}={v}" for k, v in q.items()))
        assert abs(custom["rows"] - 2 * 86400 // LONG_STEP_S) <= 1
        points = int(pg.get_attribute("#chart-score", "data-points") or 0)
        assert points == len(custom["series"][0]["t_ms"]) <= int(q["max_points"])
        assert not errors, errors
    finally:
        context.close()


def test_waterfall_draws_the_last_n_spectra_of_the_channel(
    browser: Any, stack: Stack, long_history: int
) -> None:
    context, pg, requests, errors = new_page(browser, stack, f"#/pump/{LONG_PUMP}")
    try:
        pg.wait_for_selector(f"body[data-pump-loaded='{LONG_PUMP}']", timeout=15000)
        assert pg.get_attribute("#chart-waterfall", "data-rows") == "30"  # of 40 archived

        def rows_painted() -> int:
            """Rows of the heat map with colour in them, one sample per row band."""
            return int(pg.evaluate(
                """() => { const c = document.getElementById('chart-waterfall');
                   const [l, t, w, h] = JSON.parse(c.dataset.plot);
                   const n = +c.dataset.rows, dpr = window.devicePixelRatio || 1;
                   const ctx = c.getContext('2d'); let k = 0;
                   for (let i = 0; i < n; i++) {
                     const y = Math.floor((t + (i + 0.5) * h / n) * dpr);
                     const d = ctx.getImageData(Math.floor((l + w / 2) * dpr), y, 1, 1).data;
                     if (d[3] === 255 && d[0] + d[1] + d[2] > 0) k++;
                   }
                   return k; }"""))

        assert rows_painted() == 30
        for n, kind in ((10, "power"), (10, "envelope"), (120, "envelope")):
            before = len(requests)
            pg.select_option("#waterfall-kind", kind)
            pg.select_option("#waterfall-n", str(n))
            want = str(min(n, LONG_ARCHIVED))
            asked = f"n={n}&kind={kind}"

            def shown(want: str = want, asked: str = asked, before: int = before) -> bool:
                return (pg.get_attribute("#chart-waterfall", "data-rows") == want
                        and any(asked in u for u in requests[before:]))

            wait_for(shown, 10, f"{want} {kind} rows")
            assert rows_painted() == int(want)
        body = api_get(pg, f"/api/pumps/{LONG_PUMP}/spectra?kind=envelope&n=120")
        assert len(body["rows"]) == LONG_ARCHIVED
        assert pg.get_attribute("#chart-waterfall", "data-columns") == str(body["columns"])
        assert not errors, errors
    finally:
        context.close()
