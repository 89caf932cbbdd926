"""The dashboard API against a real SQLite store written through the consumer's store.

Rows are committed with :class:`cloud.store.SQLiteStore` (the consumer's write
path) from reports the real DSP produced; the API runs in-process on a real
socket (aiohttp's test server) and is read through HTTP only.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse, ClientSession
from aiohttp.test_utils import TestServer

import dsp
from cloud.dashboard import (
    AlarmRow,
    DashboardSettings,
    create_app,
    openapi_document,
    write_alarms_sqlite,
)
from cloud.dashboard.app import QUERY_PARAMS
from cloud.store import (
    ArchivedReport,
    Commit,
    EvidenceRow,
    ManifestRow,
    ResultRow,
    SQLiteStore,
)
from dsp.results import ClassInfo, Manifest, manifest_digest
from tests.infra.model_server import synth_reports

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def result_for(rep: dsp.Report, **over: Any) -> ResultRow:
    """A result row as the consumer would store it for ``rep`` (model fields invented)."""
    fields: dict[str, Any] = {
        "device": rep.device, "epoch": rep.epoch, "seq": rep.seq, "site": rep.site,
        "pump": rep.pump, "channel": rep.channel, "t0_ns": rep.t0_ns,
        "condition": "healthy",
        "probabilities": {"healthy": 0.9, "bearing_outer": 0.06, "imbalance": 0.04},
        "anomaly_score": 1.0, "anomaly_threshold": 3.0, "anomalous": False,
        "baseline": "fleet", "iso_zone": rep.features.iso_zone,
        "velocity_rms": rep.features.velocity_rms, "rpm": rep.speed.rpm,
        "evidence": [EvidenceRow("env_bpfo", 1.2, "no line")], "model_version": "test-1",
        "target": "local", "published_ns": None, "received_ns": time.time_ns(),
    }
    fields.update(over)
    return ResultRow(**fields)


def archive_for(rep: dsp.Report) -> ArchivedReport:
    return ArchivedReport(
        device=rep.device, epoch=rep.epoch, seq=rep.seq, site=rep.site, pump=rep.pump,
        channel=rep.channel, t0_ns=rep.t0_ns, received_ns=time.time_ns(),
        report=dsp.encode_report(rep),
    )


@functools.cache
def _template(pumps: tuple[str, ...], n: int) -> tuple[dsp.Report, ...]:
    return tuple(synth_reports(n, pumps=pumps, epoch=0, outer=4.0))


def reports(pumps: tuple[str, ...], n: int, *, epoch: int, seq0: int = 0) -> list[dsp.Report]:
    """``n`` analyzed reports cycling ``pumps``, one second apart from :data:`T0`."""
    return [
        msgspec.structs.replace(r, epoch=epoch, seq=seq0 + i, t0_ns=T0 + (seq0 + i) * S)
        for i, r in enumerate(_template(pumps, n))
    ]


async def commit(db: Path, reps: list[dsp.Report], **over: Any) -> None:
    store = SQLiteStore(f"sqlite:///{db}", synchronous="normal")
    await store.open()
    try:
        await store.commit(
            Commit(results=[result_for(r, **over) for r in reps],
                   archive=[archive_for(r) for r in reps])
        )
    finally:
        await store.close()


# -- a tiny JSON Schema check (the subset openapi.py uses) ---------------------------------


def validate(value: Any, schema: dict[str, Any], doc: dict[str, Any], path: str = "$") -> None:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        validate(value, doc["components"]["schemas"][name], doc, path)
        return
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                validate(value, option, doc, path)
            except AssertionError as exc:
                errors.append(str(exc))
        assert len(errors) == len(schema["oneOf"]) - 1, f"{path}: oneOf failed: {errors}"
        return
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        checks = {
            "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
        }
        assert any(checks[t](value) for t in types), f"{path}: {value!r:.80} is not {types}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key!r}"
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            if key in props:
                validate(v, props[key], doc, f"{path}.{key}")
            elif extra is False:
                raise AssertionError(f"{path}: undeclared property {key!r}")
            elif isinstance(extra, dict):
                validate(v, extra, doc, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], doc, f"{path}[{i}]")


DOC = openapi_document()


async def checked(resp: ClientResponse, path: str, status: int = 200) -> Any:
    """The JSON body, validated against the OpenAPI response schema for ``path`` + status."""
    assert resp.status == status, await resp.text()
    body = await resp.json()
    schema = DOC["paths"][path]["get"]["responses"][str(status)]["content"]["application/json"]
    validate(body, schema["schema"], DOC)
    return body


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "results.db"


@pytest.fixture
async def filled(db: Path) -> Path:
    await commit(db, reports(("p1", "p2", "p3"), 12, epoch=(1 << 63) + 5))
    return db


@pytest.fixture
async def client(filled: Path) -> AsyncIterator[Client]:
    async with served(filled) as c:
        yield c


class Client:
    def __init__(self, base: str, session: ClientSession) -> None:
        self.base = base
        self.session = session

    def get(self, path: str, **kw: Any) -> Any:
        return self.session.get(self.base + path, **kw)


class served:  # noqa: N801 -- reads as a context-manager function
    def __init__(self, db: Path, **settings: Any) -> None:
        self.app = create_app(
            DashboardSettings(store_url=f"sqlite:///{db}", poll_s=0.05, **settings)
        )

    async def __aenter__(self) -> Client:
        self.server = TestServer(self.app, host="127.0.0.1")
        await self.server.start_server()
        self.session = ClientSession()
        return Client(str(self.server.make_url("")).rstrip("/"), self.session)

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()
        await self.server.close()


# -- tests ------------------------------------------------------------------------------------


async def test_fleet_lists_every_pump_with_latest_state(client: Client) -> None:
    async with client.get("/api/pumps") as resp:
        body = await checked(resp, "/api/pumps")
    assert [p["pump"] for p in body["pumps"]] == ["p1", "p2", "p3"]
    p1 = body["pumps"][0]
    assert p1["alarm_state"] == "none" and p1["active_alarms"] == 0
    assert p1["channels"][0]["epoch"] == str((1 << 63) + 5)  # u64 survives as a string
    assert p1["last_report_ms"] == (T0 + 9 * S) / 1e6  # seq 9 is p1's newest
    assert p1["iso_zone"] in "ABCD"


async def test_history_is_downsampled_for_long_ranges(db: Path) -> None:
    reps = reports(("p1",), 4, epoch=9)
    rows = [
        result_for(reps[i % 4], seq=i, t0_ns=T0 + i * S, anomaly_score=float(i % 10))
        for i in range(3000)
    ]
    store = SQLiteStore(f"sqlite:///{db}", synchronous="off")
    await store.open()
    await store.commit(Commit(results=rows, archive=[archive_for(reps[0])]))
    await store.close()
    async with served(db) as c:
        async with c.get("/api/pumps/p1/history?max_points=100") as resp:
            h = await checked(resp, "/api/pumps/{pump}/history")
        assert h["rows"] == 3000 and h["bucket_s"] > 0
        (s,) = h["series"]
        assert len(s["t_ms"]) <= 100 and sum(s["count"]) == 3000
        assert max(s["anomaly_score_max"]) == 9.0
        assert h["zone_limits"] == [1.4, 2.8, 4.5]  # group 2 rigid, from the archived report
        async with c.get(f"/api/pumps/p1/history?since={T0 / 1e9}&until={(T0 + 50 * S) / 1e9}"
                         ) as resp:
            raw = await checked(resp, "/api/pumps/{pump}/history")
        assert raw["bucket_s"] == 0 and raw["rows"] == 50
        assert raw["series"][0]["condition"][0] == "healthy"
        async with c.get("/api/pumps/nope/history") as resp:
            await checked(resp, "/api/pumps/{pump}/history", 404)


async def test_spectrum_has_power_envelope_and_defect_markers(client: Client) -> None:
    async with client.get("/api/pumps/p2/spectrum?channel=x") as resp:
        sp = await checked(resp, "/api/pumps/{pump}/spectrum")
    assert sp["spectrum"]["n"] == len(sp["spectrum"]["db"]) >= 400
    assert sp["envelope"] is not None and sp["envelope"]["n"] > 0
    fr = sp["rpm"] / 60
    hz = {m["name"]: m["hz"] for m in sp["markers"]}
    assert hz["1x"] == pytest.approx(fr, abs=0.01) and hz["2x"] == pytest.approx(2 * fr, abs=0.01)
    assert hz["BPF"] == pytest.approx(6 * fr, abs=0.01)  # 6 vanes
    # SKF 6205 orders from the design brief
    assert hz["BPFO"] == pytest.approx(3.5848 * fr, rel=1e-3)
    assert hz["BPFI"] == pytest.approx(5.4152 * fr, rel=1e-3)
    assert hz["FTF"] == pytest.approx(0.39828 * fr, rel=1e-3)
    assert 2 * hz["BSF"] == pytest.approx(4.7135 * fr, rel=1e-3)
    async with client.get("/api/pumps/p2/spectrum?channel=nope") as resp:
        await checked(resp, "/api/pumps/{pump}/spectrum", 404)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("/api/pumps/p1/history?since=yesterday", "since"),
        ("/api/pumps/p1/history?until=1e300", "until"),
        ("/api/pumps/p1/history?since=2026-01-02&until=2026-01-01", "until"),
        ("/api/pumps/p1/history?max_points=5", "max_points"),
        ("/api/pumps/p1/history?max_points=lots", "max_points"),
        ("/api/pumps/p1/history?channel=a%20b", "channel"),
        ("/api/pumps/p1/history?sinse=2026-01-01", "sinse"),
        ("/api/pumps/p1/spectrum?channel=", "channel"),
        ("/api/alarms?state=open", "state"),
        ("/api/alarms?limit=0", "limit"),
        ("/api/pumps?x=1", "x"),
    ],
)
async def test_bad_query_parameters_get_400_naming_them(
    client: Client, query: str, parameter: str
) -> None:
    path = query.split("?")[0].replace("/p1/", "/{pump}/")
    async with client.get(query) as resp:
        body = await checked(resp, path, 400)
    assert body["parameter"] == parameter, body
    assert parameter in body["error"]


async def test_openapi_describes_every_route_and_nothing_else(client: Client) -> None:
    async with client.get("/api/openapi.json") as resp:
        doc = await resp.json()
    assert doc == msgspec.json.decode(msgspec.json.encode(DOC))
    routes = {
        r.resource.canonical
        for r in create_app(DashboardSettings(store_url="sqlite:///x.db")).router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/")
        and r.method == "GET"
    }
    assert routes == set(doc["paths"])
    for path, item in doc["paths"].items():
        assert set(item) == {"get"}, path  # read-only
        assert "200" in item["get"]["responses"]
        declared = item["get"].get("parameters", [])
        params = {p["name"] for p in declared if p["in"] == "path"}
        assert params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
        query = {p["name"] for p in declared if p["in"] == "query"}
        assert query == QUERY_PARAMS[path], path  # what the handler accepts
    # every $ref resolves
    text = msgspec.json.encode(doc).decode()
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in doc["components"]["schemas"]


async def test_write_methods_and_unknown_routes_get_json_errors(client: Client) -> None:
    async with client.session.post(client.base + "/api/pumps", data=b"{}") as resp:
        assert resp.status == 405
        assert "error" in await resp.json()
    async with client.get("/api/nothing") as resp:
        assert resp.status == 404
        assert "error" in await resp.json()
    async with client.get("/api/pumps/nope/history?since=2023-01-01") as resp:
        await checked(resp, "/api/pumps/{pump}/history", 404)


async def test_bearer_token(filled: Path) -> None:
    async with served(filled, token="s3cret") as c:
        async with c.get("/api/pumps") as resp:
            await checked(resp, "/api/pumps", 401)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with c.get("/api/pumps", headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with c.get("/api/pumps", headers={"Authorization": "Bearer s3cret"}) as resp:
            await checked(resp, "/api/pumps")
        async with c.get("/api/alarms?access_token=s3cret") as resp:
            await checked(resp, "/api/alarms")
        async with c.get("/") as resp:  # the page itself is public; its data is not
            assert resp.status == 200
            assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


async def test_missing_store_is_503_not_a_crash(tmp_path: Path) -> None:
    async with served(tmp_path / "absent.db") as c, c.get("/api/pumps") as resp:
        body = await checked(resp, "/api/pumps", 503)
    assert "no results store" in body["error"]


async def test_alarms_empty_without_table_then_listed_with_evidence(filled: Path) -> None:
    async with served(filled) as c:
        async with c.get("/api/alarms") as resp:
            assert (await checked(resp, "/api/alarms")) == {"alarms": []}
        raised = AlarmRow(
            id="p2:anomaly:1", site="lab", pump="p2", channel="x", kind="anomaly",
            state="raised", raised_ns=T0 + 5 * S, reason="4 of the last 5 windows anomalous",
            evidence=[EvidenceRow("env_bpfo", 14.2, "BPFO 176.2 Hz, 3 harmonics")],
        )
        write_alarms_sqlite(filled, [raised])
        async with c.get("/api/alarms?state=raised") as resp:
            (a,) = (await checked(resp, "/api/alarms"))["alarms"]
        assert a["pump"] == "p2" and a["evidence"][0]["note"].startswith("BPFO")
        async with c.get("/api/pumps") as resp:
            pumps = {p["pump"]: p for p in (await checked(resp, "/api/pumps"))["pumps"]}
        assert pumps["p2"]["alarm_state"] == "raised" and pumps["p1"]["alarm_state"] == "none"
        write_alarms_sqlite(filled, [msgspec.structs.replace(
            raised, state="cleared", cleared_ns=T0 + 9 * S)])
        async with c.get("/api/alarms?state=raised") as resp:
            assert (await checked(resp, "/api/alarms"))["alarms"] == []
        async with c.get("/api/alarms?pump=p2") as resp:
            assert (await checked(resp, "/api/alarms"))["alarms"][0]["state"] == "cleared"


# -- the live stream --------------------------------------------------------------------------


async def read_events(resp: ClientResponse, n: int, within_s: float = 5.0) -> list[dict[str, str]]:
    """The next ``n`` SSE events (comments and retry lines skipped)."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}

    async def run() -> None:
        nonlocal current
        while len(events) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            current[key] = value

    await asyncio.wait_for(run(), within_s)
    return events


