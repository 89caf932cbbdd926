"""End to end: a model that adds a class and a result field reaches the store, the API and
the page, with no change to the pipeline (edge/, cloud/, dsp/).

The data scientist's side only: a bundle whose classifier declares ``dry_running``
is registered, approved and deployed in a local registry; the real model server
(a subprocess) serves the deployment; simulated reports go through a real
Mosquitto to the real consumer (``pumpwatch cloud``, a subprocess) into SQLite;
``pumpwatch dashboard`` serves the API and the page, which Chromium loads.

The extra result field is whatever the bundle's manifest declares in ``fields``:
the test reads the names from the manifest the consumer stored, so it checks
the contract, not one model's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsp
from cloud.store import Commit, EvidenceRow, ManifestRow, ResultRow, SQLiteStore
from dsp.results import ClassInfo, Manifest, manifest_digest
from models.registry.local import LocalRegistry
from models.training.centroid import centroid_bundle
from tests.infra.model_server import ModelServerProcess, synth_reports
from tests.infra.mosquitto import Mosquitto, mosquitto_available
from tests.infra.pipeline import ConsumerProcess, Publisher, chunks, consumer_config, write_toml
from tests.test_dashboard_browser import DashboardProcess, _missing, wait_for
from tests.test_dashboard_browser import browser as browser

GROUP = "dry"
PUMP = "P-201"
N_REPORTS = 6
NEW_CLASS = "dry_running"
DRY_GAIN = 0.15  # the streamed pump barely vibrates: the model calls it dry running
__all__ = ["browser"]


def build_bundle(out: Path) -> Path:
    """A bundle of the ``centroid`` kind that adds ``dry_running`` and a result field.

    Trained on simulated reports: normal ones ``healthy``, quiet ones (a pump that
    barely vibrates, gain 0.15) ``dry_running``; the kind declares its extra
    result field (``centroid_distance``) in the manifest's ``fields``.
    """
    healthy = synth_reports(16, pumps=("t1", "t2"), seed=51)
    dry = synth_reports(16, pumps=("t1", "t2"), seed=52, gain=DRY_GAIN, seq0=100)
    return centroid_bundle(out, healthy + dry, ["healthy"] * 16 + [NEW_CLASS] * 16,
                           model_version="dry-running-1",
                           classes={NEW_CLASS: {"display_name": "Dry running",
                                                "description": "The pump runs without liquid.",
                                                "severity": "critical",
                                                "action": "Stop the pump; check the suction."}},
                           description="test bundle: a class the pipeline has never seen")


@dataclass
class Pipeline:
    db: Path
    url: str

    def rows(self) -> list[dict[str, Any]]:
        con = sqlite3.connect(self.db, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(
                "SELECT seq, condition, model_version, extra, manifest_digest FROM results "
                "WHERE pump = ? ORDER BY seq", (PUMP,))]
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def manifests(self) -> dict[str, Manifest]:
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return {d: msgspec.json.decode(m, type=Manifest)
                    for d, m in con.execute("SELECT digest, manifest FROM manifests")}
        finally:
            con.close()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    if not mosquitto_available():
        _missing("mosquitto not installed")
    tmp = tmp_path_factory.mktemp("open-contract")
    # The data scientist: register -> approve -> deploy.
    reg = LocalRegistry(tmp / "registry")
    pkg = reg.register(GROUP, build_bundle(tmp / "bundle"))
    reg.approve(GROUP, pkg.version)
    reg.deploy(GROUP)
    db = tmp / "results.db"
    root = "open"
    with contextlib.ExitStack() as stack:
        broker = Mosquitto(tmp / "mosquitto", max_inflight_messages=1000).start()
        stack.callback(broker.stop)
        server = stack.enter_context(ModelServerProcess(registry=tmp / "registry"))
        cfg = consumer_config(broker_port=broker.port, endpoint_url=server.url, db=db,
                              topic_root=root, client_id="open-consumer",
                              alarms={"enabled": False})
        consumer = ConsumerProcess(write_toml(tmp / "cloud.toml", cfg), tmp / "consumer.log")
        consumer.start()
        stack.callback(consumer.stop)
        wait_for(lambda: "mqtt connected" in consumer.log_tail(), 30, "consumer connected")
        time.sleep(0.3)  # subscription granted
        now = time.time_ns()
        reports = [msgspec.structs.replace(r, t0_ns=now - (N_REPORTS - i) * 1_000_000_000)
                   for i, r in enumerate(synth_reports(N_REPORTS, pumps=(PUMP,), seed=3,
                                                       device="gw-9", site="plant-b",
                                                       epoch=77, gain=DRY_GAIN))]
        with Publisher("127.0.0.1", broker.port, "pub-open") as pub:
            pub.publish_all(f"{root}/devices/gw-9/reports", [
                dsp.encode_batch("gw-9", c) for c in chunks([dsp.encode_report(r)
                                                              for r in reports], 3)])
        p = Pipeline(db=db, url="")
        wait_for(lambda: len(p.rows()) >= N_REPORTS, 60, f"{N_REPORTS} results stored")
        dash = DashboardProcess(str(db), tmp / "dashboard.log")
        stack.callback(dash.stop)
        p.url = dash.start()
        yield p


@pytest.fixture(scope="module")
def page(browser: Any, pipeline: Pipeline) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(pipeline.url)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"


def api(page: Any, path: str) -> Any:
    return page.evaluate(f"fetch('{path}').then(r => r.json())")


def test_the_new_class_is_stored_served_and_shown(page: Any, pipeline: Pipeline) -> None:
    rows = pipeline.rows()
    assert [r["seq"] for r in rows] == list(range(N_REPORTS))
    assert {r["condition"] for r in rows} == {NEW_CLASS}
    # register -> approve -> deploy: every result names the deployed registry version
    assert {r["model_version"] for r in rows} == {f"{GROUP}/1"}
    (pump,) = [p for p in api(page, "/api/pumps")["pumps"] if p["pump"] == PUMP]
    assert pump["condition"] == NEW_CLASS
    assert {r["condition"] for r in pump["channels"]} == {NEW_CLASS}
    declared = {c["name"]: c for c in api(page, "/api/classes")["classes"]}
    # the page names a class by its manifest's display name, else by its raw name
    shown = declared[NEW_CLASS]["display_name"] if NEW_CLASS in declared else "dry running"
    tile = f'.tile[data-pump="{PUMP}"]'
    page.wait_for_selector(f'{tile}[data-condition="{NEW_CLASS}"]', timeout=10000)
    assert page.inner_text(f"{tile} .cond").startswith(shown)
    page.click(tile)
    page.wait_for_selector(f"body[data-pump-loaded='{PUMP}']", timeout=10000)
    assert page.inner_text("#pump-condition").startswith(shown)
    assert page.get_attribute("#probabilities", "data-condition") == NEW_CLASS


def test_the_manifest_names_the_class_and_its_extra_field_reaches_the_page(
    page: Any, pipeline: Pipeline
) -> None:
    rows = pipeline.rows()
    digests = {r["manifest_digest"] for r in rows}
    assert len(digests) == 1 and None not in digests, digests
    manifests = pipeline.manifests()
    (digest,) = digests
    manifest = manifests[digest]  # stored with the results that name it
    info = {c.name: c for c in manifest.classes}[NEW_CLASS]
    fields = sorted(manifest.fields)
    assert fields, "the bundle declares no extra result field"
    for r in rows:
        extra = msgspec.json.decode(r["extra"])
        assert extra.pop("decided_by") == "classifier", (r["seq"], extra)  # kept by the consumer
        assert sorted(extra) == fields, (r["seq"], extra)
    (pump,) = [p for p in api(page, "/api/pumps")["pumps"] if p["pump"] == PUMP]
    latest = pump["channels"][0]
    assert latest["extra_fields"] == sorted([*fields, "decided_by"])
    assert latest["manifest_digest"] == digest and latest["decided_by"] == "classifier"
    classes = {c["name"]: c for c in api(page, "/api/classes")["classes"]}
    assert classes[NEW_CLASS]["display_name"] == info.display_name
    page.goto(pipeline.url + f"#/pump/{PUMP}")
    page.wait_for_selector(f"body[data-pump-loaded='{PUMP}']", timeout=10000)
    assert page.inner_text("#pump-condition").startswith(info.display_name)
    for name in fields:
        cell = page.locator(f'#extra-fields tr[data-field="{name}"]')
        assert cell.count() == 1, name
        value = latest[name]
        text = cell.inner_text()
        assert name in text
        if isinstance(value, float):
            assert f"{value:.3f}" in text, (name, value, text)


def test_a_result_written_with_a_manifest_shows_display_name_and_fields_live(
    page: Any, pipeline: Pipeline
) -> None:
    """The page's half on its own: a result committed through the consumer's store with
    its manifest (as the consumer does) arrives on the open page through the stream and
    shows the manifest's display name, the recommended action and the extra field."""
    man = Manifest(model_version="m-live", fields={"centroid_distance": "distance to centroid"},
                   classes=[ClassInfo("cavitation_onset", "Cavitation onset",
                                      "Early broadband energy.", "warning",
                                      "Check suction pressure.")])
    digest = manifest_digest(man)
    now = time.time_ns()
    row = ResultRow(
        device="gw-9", epoch=78, seq=0, site="plant-b", pump="P-202", channel="x", t0_ns=now,
        condition="cavitation_onset", probabilities={"cavitation_onset": 0.9, "healthy": 0.1},
        anomaly_score=1.0, anomaly_threshold=3.0, anomalous=False, baseline="fleet",
        iso_zone="A", velocity_rms=1.0, rpm=2950.0, evidence=[EvidenceRow("hf", 1.0, "")],
        model_version="m-live", target="pumpwatch", published_ns=None, received_ns=now,
        extra={"centroid_distance": 0.4321}, manifest_digest=digest,
    )

    async def write() -> None:
        store = SQLiteStore(f"sqlite:///{pipeline.db}")
        await store.open()
        try:
            await store.commit(Commit(results=[row], manifests=[ManifestRow(
                digest=digest, model_version="m-live",
                manifest=msgspec.json.encode(msgspec.structs.replace(man, digest=digest))
                .decode())]))
        finally:
            await store.close()

    page.goto(pipeline.url + "#/")
    page.wait_for_selector(f'.tile[data-pump="{PUMP}"]', timeout=10000)
    with ThreadPoolExecutor(1) as ex:  # Playwright's sync API holds this thread's loop
        ex.submit(lambda: asyncio.run(write())).result(30)
    tile = '.tile[data-pump="P-202"]'
    page.wait_for_selector(tile, timeout=10000)
    wait_for(lambda: page.inner_text(f"{tile} .cond").startswith("Cavitation onset"), 10,
             "the display name on the tile")
    page.click(tile)
    page.wait_for_selector("body[data-pump-loaded='P-202']", timeout=10000)
    assert page.inner_text("#pump-condition").startswith("Cavitation onset")
    assert page.inner_text("#pump-action") == "warning: Check suction pressure."
    cell = page.locator('#extra-fields tr[data-field="centroid_distance"]')
    assert cell.count() == 1
    text = cell.inner_text()
    assert "0.432" in text and "distance to centroid" in text
    assert not page.is_hidden("#extra-title")


