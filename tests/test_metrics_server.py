"""The model server's /metrics, scraped from a real server process over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from models.serving.bundle import BUILTIN_VERSION
from tests.infra.model_server import ModelServerProcess, request_body, synth_reports
from tests.infra.scrape import assert_documented, scrape


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


def post(url: str, body: bytes, ctype: str, **headers: str) -> int:
    req = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 -- local server
                                 headers={"Content-Type": ctype, **headers})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 -- local test server
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def test_server_metrics_count_requests_reports_and_errors(server: ModelServerProcess) -> None:
    reports = synth_reports(7)
    mp, js = "application/x-msgpack", "application/json"
    assert post(server.url + "/invocations", request_body(reports[:4]), mp) == 200
    assert post(server.url + "/invocations", request_body(reports[4:], json=True), js) == 200
    assert post(server.url + "/endpoints/pumpwatch/invocations", request_body(reports[:2]),
                mp) == 200
    assert post(server.url + "/invocations", b"\xc1", mp) == 400  # malformed body
    assert post(server.url + "/invocations", request_body(reports[:1]), mp,
                **{"X-Amzn-SageMaker-Target-Model": "nope"}) == 400  # unknown target
    s = scrape(server.url + "/metrics")

    assert s.families["pumpwatch_server_reports"] == "counter"
    assert s.value("pumpwatch_server_reports_total", model_version=BUILTIN_VERSION) == 4 + 3 + 2
    assert s.value("pumpwatch_server_requests_total", route="/invocations", code="200") == 2
    assert s.value("pumpwatch_server_requests_total", route="/invocations", code="400") == 2
    assert s.value("pumpwatch_server_requests_total", route="/endpoints/{name}/invocations",
                   code="200") == 1
    assert s.value("pumpwatch_server_errors_total", type="ValidationError") == 2
    assert s.value("pumpwatch_server_request_seconds_count", route="/invocations") == 4
    assert s.value("pumpwatch_server_bundle_loaded", role="default", bundle="",
                   model_version=BUILTIN_VERSION) == 1
    assert s.value("pumpwatch_server_cache_budget_bytes") == 256 * 1024 * 1024
    assert_documented(s, "pumpwatch_server_")