async def test_stream_sends_new_results_and_alarms_and_resumes(filled: Path) -> None:
    async with served(filled) as c:
        resp = await c.session.get(c.base + "/api/stream")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        (hello,) = await read_events(resp, 1)
        assert hello["event"] == "hello" and "id" in hello
        t_commit = time.monotonic()
        await commit(filled, reports(("p4",), 3, epoch=77))
        got = await read_events(resp, 3)
        latency = time.monotonic() - t_commit
        assert [e["event"] for e in got] == ["result"] * 3
        assert sorted(msgspec.json.decode(e["data"])["seq"] for e in got) == [0, 1, 2]
        assert latency < 2.0, f"results reached the stream after {latency:.2f} s"
        last_id = got[-1]["id"]
        resp.close()

        # Missed while disconnected: 2 results and an alarm, delivered on resume.
        await commit(filled, reports(("p4",), 2, epoch=78))
        write_alarms_sqlite(filled, [AlarmRow(
            id="a1", site="lab", pump="p4", kind="iso_zone", state="raised",
            raised_ns=T0, reason="zone C", evidence=[EvidenceRow("velocity_rms", 3.1)],
        )])
        await asyncio.sleep(0.3)  # the hub has moved on meanwhile
        resp = await c.session.get(c.base + "/api/stream", headers={"Last-Event-ID": last_id})
        missed = await read_events(resp, 3)
        kinds = sorted(e["event"] for e in missed)
        assert kinds == ["alarm", "result", "result"], missed
        assert {msgspec.json.decode(e["data"])["epoch"] for e in missed
                if e["event"] == "result"} == {"78"}
        resp.close()

        async with c.get("/api/stream", headers={"Last-Event-ID": "garbage"}) as bad:
            assert bad.status == 400
            assert (await bad.json())["parameter"] == "Last-Event-ID"


