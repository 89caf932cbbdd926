"""The Models page's rollout: ``GET /api/rollout`` and the page, over a real model server.

Real parts: the model server as a subprocess over the local registry (started
through tests.infra.failing_model, which only adds a model kind that fails),
``pumpwatch dashboard --model-server URL`` as a subprocess, headless Chromium.
Every rollout step goes through the ``pumpwatch models`` command line and the
server picks it up by polling the registry; reports reach the server as the
consumer sends them (``POST /invocations``, msgpack).

The server's state when the tests read it: a canary of a model that fails on
every batch crossed its error-rate limit and was rolled back by the server
(one ``auto-rollback`` event), then a shadow is running whose candidate differs
from production on a known share of the reports of each pump class (as in
tests/test_models_rollout_pipeline.py: templates 0 and 2 differ, 1 and 3 agree).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsp
from cloud.store import make_store
from models.registry.local import LocalRegistry
from models.serving.bundle import write_bundle
from models.serving.physics import PhysicsParams
from pumpwatch.cli import main as cli
from pumpwatch.stack.plan import StackOptions
from tests.infra import failing_model
from tests.infra.model_server import ModelServerProcess, request_body
from tests.infra.pipeline import ROOT, templates
from tests.test_dashboard_api import DOC, served, validate
from tests.test_dashboard_browser import SHOTS, DashboardProcess, browser  # noqa: F401 -- fixture

GROUP = "pumps"
# which templates each pump class's reports cycle through (0, 2 differ; 1, 3 agree)
CLASS_TEMPLATES = {"centrifugal": (0, 1, 2, 3), "screw": (0, 2, 0, 1)}
PER_CLASS = 24


def _report(seq: int, template: int, pump: str, kind: str) -> dsp.Report:
    t = templates()[template]
    return msgspec.structs.replace(
        t, device="gw-ro", epoch=12, seq=seq, site="lab", pump=pump, channel="x",
        t0_ns=1_700_000_000_000_000_000 + seq * 10**9,
        asset=msgspec.structs.replace(t.asset, kind=kind),
    )


def _wait(pred: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 -- a local test server
        body: dict[str, Any] = json.loads(r.read())
        return body


def _invoke(url: str, reports: list[dsp.Report]) -> None:
    req = urllib.request.Request(url + "/invocations", data=request_body(reports),  # noqa: S310
                                 headers={"Content-Type": "application/x-msgpack"})
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        assert r.status == 200


def _create_store(url: str) -> None:
    async def run() -> None:
        s = make_store(url, synchronous="normal")
        await s.open()
        await s.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright may own this loop
        pool.submit(asyncio.run, run()).result()


@dataclass
class Server:
    proc: ModelServerProcess
    registry: Path
    differ: dict[str, int]  # pump class -> reports on which the shadow's label differs
    dashboard: str = ""  # the dashboard subprocess's base URL

    def models(self, *args: str) -> None:
        assert cli(["models", "--registry", str(self.registry), *args]) == 0

    def roll_back_a_failing_canary(self, seq0: int) -> int:
        """Deploy the failing version as a canary, send reports until the server rolls it
        back; -> the next free sequence number."""
        n_events = len(self.rollout()["events"])
        self.models("deploy", GROUP, "--version", "3", "--canary", "50", "--max-error-rate",
                    "0.2", "--min-reports", "10")
        _wait(lambda: (self.rollout()["rollout"] or {}).get("candidate") == f"{GROUP}/3", 20,
              "failing canary loaded")
        pumps = [f"pump-{i:03d}" for i in range(40)]
        seq = seq0
        while len(self.rollout()["events"]) == n_events:
            assert seq < seq0 + 2000, "the failing canary was never rolled back"
            _invoke(self.proc.url, [_report(seq + i, i % 4, pumps[i], "screw")
                                    for i in range(10)])
            seq += 10
        reg = LocalRegistry(self.registry)
        _wait(lambda: (d := reg.deployment("pumpwatch")) is not None and d.candidate is None,
              20, "the automatic rollback recorded in the registry")
        return seq

    def rollout(self) -> dict[str, Any]:
        return _get(self.proc.url + "/rollout")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("rollout-dash")
    failing_model.register()
    reg_root = tmp / "registry"
    reg = LocalRegistry(reg_root)
    reg.register(GROUP, write_bundle(tmp / "v1", model_version="rules"))
    reg.register(GROUP, write_bundle(tmp / "v2", model_version="rules-strict",
                                     physics=PhysicsParams(unsure_below=0.99)))
    reg.register(GROUP, failing_model.failing_bundle(tmp / "v3"))
    for v in (1, 2, 3):
        reg.approve(GROUP, v, "ci")
    reg.deploy(GROUP, version=1, by="ci")

    with contextlib.ExitStack() as es:
        proc = es.enter_context(ModelServerProcess(
            registry=reg_root, module="tests.infra.failing_model",
            extra=["--reload-poll", "0.1"], log_path=tmp / "server.log"))
        srv = Server(proc, reg_root, {})
        # a failing canary: the server rolls it back at its error-rate limit
        seq = srv.roll_back_a_failing_canary(0)
        # a shadow that differs from production on a known share of each class's reports
        srv.models("deploy", GROUP, "--version", "2", "--shadow", "--reason",
                   "stricter unsure rule")
        _wait(lambda: (srv.rollout()["rollout"] or {}).get("candidate") == f"{GROUP}/2", 20,
              "shadow loaded")
        shadow = []
        for kind, tpls in CLASS_TEMPLATES.items():
            for i in range(PER_CLASS):
                shadow.append(_report(seq, tpls[i % len(tpls)], f"{kind}-{i % 6}", kind))
                seq += 1
            srv.differ[kind] = sum(tpls[i % len(tpls)] in (0, 2) for i in range(PER_CLASS))
        for i in range(0, len(shadow), 8):
            _invoke(proc.url, shadow[i:i + 8])
        _wait(lambda: srv.rollout()["rollout"]["versions"][f"{GROUP}/2"]["reports"]
              >= len(shadow), 30, "the shadow scored every report")
        store_url = f"sqlite:///{tmp / 'results.db'}"
        _create_store(store_url)  # an empty store: the live stream starts when it reads one
        dash = DashboardProcess(store_url, tmp / "dashboard.log",
                                extra=("--model-server", proc.url))
        es.callback(dash.stop)
        srv.dashboard = dash.start().rstrip("/")
        yield srv


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    schema = DOC["paths"]["/api/rollout"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    validate(body, schema, DOC)
    return body


def test_api_relays_the_running_shadow_comparison_and_the_rollback_event(
    server: Server,
) -> None:
    body = _checked(_get(server.dashboard + "/api/rollout"))
    own = server.rollout()  # the model server's own answer, read just after
    assert body["state"] == "ok" and body["error"] is None
    assert body["model_server"] == server.proc.url
    assert body["endpoint"] == "pumpwatch" and body["production"] == f"{GROUP}/1"
    ro = body["rollout"]
    assert ro == own["rollout"]  # relayed unchanged (no traffic in between)
    assert body["shadow_results"] == own["shadow_results"]
    assert set(body["shadow_results"]) == {"sent", "waiting", "dropped"}
    assert (ro["mode"], ro["candidate"], ro["production"]) == ("shadow", f"{GROUP}/2",
                                                               f"{GROUP}/1")
    n = PER_CLASS * len(CLASS_TEMPLATES)
    cmp_ = ro["comparison"]
    assert cmp_["*"]["reports"] == n
    assert cmp_["*"]["agreement"] == pytest.approx(1 - sum(server.differ.values()) / n, abs=1e-4)
    for kind, differ in server.differ.items():
        assert cmp_[kind]["agreement"] == pytest.approx(1 - differ / PER_CLASS, abs=1e-4)
        assert cmp_[kind]["label_shift"]["unknown"] == pytest.approx(differ / PER_CLASS,
                                                                     abs=1e-4)
    assert ro["versions"][f"{GROUP}/2"]["reports"] == n
    assert ro["versions"][f"{GROUP}/2"]["latency_p95_ms"] is not None
    (ev,) = body["events"]
    assert ev == own["events"][0]
    assert (ev["event"], ev["candidate"], ev["production"]) == ("auto-rollback", f"{GROUP}/3",
                                                                 f"{GROUP}/1")
    assert "error rate" in ev["reason"]
    assert body["last"]["candidate"] == f"{GROUP}/3" and "automatic rollback" in \
        body["last"]["ended"]


def _api(path: str, store: Path, **settings: Any) -> tuple[int, dict[str, Any]]:
    """GET ``path`` from an in-process dashboard with ``settings`` (on a thread of its own:
    Playwright's sync API may own this thread's event loop)."""

    async def run() -> tuple[int, dict[str, Any]]:
        async with served(f"sqlite:///{store}", **settings) as c, c.get(path) as resp:
            return resp.status, await resp.json()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


def test_api_says_when_the_model_server_is_not_configured_unreachable_or_not_one(
    server: Server, tmp_path: Path,
) -> None:
    db = tmp_path / "absent.db"  # /api/rollout reads no store
    status, body = _api("/api/rollout", db)
    assert status == 200 and _checked(body)["state"] == "not_configured"
    assert "--model-server" in body["error"] and body["rollout"] is None
    # nothing listens: refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    status, body = _api("/api/rollout", db, model_server=closed)
    assert status == 200 and _checked(body)["state"] == "unreachable"
    assert closed in body["error"] and body["events"] == []
    # a listener that never answers: the timeout, not a hung page
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        silent = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        status, body = _api("/api/rollout", db, model_server=silent, model_server_timeout_s=0.3)
        assert time.monotonic() - t0 < 5
    assert _checked(body)["state"] == "unreachable" and "within 0.3 s" in body["error"]
    # a real server that has no such route (a URL one level off): an error, named
    status, body = _api("/api/rollout", db, model_server=server.proc.url + "/nope")
    assert _checked(body)["state"] == "error" and "HTTP 404" in body["error"]
    status, body = _api("/api/rollout?x=1", db, model_server=server.proc.url)
    assert status == 400 and body["parameter"] == "x"


def test_dashboard_option_is_checked_and_the_stack_passes_its_model_server() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pumpwatch", "dashboard", "--store", "sqlite:///x.db",
         "--port", "0", "--model-server", "ftp://models:8080"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--model-server" in proc.stderr and "ftp://models:8080" in proc.stderr
    o = StackOptions(endpoint_port=18080)
    args = o.dashboard_args()
    assert args[args.index("--model-server") + 1] == o.endpoint_url == "http://127.0.0.1:18080"


def test_models_page_shows_the_comparison_and_the_automatic_rollback(
    browser: Any, server: Server,  # noqa: F811
) -> None:
    own = server.rollout()
    ro = own["rollout"]
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(server.dashboard + "/")
        page.click("#models-link")  # the fleet page's header links the Models page
        page.wait_for_selector("#rollout-state:not([data-state='loading'])")
        state = page.locator("#rollout-state")
        assert state.get_attribute("data-state") == "ok", state.inner_text()
        assert page.locator("#rollout").is_visible()
        assert page.locator("#rollout-production").inner_text() == f"{GROUP}/1"
        assert page.locator("#rollout-candidate").inner_text() == f"{GROUP}/2"
        assert page.locator("#rollout-mode").inner_text() == "shadow"
        # the comparison figures the server reports, as the page formats them
        for scope, c in ro["comparison"].items():
            row = page.locator(f"#rollout-comparison tr[data-scope='{scope}']")
            assert row.locator("td.reports").inner_text() == str(c["reports"])
            assert row.locator("td.agreement").inner_text() == f"{100 * c['agreement']:.1f}%"
            shift = c["mean_anomaly_score_shift"]
            assert row.locator("td.score-shift").inner_text() == \
                f"{'+' if shift >= 0 else '-'}{abs(shift):.4f}"
            unknown = c["label_shift"]["unknown"]
            assert f"unknown +{100 * unknown:.1f} pp" in row.locator("td.label-shift").inner_text()
        assert page.locator("#rollout-comparison tr[data-scope='*'] td").first.inner_text() == \
            "overall"
        for v, s in ro["versions"].items():
            row = page.locator(f"#rollout-versions tr[data-version='{v}']")
            assert row.get_attribute("data-role") == (
                "candidate" if v == f"{GROUP}/2" else "production")
            assert row.locator("td.errors").inner_text() == str(s["errors"])
            assert row.locator("td.p50").inner_text() == f"{s['latency_p50_ms']:.2f} ms"
            assert row.locator("td.p95").inner_text() == f"{s['latency_p95_ms']:.2f} ms"
            assert row.locator("td.error-rate").inner_text() == f"{100 * s['error_rate']:.1f}%"
        for kind in CLASS_TEMPLATES:
            assert page.locator(f"#rollout-classes tr[data-scope='{kind}']").count() == 2
        # the automatic rollback, with its reason
        (ev,) = own["events"]
        row = page.locator("#rollout-events tr[data-event='auto-rollback']")
        assert row.count() == 1
        assert row.get_attribute("data-candidate") == f"{GROUP}/3"
        assert row.locator("td.reason").inner_text() == ev["reason"]
        assert page.locator("#rollout-events-empty").is_hidden()
        assert f"{GROUP}/3" in page.locator("#rollout-last").inner_text()
        assert errors == []
        page.set_viewport_size({"width": 1440, "height": 900})
        page.screenshot(path=str(SHOTS / "models-rollout.png"), full_page=True)
    finally:
        page.close()


def test_a_new_automatic_rollback_goes_out_on_the_live_stream(server: Server) -> None:
    """Last in this module: it ends the shadow (a new failing canary replaces it)."""
    lines: list[str] = []
    started = concurrent.futures.Future[None]()

    def listen() -> None:
        kind = ""
        with urllib.request.urlopen(server.dashboard + "/api/stream",  # noqa: S310
                                    timeout=60) as r:
            for raw in r:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: ") and kind == "hello" and not started.done():
                    started.set_result(None)
                elif line.startswith("data: ") and kind == "rollout":
                    lines.append(line)
                    return

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        done = pool.submit(listen)
        started.result(timeout=30)
        server.roll_back_a_failing_canary(100_000)
        done.result(timeout=30)  # the watcher reads the server every 2 s
    ev = json.loads(lines[-1][len("data: "):])
    own = server.rollout()["events"]
    assert len(own) == 2 and ev == own[-1]  # the new one only, not the old one again
    assert ev["event"] == "auto-rollback" and ev["candidate"] == f"{GROUP}/3"
    assert "error rate" in ev["reason"]


class _Body(http.server.BaseHTTPRequestHandler):
    """Answers /big/rollout (a JSON object of about 5 MB) and /chunked/rollout (a valid
    rollout of about 300 kB, written in 1 kB pieces)."""

    def do_GET(self) -> None:
        big = self.path.startswith("/big/")
        pad = "x" * (5 << 20 if big else 300 << 10)
        body = json.dumps({"endpoint": "e", "production": "g/1", "rollout": None,
                           "last": {"pad": pad}, "events": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 1024):
            self.wfile.write(body[i:i + 1024])

    def log_message(self, *args: object) -> None:
        pass


def test_api_reads_a_long_answer_whole_and_refuses_an_oversized_one(tmp_path: Path) -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        _, body = _api("/api/rollout", tmp_path / "absent.db", model_server=base + "/chunked")
        assert _checked(body)["state"] == "ok" and len(body["last"]["pad"]) == 300 << 10
        _, body = _api("/api/rollout", tmp_path / "absent.db", model_server=base + "/big")
        assert _checked(body)["state"] == "error" and "more than" in body["error"]
    finally:
        httpd.shutdown()
        httpd.server_close()
