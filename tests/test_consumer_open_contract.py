"""The consumer's side of the open endpoint contract.

* Decoding (sans-IO): any condition string, every result field kept (the ones
  ``Result`` does not type go to ``extra``), the manifest kept whole, and a
  malformed response named precisely.
* Through the real broker, the real model server, the real endpoint adapter
  (botocore) and SQLite: the fault proxy rewrites the server's real answers
  as a bundle with a new class, an extra field and a manifest would (the
  model side of this is the ``serve`` work; tests/test_open_contract.py runs
  it for real). Extra fields and the manifest digest are stored, the manifest
  is asked for once and stored once, and a response for one report that does
  not decode dead-letters that report alone instead of stalling the pipeline.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

import dsp
from cloud.consumer import ResponseError, decode_response
from cloud.store import SQLiteStore
from dsp.results import ClassInfo, Manifest
from tests.infra.fault_proxy import FaultProxy
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, chunks, consumer_config, encoded_reports
from tests.test_consumer_pipeline import (
    await_rows,
    dead_letters,
    running_consumer,
    stored,
    wait_for,
)

RESULT: dict[str, Any] = {
    "v": 1, "device": "d", "epoch": 1, "seq": 0, "site": "s", "pump": "p", "channel": "x",
    "t0_ns": 0, "condition": "dry_running", "probabilities": {"dry_running": 0.9},
    "anomaly_score": 1.0, "anomaly_threshold": 2.0, "anomalous": False, "baseline": "fleet",
    "iso_zone": "A", "velocity_rms": 1.0, "model_version": "m2",
}
MANIFEST: dict[str, Any] = {
    "model_version": "m2",
    "classes": [{"name": "dry_running", "display_name": "Dry running", "severity": "critical",
                 "action": "Stop the pump; check suction."}],
    "fields": {"centroid_distance": "distance to the class centroid"},
    "digest": "abc123", "owner": "a field this consumer does not know",
}


def body(results: list[dict[str, Any]], *, json: bool = False, **top: Any) -> bytes:
    resp = {"v": 1, "model_version": "m2", "results": results, **top}
    return msgspec.json.encode(resp) if json else msgspec.msgpack.encode(resp)


@pytest.mark.parametrize("json", [False, True])
def test_any_condition_and_every_field_is_kept(json: bool) -> None:
    extra = {"centroid_distance": 0.42, "cluster": {"id": 3, "tags": ["a"]}}
    scored = decode_response(
        body([{**RESULT, **extra}, RESULT], json=json, manifest_digest="abc123",
             manifest=MANIFEST),
        "json" if json else "msgpack",
    )
    r0, _ = scored.response.results
    assert r0.condition == "dry_running" and r0.probabilities == {"dry_running": 0.9}
    assert scored.extra_fields(0) == extra
    assert scored.extra_fields(1) == {}
    assert scored.response.manifest_digest == "abc123"
    assert scored.response.manifest is not None
    assert scored.response.manifest.classes[0] == ClassInfo(
        "dry_running", "Dry running", severity="critical",
        action="Stop the pump; check suction.")
    assert scored.manifest_json is not None
    assert msgspec.json.decode(scored.manifest_json)["owner"] == MANIFEST["owner"]


@pytest.mark.parametrize(("data", "why"), [
    (b"<html>bad gateway</html>", "not an InvocationResponse"),
    (body([{k: v for k, v in RESULT.items() if k != "anomaly_score"}]),
     r"missing required field `anomaly_score` - at `\$\.results\[0\]`"),
    (body([RESULT, {**RESULT, "condition": 7}]), r"at `\$\.results\[1\]\.condition`"),
    (body([{**RESULT, "condition": ""}]), r"results\[0\]\.condition"),
    (body([{**RESULT, "condition": "dry\x00running"}]), r"results\[0\]\.condition"),
    (body([RESULT], manifest={"classes": []}), r"at `\$\.manifest`"),
    (body([{**RESULT, "blob": msgspec.msgpack.Ext(1, b"x")}]),
     r"results\[0\]: extra fields are not JSON values"),
])
def test_a_malformed_response_is_named(data: bytes, why: str) -> None:
    with pytest.raises(ResponseError, match=why):
        decode_response(data, "msgpack")


class ModelWithNewClass:
    """Rewrites the real server's answers as a bundle with a new class would answer.

    Every result becomes ``dry_running`` with a ``centroid_distance`` field; the
    response names its manifest digest, and carries the manifest when asked
    (``CustomAttributes: manifest=1``). The result for ``garbled`` is made
    undecodable (its condition a number).
    """

    def __init__(self, garbled: tuple[str, int, int]) -> None:
        self.garbled = garbled
        self.asked = 0
        self.calls = 0
        self.manifest = Manifest(
            model_version="m2", fields=dict(MANIFEST["fields"]),
            classes=[msgspec.convert(c, ClassInfo) for c in MANIFEST["classes"]],
        )
        self.digest = dsp.results.manifest_digest(self.manifest)

    def __call__(self, resp: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        self.calls += 1
        for r in resp["results"]:
            r["condition"] = "dry_running"
            r["probabilities"] = {**r["probabilities"], "dry_running": 0.97}
            r["centroid_distance"] = float(r["seq"]) / 10
            if (r["device"], r["epoch"], r["seq"]) == self.garbled:
                r["condition"] = 7
        resp["manifest_digest"] = self.digest
        if headers.get("X-Amzn-SageMaker-Custom-Attributes") == "manifest=1":
            self.asked += 1
            resp["manifest"] = msgspec.to_builtins(
                msgspec.structs.replace(self.manifest, digest=self.digest))
        return resp


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


def result_rows(db: Path) -> list[tuple[int, str, str, str | None]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute(
            "SELECT seq, condition, extra, manifest_digest FROM results ORDER BY seq"
        ).fetchall()
    finally:
        con.close()


async def test_extras_and_manifest_stored_and_a_garbled_result_dead_lettered(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    root = "open"
    n = 96
    garbled = ("devO", 4, 41)
    model = ModelWithNewClass(garbled)
    with FaultProxy(model_server.url) as proxy:
        proxy.rewrite(model)
        cfg = consumer_config(broker_port=broker.port, endpoint_url=proxy.url, db=db,
                              topic_root=root, batch={"max_size": 16, "max_delay_ms": 20})
        async with running_consumer(cfg) as consumer:
            reports = encoded_reports("devO", 4, range(n))
            with Publisher("127.0.0.1", broker.port, "pub-open") as pub:
                await asyncio.to_thread(
                    pub.publish_all, f"{root}/devices/devO/reports",
                    [dsp.encode_batch("devO", c) for c in chunks(reports, 8)])
            await await_rows(db, n - 1, 30)
            await asyncio.to_thread(
                wait_for, lambda: len(dead_letters(db)) >= 1, 30, "the dead letter")
            counters = consumer.counters
    rows = result_rows(db)
    assert [s for s, *_ in rows] == [s for s in range(n) if s != garbled[2]]
    for seq, condition, extra, digest in rows:
        assert condition == "dry_running"
        fields = msgspec.json.decode(extra)
        # decided_by is typed in Result and kept in extra by the consumer (no store column)
        assert fields.pop("decided_by") in ("quality", "physics", "ood", "classifier")
        assert fields == {"centroid_distance": seq / 10}
        assert digest == model.digest
    (dl,) = dead_letters(db)
    assert dl[0] == "model" and "results[0].condition" in dl[2], dl
    assert len(stored(db)) == n - 1
    # Asked on the first call(s) only: once stored, the digest is known.
    assert 1 <= model.asked <= counters.manifest_requests < model.calls
    assert counters.manifests_stored == 1
    store = SQLiteStore(f"sqlite:///{db}", readonly=True)
    await store.open()
    try:
        (m,) = await store.manifests()
    finally:
        await store.close()
    assert m.digest == model.digest and m.model_version == "m2"
    stored_manifest = msgspec.json.decode(m.manifest, type=Manifest)
    assert stored_manifest.classes == model.manifest.classes
    assert stored_manifest.fields == {"centroid_distance": "distance to the class centroid"}
