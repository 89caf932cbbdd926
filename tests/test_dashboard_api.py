"""The dashboard API against real SQLite and PostgreSQL stores written through the consumer's
store.

Every test runs on both stores. Rows are committed with the consumer's write
path (:func:`cloud.store.make_store`, ``Store.commit``) from reports the real DSP
produced; alarms are raised by the consumer's alarm state machines
(:class:`cloud.consumer.alarms.AlarmTracker`) inside that commit, so their
``updated_ns`` stamps are the production ones the live stream's cursor uses.
The API runs in-process on a real socket (aiohttp's test server) and is read
through HTTP only.
"""

from __future__ import annotations

import asyncio
import functools
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse, ClientSession
from aiohttp.test_utils import TestServer

import dsp
from cloud.consumer.alarms import AlarmConfig, AlarmTracker
from cloud.dashboard import DashboardSettings, create_app, openapi_document
from cloud.dashboard.app import QUERY_PARAMS
from cloud.store import (
    AlarmEvaluator,
    ArchivedReport,
    Commit,
    EvidenceRow,
    ManifestRow,
    ResultRow,
    Store,
    make_store,
)
from dsp.results import ClassInfo, Manifest, manifest_digest
from tests.infra.model_server import synth_reports
from tests.infra.pipeline import ROOT

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


def open_store(url: str) -> Store:
    return make_store(url, synchronous="normal") if url.startswith("sqlite") else make_store(url)


async def commit(
    url: str, reps: list[dsp.Report], *, alarms: AlarmEvaluator | None = None, **over: Any
) -> None:
    """Commit results (and archive rows) for ``reps`` as the consumer does; with
    ``alarms``, the consumer's alarm state machines run in the same transaction."""
    store = open_store(url)
    await store.open()
    try:
        await store.commit(
            Commit(results=[result_for(r, **over) for r in reps],
                   archive=[archive_for(r) for r in reps]),
            alarms=alarms,
        )
    finally:
        await store.close()


def alarm_path() -> AlarmEvaluator:
    """The consumer's alarm state machines, raising on one anomalous window and clearing
    on one clean one (their state lives in the store, so a fresh tracker per commit is
    what a restarted or second consumer is)."""
    return AlarmTracker(AlarmConfig(raise_k=1, window_n=1, clear_m=1,
                                    zone_alarm_at=None)).evaluate


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


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's URL: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def filled(db: str) -> str:
    await commit(db, reports(("p1", "p2", "p3"), 12, epoch=(1 << 63) + 5))
    return db


@pytest.fixture
async def client(filled: str) -> AsyncIterator[Client]:
    async with served(filled) as c:
        yield c


class Client:
    def __init__(self, base: str, session: ClientSession) -> None:
        self.base = base
        self.session = session

    def get(self, path: str, **kw: Any) -> Any:
        return self.session.get(self.base + path, **kw)


class served:  # noqa: N801 -- reads as a context-manager function
    def __init__(self, url: str, **settings: Any) -> None:
        self.app = create_app(DashboardSettings(store_url=url, poll_s=0.05, **settings))

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


async def test_history_is_downsampled_for_long_ranges(db: str) -> None:
    reps = reports(("p1",), 4, epoch=9)
    rows = [
        result_for(reps[i % 4], seq=i, t0_ns=T0 + i * S, anomaly_score=float(i % 10))
        for i in range(3000)
    ]
    store = open_store(db)
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
    # Harmonics 2x..5x of each defect line and sidebands (BPFI +- m x shaft rate, BSF +- m x
    # FTF), as far as the envelope spectrum reaches and no further.
    env = sp["envelope"]
    top = env["f0"] + env["df"] * (env["n"] - 1)
    for base in ("BPFO", "BPFI", "BSF", "FTF"):
        want = {k: k * hz[base] for k in range(2, 6) if k * hz[base] <= top}
        got = {m["order"]: m["hz"] for m in sp["markers"]
               if m["kind"] == "harmonic" and m["of"] == base}
        assert got == pytest.approx(want, abs=0.01), base
        assert hz.get(f"{max(want, default=1) + 1}x{base}") is None  # beyond the envelope
    assert hz["2xBPFO"] == pytest.approx(2 * 3.5848 * fr, rel=1e-3)  # 6205 at this speed: in
    assert hz["BPFI-1x"] == pytest.approx(hz["BPFI"] - fr, abs=0.01)
    assert hz["BPFI+2x"] == pytest.approx(hz["BPFI"] + 2 * fr, abs=0.01)
    assert hz["BSF-FTF"] == pytest.approx(hz["BSF"] - hz["FTF"], abs=0.01)
    assert hz["2xBSF+2FTF"] == pytest.approx(2 * hz["BSF"] + 2 * hz["FTF"], abs=0.01)
    sides = [m for m in sp["markers"] if m["kind"] == "sideband"]
    assert {m["of"] for m in sides} == {"BPFI", "BSF"}
    assert all(0 < m["hz"] <= top for m in sides)
    async with client.get("/api/pumps/p2/spectrum?channel=nope") as resp:
        await checked(resp, "/api/pumps/{pump}/spectrum", 404)