def test_the_shadow_part_is_decoded_on_its_own_and_never_rejects_production() -> None:
    """A response's optional shadow part (dsp.results.ShadowPart): decoded beside the typed
    response; one that does not decode is dropped with a reason, production's results kept."""
    import msgspec

    from cloud.consumer import decode_response
    from dsp.results import RESULT_SCHEMA_VERSION, InvocationResponse, Result, ShadowResult

    def res(seq: int, condition: str, version: str) -> Result:
        return Result(v=1, device="d", epoch=1, seq=seq, site="s", pump="p", channel="x",
                      t0_ns=0, condition=condition, probabilities={condition: 1.0},
                      anomaly_score=0.5, anomaly_threshold=1.0, anomalous=False,
                      baseline="fleet", iso_zone="A", velocity_rms=0.1, model_version=version)

    resp = InvocationResponse(RESULT_SCHEMA_VERSION, "g/1", [res(0, "healthy", "g/1")])
    plain = msgspec.to_builtins(resp)
    for enc, mod in (("msgpack", msgspec.msgpack), ("json", msgspec.json)):
        assert decode_response(mod.encode(plain), enc).shadow == []  # type: ignore[arg-type]
        good = {**plain, "shadow": msgspec.to_builtins(
            [ShadowResult(res(7, "unknown", "g/2"), "g/1", "screw")])}
        got = decode_response(mod.encode(good), enc)  # type: ignore[arg-type]
        assert got.response == resp and got.shadow_error is None
        assert [(s.result.seq, s.result.condition, s.production, s.pump_class)
                for s in got.shadow] == [(7, "unknown", "g/1", "screw")]
        bad = {**plain, "shadow": [{"result": {"seq": "not a number"}, "production": 3}]}
        got = decode_response(mod.encode(bad), enc)  # type: ignore[arg-type]
        assert got.response == resp and got.shadow == []
        assert got.shadow_error is not None and "shadow part dropped" in got.shadow_error