def test_cli_refuses_stores_it_cannot_read(capsys: pytest.CaptureFixture[str]) -> None:
    from pumpwatch.cli import main

    assert main(["dashboard", "--store", "postgresql://db.example/results"]) == 2
    assert "SQLite stores only" in capsys.readouterr().err


def manifest_row(version: str, classes: list[ClassInfo], fields: dict[str, str]) -> ManifestRow:
    man = Manifest(model_version=version, classes=classes, fields=fields)
    digest = manifest_digest(man)
    return ManifestRow(digest=digest, model_version=version,
                       manifest=msgspec.json.encode(msgspec.structs.replace(
                           man, digest=digest)).decode())


async def test_classes_and_extra_fields_of_the_open_contract(db: Path) -> None:
    """A class no code here names, and a result field no code here types, come back by
    the stored manifests: classes with display names, fields merged into each result."""
    old = manifest_row("m1", [ClassInfo("healthy", "Healthy", severity="none")], {})
    new = manifest_row("m2", [
        ClassInfo("healthy", "Normal operation", severity="none"),
        ClassInfo("dry_running", "Dry running", "No liquid at the impeller.", "critical",
                  "Stop the pump; check suction."),
    ], {"centroid_distance": "distance to the nearest class centroid"})
    store = SQLiteStore(f"sqlite:///{db}", synchronous="normal")
    await store.open()
    try:
        await store.commit(Commit(manifests=[old]))
        reps = reports(("p9",), 2, epoch=9)
        await store.commit(Commit(
            results=[result_for(r, condition="dry_running", model_version="m2",
                                probabilities={"dry_running": 0.8, "healthy": 0.2},
                                extra={"centroid_distance": 0.5 + r.seq,
                                       "model_version": "never replaces the typed field"},
                                manifest_digest=new.digest) for r in reps],
            archive=[archive_for(r) for r in reps], manifests=[new],
        ))
    finally:
        await store.close()
    async with served(db) as c:
        async with c.get("/api/classes") as resp:
            body = await checked(resp, "/api/classes")
        async with c.get("/api/pumps") as resp:
            pumps = await checked(resp, "/api/pumps")
    by_name = {k["name"]: k for k in body["classes"]}
    assert by_name["dry_running"]["display_name"] == "Dry running"
    assert by_name["dry_running"]["severity"] == "critical"
    assert by_name["dry_running"]["action"] == "Stop the pump; check suction."
    assert by_name["healthy"]["display_name"] == "Normal operation"  # the newer manifest
    assert body["fields"] == {"centroid_distance": "distance to the nearest class centroid"}
    assert [m["digest"] for m in body["manifests"]] == [old.digest, new.digest]
    (pump,) = pumps["pumps"]
    assert pump["condition"] == "dry_running"
    latest = pump["channels"][0]
    assert latest["centroid_distance"] == 1.5 and latest["extra_fields"] == ["centroid_distance"]
    assert latest["model_version"] == "m2" and latest["manifest_digest"] == new.digest