async def test_spectra_are_the_newest_n_of_a_channel_pooled_to_bins(client: Client) -> None:
    async with client.get("/api/pumps/p2/spectrum?channel=x") as resp:
        newest = await checked(resp, "/api/pumps/{pump}/spectrum")
    async with client.get("/api/pumps/p2/spectra?channel=x&n=3&bins=100") as resp:
        w = await checked(resp, "/api/pumps/{pump}/spectra")
    assert w["kind"] == "power" and w["channel"] == "x" and w["skipped"] == 0
    assert len(w["rows"]) == 3
    t = [r["t_ms"] for r in w["rows"]]
    assert t == sorted(t, reverse=True) and t[0] == newest["t_ms"]  # newest first
    n = newest["spectrum"]["n"]
    pool = -(-n // 100)
    assert w["pool"] == pool and w["columns"] == len(w["rows"][0]["db"]) == -(-n // pool) <= 100
    assert w["df"] == pytest.approx(newest["spectrum"]["df"] * pool)
    db = newest["spectrum"]["db"]  # column j is the max of its lines (peaks survive)
    assert w["rows"][0]["db"][3] == max(db[3 * pool:4 * pool])
    async with client.get("/api/pumps/p2/spectra?kind=envelope&n=200") as resp:
        await checked(resp, "/api/pumps/{pump}/spectra", 400)
    async with client.get("/api/pumps/p2/spectra?kind=envelope&n=120") as resp:
        e = await checked(resp, "/api/pumps/{pump}/spectra")
    assert e["kind"] == "envelope" and len(e["rows"]) == 4  # all of p2 (12 cycle 3 pumps)
    assert e["columns"] == newest["envelope"]["n"] and e["pool"] == 1
    async with client.get("/api/pumps/nope/spectra") as resp:
        await checked(resp, "/api/pumps/{pump}/spectra", 404)


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
        ("/api/pumps/p1/spectra?n=0", "n"),
        ("/api/pumps/p1/spectra?kind=raw", "kind"),
        ("/api/pumps/p1/spectra?bins=2", "bins"),
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
    methods: dict[str, set[str]] = {}
    for r in create_app(DashboardSettings(store_url="sqlite:///x.db")).router.routes():
        if r.resource is not None and r.resource.canonical.startswith("/api/") \
                and r.method in ("GET", "POST"):
            methods.setdefault(r.resource.canonical, set()).add(r.method.lower())
    assert set(methods) == set(doc["paths"])
    for path, item in doc["paths"].items():
        assert set(item) == methods[path], path
        if "post" in item:  # only the alarm lifecycle writes
            assert path.startswith("/api/alarms/{id}/") and set(item) == {"post"}
            assert "200" in item["post"]["responses"]
            continue
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


async def test_bearer_token(filled: str) -> None:
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
    async with served(f"sqlite:///{tmp_path / 'absent.db'}") as c, c.get("/api/pumps") as resp:
        body = await checked(resp, "/api/pumps", 503)
    assert "no results store" in body["error"]
    async with served("postgresql://postgres@127.0.0.1:1/none") as c, \
            c.get("/api/alarms") as resp:
        body = await checked(resp, "/api/alarms", 503)
    assert "cannot open postgresql store" in body["error"]


async def test_alarms_raised_and_cleared_by_the_consumers_alarm_path(filled: str) -> None:
    async with served(filled) as c:
        async with c.get("/api/alarms") as resp:
            assert (await checked(resp, "/api/alarms")) == {"alarms": []}
        p2 = reports(("p2",), 2, epoch=41, seq0=20)
        evidence = [EvidenceRow("env_bpfo", 14.2, "BPFO 176.2 Hz, 3 harmonics")]
        await commit(filled, p2[:1], alarms=alarm_path(), anomalous=True, anomaly_score=7.9,
                     evidence=evidence)
        async with c.get("/api/alarms?state=raised&kind=episode") as resp:
            (a,) = (await checked(resp, "/api/alarms"))["alarms"]
        assert a["pump"] == "p2" and a["kind"] == "anomaly"
        assert a["raised_ms"] == (T0 + 20 * S) / 1e6
        notes = [e["note"] for e in a["evidence"]]
        assert notes[0] == "threshold 3" and notes[1].startswith("BPFO")
        assert "1 of the last 1 windows anomalous" in a["reason"]
        async with c.get("/api/pumps") as resp:
            pumps = {p["pump"]: p for p in (await checked(resp, "/api/pumps"))["pumps"]}
        assert pumps["p2"]["alarm_state"] == "raised" and pumps["p1"]["alarm_state"] == "none"
        await commit(filled, p2[1:], alarms=alarm_path())  # one clean window clears it
        async with c.get("/api/alarms?state=raised&kind=episode") as resp:
            assert (await checked(resp, "/api/alarms"))["alarms"] == []
        # the pump's asset alarm stays raised until an operator closes it
        async with c.get("/api/alarms?state=raised") as resp:
            (asset,) = (await checked(resp, "/api/alarms"))["alarms"]
        assert asset["kind"] == "asset" and asset["lifecycle"]["status"] == "open"
        async with c.get("/api/alarms?pump=p2&kind=episode") as resp:
            (done,) = (await checked(resp, "/api/alarms"))["alarms"]
        assert done["parent"] == asset["id"]
        assert done["state"] == "cleared" and done["id"] == a["id"]
        assert done["cleared_ms"] == (T0 + 21 * S) / 1e6


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


async def test_stream_sends_new_results_and_alarms_and_resumes(filled: str) -> None:
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

        # Missed while disconnected: 2 results, one raising an alarm in the same commit
        # (the consumer's alarm path), delivered on resume.
        await commit(filled, reports(("p4",), 2, epoch=78), alarms=alarm_path(),
                     anomalous=True)
        await asyncio.sleep(0.3)  # the hub has moved on meanwhile
        resp = await c.session.get(c.base + "/api/stream", headers={"Last-Event-ID": last_id})
        missed = await read_events(resp, 3)
        kinds = sorted(e["event"] for e in missed)
        assert kinds == ["alarm", "result", "result"], missed
        (alarm,) = [msgspec.json.decode(e["data"]) for e in missed if e["event"] == "alarm"]
        assert alarm["pump"] == "p4" and alarm["state"] == "raised"
        assert {msgspec.json.decode(e["data"])["epoch"] for e in missed
                if e["event"] == "result"} == {"78"}
        resp.close()

        async with c.get("/api/stream", headers={"Last-Event-ID": "garbage"}) as bad:
            assert bad.status == 400
            assert (await bad.json())["parameter"] == "Last-Event-ID"


def test_cli_serves_a_postgresql_store(postgres_url: str) -> None:
    """``pumpwatch dashboard --store postgresql://...``: the real command, over HTTP."""
    asyncio.run(commit(postgres_url, reports(("p7",), 2, epoch=3)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch", "dashboard", "--store", postgres_url, "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://\S+", line)
        assert url is not None, line

        async def fetch() -> Any:
            async with ClientSession() as session, session.get(url.group(0) + "api/pumps") as r:
                return await checked(r, "/api/pumps")

        body = asyncio.run(fetch())
        assert [p["pump"] for p in body["pumps"]] == ["p7"]
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def manifest_row(version: str, classes: list[ClassInfo], fields: dict[str, str]) -> ManifestRow:
    man = Manifest(model_version=version, classes=classes, fields=fields)
    digest = manifest_digest(man)
    return ManifestRow(digest=digest, model_version=version,
                       manifest=msgspec.json.encode(msgspec.structs.replace(
                           man, digest=digest)).decode())


async def test_classes_and_extra_fields_of_the_open_contract(db: str) -> None:
    """A class no code here names, and a result field no code here types, come back by
    the stored manifests: classes with display names, fields merged into each result."""
    old = manifest_row("m1", [ClassInfo("healthy", "Healthy", severity="none")], {})
    new = manifest_row("m2", [
        ClassInfo("healthy", "Normal operation", severity="none"),
        ClassInfo("dry_running", "Dry running", "No liquid at the impeller.", "critical",
                  "Stop the pump; check suction."),
    ], {"centroid_distance": "distance to the nearest class centroid"})
    store = open_store(db)
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
