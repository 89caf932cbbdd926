"""The alarm lifecycle through the API: a real ``pumpwatch dashboard`` process (with a
token) over real SQLite and PostgreSQL stores the consumer's commit path filled.

Episodes are raised by the consumer's alarm state machines inside the commit; the
commit groups them into the pump's asset alarm. Operators' changes go through
``POST /api/alarms/{id}/ack|assign|close`` and come back from the store (the row),
the change history and the live stream (SSE catch-up from a cursor before them).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cloud.store import Commit, ManifestRow, make_store
from dsp.results import ClassInfo, Manifest, manifest_digest
from tests.test_dashboard_api import alarm_path, archive_for, reports, result_for
from tests.test_dashboard_browser import DashboardProcess

TOKEN = "s3cret-token"
MANIFEST = Manifest(model_version="test-1", classes=[
    ClassInfo("healthy", "Healthy", severity="none"),
    ClassInfo("bearing_outer", "Outer race", severity="critical",
              action="Replace the drive-end bearing"),
    ClassInfo("imbalance", "Imbalance", severity="warning", action="Balance the impeller"),
])
DIGEST = manifest_digest(MANIFEST)


async def seed(url: str, *, pumps: tuple[str, ...] = ("p1", "p2"), n: int = 8) -> None:
    """Anomalous windows named ``bearing_outer`` on every pump (each raises an episode
    per channel, grouped into the pump's asset alarm), with their archived reports and
    the bundle manifest."""
    reps = reports(pumps, n, epoch=7)
    store = make_store(url)
    await store.open()
    try:
        await store.commit(Commit(
            results=[result_for(r, anomalous=True, anomaly_score=9.0,
                                condition="bearing_outer", manifest_digest=DIGEST)
                     for r in reps],
            archive=[archive_for(r) for r in reps],
            manifests=[ManifestRow(digest=DIGEST, model_version="test-1",
                                   manifest=msgspec.json.encode(MANIFEST).decode())],
        ), alarms=alarm_path())
    finally:
        await store.close()


def call(base: str, method: str, path: str, body: object = None, *,
         token: str | None = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(  # noqa: S310 -- loopback http only
        base.rstrip("/") + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 -- loopback
            raw = resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(raw) if "json" in ctype else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def alarm_events(base: str, done: Any, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """The stream's alarm events from the start (catch-up), up to the first ``done``."""
    req = urllib.request.Request(  # noqa: S310 -- loopback http only
        base.rstrip("/") + "/api/stream?last_event_id=0.0",
        headers={"Authorization": f"Bearer {TOKEN}"})
    out: list[dict[str, Any]] = []
    kind = ""
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 -- loopback
        for line in resp:
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                kind = text[7:]
            elif text.startswith("data: ") and kind == "alarm":
                out.append(json.loads(text[6:]))
                if done(out[-1]):
                    return out
    raise AssertionError(f"the stream ended without the event: {out[-3:]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def dashboard(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    asyncio.run(seed(db))
    monkeypatch.setenv("PUMPWATCH_DASHBOARD_TOKEN", TOKEN)
    dash = DashboardProcess(db, tmp_path / "dash.log")
    base = dash.start()
    try:
        yield base
    finally:
        dash.stop()


def asset_of(base: str, pump: str) -> dict[str, Any]:
    status, body = call(base, "GET", f"/api/alarms?pump={pump}")
    assert status == 200, body
    (asset,) = [a for a in body["alarms"] if a["kind"] == "asset"]
    return asset


def test_ack_assign_close_through_the_api(dashboard: str, db: str) -> None:
    base = dashboard
    asset = asset_of(base, "p1")
    aid = asset["id"]
    status, detail = call(base, "GET", f"/api/alarms/{aid}")
    assert status == 200, detail
    # one pump-level alarm with its channel episodes inside, from the manifest that raised it
    assert detail["lifecycle"]["status"] == "open" and detail["pump"] == "p1"
    assert detail["episodes"] and {e["parent"] for e in detail["episodes"]} == {aid}
    assert {e["pump"] for e in detail["episodes"]} == {"p1"}
    assert detail["severity"] == "critical" and detail["condition"] == "bearing_outer"
    assert detail["recommended_action"] == "Replace the drive-end bearing"
    assert detail["evidence"] and detail["since_ms"] == asset["raised_ms"]
    assert "no_fault_found" in detail["verdicts"] and "imbalance" in detail["verdicts"]

    # the token check: none, a wrong one, or one in the query string never writes
    for token, path in ((None, "ack"), ("wrong", "ack"), (None, f"ack?access_token={TOKEN}")):
        status, body = call(base, "POST", f"/api/alarms/{aid}/{path}", {"by": "ann"},
                            token=token)
        assert status == 401, body
    assert call(base, "GET", f"/api/alarms/{aid}")[1]["lifecycle"]["status"] == "open"

    status, body = call(base, "POST", f"/api/alarms/{aid}/ack", {"by": "ann"})
    assert status == 200 and body["lifecycle"]["status"] == "acknowledged", body
    assert body["lifecycle"]["acknowledged_by"] == "ann"
    status, body = call(base, "POST", f"/api/alarms/{aid}/ack", {"by": "bob"})
    assert status == 409 and "already acknowledged by ann" in body["error"]
    status, body = call(base, "POST", f"/api/alarms/{aid}/assign",
                        {"by": "ann", "assignee": "bob"})
    assert status == 200 and body["lifecycle"]["assignee"] == "bob", body
    # a verdict outside the manifest's classes, a missing action, an unknown field
    status, body = call(base, "POST", f"/api/alarms/{aid}/close",
                        {"by": "bob", "verdict": "gremlins"})
    assert status == 409 and "gremlins" in body["error"] and "action_taken" in body["error"]
    status, body = call(base, "POST", f"/api/alarms/{aid}/close",
                        {"by": "bob", "verdict": "imbalance", "colour": "red"})
    assert status == 400 and "colour" in body["error"]
    status, body = call(base, "POST", f"/api/alarms/{aid}/close", {
        "by": "bob", "verdict": "bearing_outer", "action_taken": "replaced DE bearing",
        "note": "outer race spalled", "onset": "2023-11-14T20:00:00Z"})
    assert status == 200, body
    lc = body["lifecycle"]
    assert (lc["status"], lc["verdict"], lc["closed_by"]) == ("closed", "bearing_outer", "bob")
    assert body["state"] == "cleared" and body["cleared_ms"] is not None
    # every change stored with who and when
    assert [(e["action"], e["by"]) for e in body["events"]] == [
        ("ack", "ann"), ("assign", "ann"), ("close", "bob")]
    assert body["events"][2]["detail"]["action_taken"] == "replaced DE bearing"
    ats = [e["at_ms"] for e in body["events"]]
    assert ats == sorted(ats) and len(set(ats)) == 3
    # closed is final
    status, body = call(base, "POST", f"/api/alarms/{aid}/assign",
                        {"by": "cy", "assignee": "cy"})
    assert status == 409 and "closed" in body["error"]
    assert call(base, "POST", "/api/alarms/nope/ack", {"by": "ann"})[0] == 404

    # the store holds it (read back through the public API) ...
    async def stored() -> Any:
        s = make_store(db)
        await s.open()
        try:
            (row,) = await s.alarms(alarm_id=aid)
            return row
        finally:
            await s.close()

    row = asyncio.run(stored())
    assert row.lifecycle.status == "closed" and row.lifecycle.action_taken == "replaced DE bearing"
    # ... and the live stream carries each change (catch-up from before them)
    seen = alarm_events(base, lambda e: e["id"] == aid
                        and (e["lifecycle"] or {}).get("status") == "closed")
    assert [e["lifecycle"]["status"] for e in seen if e["id"] == aid][-1] == "closed"
    # the other pump's alarm is untouched
    assert asset_of(base, "p2")["lifecycle"]["status"] == "open"
