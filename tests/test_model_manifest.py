"""The open contract, model side: bundles declare their classes and fields, kinds are modules.

Covers the manifest each bundle builds (classes from ``bundle.json`` or the
catalogue, ``unknown``/``sensor_fault`` added, the classifier's extra fields),
its digest on every response and the full manifest on ``manifest=1``, the
kind registry (save and load through it; a new kind is one new module), and
the ``centroid`` kind that adds a class (``dry_running``) and a result field
(``centroid_distance``), through the real server process.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import msgspec
import numpy as np
import pytest

import dsp
from dsp.results import InvocationResponse, Manifest, manifest_digest
from models.serving import classifier as registry
from models.serving.bundle import builtin_bundle, load_bundle, pack_bundle, write_bundle
from models.serving.classes import CONDITIONS
from models.serving.classifier import Classifier, SoftmaxClassifier, kinds
from models.serving.errors import BundleError
from models.serving.features import extract
from models.serving.handler import JSON, MSGPACK, custom_attributes, invoke, wants_manifest
from models.serving.mlp import MLPClassifier
from models.training.centroid import centroid_bundle, fit_centroid
from tests.infra.model_server import (
    ModelServerProcess,
    boto_kwargs,
    request_body,
    synth_reports,
)

DRY = {"display_name": "Dry running", "description": "No liquid: the pump runs dry.",
       "severity": "critical", "action": "Stop the pump; check suction and priming."}


@pytest.fixture(scope="module")
def labelled() -> tuple[list[dsp.Report], list[str]]:
    """Simulated reports: normal ones ``healthy``, quiet ones (gain 0.15) ``dry_running``."""
    healthy = synth_reports(16, pumps=["p1", "p2"], seed=51)
    dry = synth_reports(16, pumps=["p1", "p2"], seed=52, gain=0.15, seq0=100)
    return healthy + dry, ["healthy"] * 16 + ["dry_running"] * 16


@pytest.fixture(scope="module")
def held_out() -> list[dsp.Report]:
    return (synth_reports(3, pumps=["p3"], seed=53, gain=0.15, seq0=200)
            + synth_reports(3, pumps=["p3"], seed=54, seq0=300))


@pytest.fixture(scope="module")
def dry_bundle(tmp_path_factory: pytest.TempPathFactory,
               labelled: tuple[list[dsp.Report], list[str]]) -> Path:
    return centroid_bundle(tmp_path_factory.mktemp("dry") / "b", *labelled,
                           model_version="dry-1", classes={"dry_running": DRY})


def _json(out: bytes) -> dict[str, Any]:
    return msgspec.json.decode(out)


def test_custom_attributes_are_key_value_pairs() -> None:
    assert custom_attributes("a=1, manifest=1;trace = x ;flag") == {
        "a": "1", "manifest": "1", "trace": "x", "flag": ""}
    assert wants_manifest("manifest=1") and wants_manifest("x=y;manifest=true")
    assert not wants_manifest("manifest=0") and not wants_manifest(None)
    assert not wants_manifest("a=manifest=1")


def test_digest_on_every_response_manifest_only_when_asked(held_out: list[dsp.Report]) -> None:
    b = builtin_bundle()
    body = request_body(held_out[:2])
    plain = msgspec.msgpack.decode(invoke(b, body, MSGPACK, None)[0], type=InvocationResponse)
    asked = msgspec.msgpack.decode(invoke(b, body, MSGPACK, None, "manifest=1")[0],
                                   type=InvocationResponse)
    assert plain.manifest is None and plain.manifest_digest == b.manifest.digest
    assert asked.manifest == b.manifest and asked.manifest_digest == b.manifest.digest
    assert b.manifest.digest == manifest_digest(b.manifest)
    assert [c.name for c in b.manifest.classes] == [*CONDITIONS, "sensor_fault"]
    empty = _json(invoke(b, request_body([]), MSGPACK, JSON, "manifest=1")[0])
    assert empty["manifest_digest"] == b.manifest.digest and empty["manifest"]["classes"]


def test_bundle_declares_classes_and_overrides_change_the_digest(tmp_path: Path) -> None:
    names = ("log:velocity_rms", "log:env_bpfo")
    clf = SoftmaxClassifier(feature_names=names, classes=("healthy", "bearing_outer"),
                            mean=np.zeros(2), scale=np.ones(2), W=np.eye(2), b=np.zeros(2))
    plain = load_bundle(write_bundle(tmp_path / "a", model_version="s-1", classifier=clf))
    d = write_bundle(tmp_path / "b", model_version="s-1", classifier=clf, classes={
        "bearing_outer": {"display_name": "Outer race", "severity": "warning"},
        "unknown": {"action": "Call the analyst."}})
    told = load_bundle(d)
    written = json.loads((d / "bundle.json").read_text())["classes"]
    assert [c["name"] for c in written] == ["healthy", "bearing_outer", "unknown"]
    info = {c.name: c for c in told.manifest.classes}
    assert info["bearing_outer"].display_name == "Outer race"
    assert info["bearing_outer"].severity == "warning"
    assert info["bearing_outer"].description  # the catalogue's, not overridden
    assert info["unknown"].action == "Call the analyst."
    assert [c.name for c in told.manifest.classes] == [
        "healthy", "bearing_outer", "unknown", "sensor_fault"]
    assert told.manifest.digest != plain.manifest.digest
    assert told.with_version("g/2").manifest.model_version == "g/2"
    assert told.with_version("g/2").manifest.digest != told.manifest.digest


def test_declared_classes_must_be_the_classifier_s(tmp_path: Path) -> None:
    d = write_bundle(tmp_path / "b", model_version="p-1")
    manifest = json.loads((d / "bundle.json").read_text())
    for classes, message in (
        (manifest["classes"][1:], r"returns classes \['healthy'\] that .* do not declare"),
        ([*manifest["classes"], {"name": "dry_running"}], r"\['dry_running'\] are declared"),
        ([{**c, "colour": "red"} if c["name"] == "healthy" else c
          for c in manifest["classes"]], "not string overrides"),
        ([*manifest["classes"], manifest["classes"][0]], "declared twice"),
    ):
        (d / "bundle.json").write_text(json.dumps({**manifest, "classes": classes}))
        with pytest.raises(BundleError, match=message):
            load_bundle(d)
    with pytest.raises(BundleError, match="never returns"):
        write_bundle(tmp_path / "c", model_version="p-1", classes={"dry_running": DRY})
    # unknown top-level keys are kept for others (training statistics), not rejected
    (d / "bundle.json").write_text(json.dumps({**manifest, "statistics": {"path": "s.json"}}))
    assert load_bundle(d).model_version == "p-1"


def _classifiers(labelled: tuple[list[dsp.Report], list[str]]) -> list[Classifier]:
    names = ("log:velocity_rms", "log:env_bpfo", "kurtosis")
    rng = np.random.default_rng(3)
    classes = ("healthy", "bearing_outer", "unknown")
    return [
        SoftmaxClassifier(feature_names=names, classes=classes, mean=np.zeros(3),
                          scale=np.ones(3), W=rng.normal(size=(3, 3)), b=np.zeros(3)),
        MLPClassifier(feature_names=names, classes=classes, mean=np.zeros(3), scale=np.ones(3),
                      clip=4.0, W1=rng.normal(size=(3, 4)), b1=np.zeros(4),
                      W2=rng.normal(size=(4, 3)), b2=np.zeros(3)),
        fit_centroid(*labelled),
        builtin_bundle().classifier,
    ]


def test_every_kind_saves_and_loads_through_the_registry(
    tmp_path: Path, labelled: tuple[list[dsp.Report], list[str]], held_out: list[dsp.Report]
) -> None:
    assert {"physics", "softmax", "mlp", "centroid"} <= set(kinds())
    f = extract(held_out)
    for clf in _classifiers(labelled):
        d = write_bundle(tmp_path / clf.kind, model_version="k", classifier=clf)
        spec = json.loads((d / "bundle.json").read_text())["classifier"]
        back = load_bundle(d).classifier
        assert spec["kind"] == back.kind == clf.kind
        assert back.classes == clf.classes
        np.testing.assert_array_equal(back.predict_proba(f),
                                      clf.predict_proba(extract(held_out)))


def test_a_new_kind_is_one_new_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping a module into the kinds package is all it takes (no shared code edited)."""
    import models.serving.kinds as package

    extra = tmp_path / "more_kinds"
    extra.mkdir()
    (extra / "constant_kind.py").write_text(
        "import numpy as np\n"
        "KIND = 'constant-test'\n"
        "class Constant:\n"
        "    kind = KIND\n"
        "    classes = ('healthy', 'dry_running')\n"
        "    nbytes = 0\n"
        "    def predict_proba(self, f):\n"
        "        return np.tile([0.1, 0.9], (f.n, 1))\n"
        "    def save(self, bundle_dir):\n"
        "        return {'kind': KIND}\n"
        "def load(bundle_dir, spec):\n"
        "    return Constant()\n"
    )
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(extra)])
    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    monkeypatch.setattr(registry, "_discovered", [])
    try:
        assert "constant-test" in kinds()
        module = sys.modules["models.serving.kinds.constant_kind"]
        d = write_bundle(tmp_path / "b", model_version="c-1", classifier=module.Constant(),
                         classes={"dry_running": DRY})
        bundle = load_bundle(d)
        res = _json(invoke(bundle, request_body(synth_reports(2, seed=5)), MSGPACK, JSON)[0])
        assert [r["condition"] for r in res["results"]] == ["dry_running"] * 2
    finally:
        sys.modules.pop("models.serving.kinds.constant_kind", None)
        if hasattr(package, "constant_kind"):
            delattr(package, "constant_kind")


def test_centroid_kind_adds_a_class_and_a_result_field(
    dry_bundle: Path, held_out: list[dsp.Report]
) -> None:
    bundle = load_bundle(dry_bundle)
    m = bundle.manifest
    assert [c.name for c in m.classes] == ["dry_running", "healthy", "unknown", "sensor_fault"]
    assert m.classes[0].display_name == "Dry running" and m.classes[0].severity == "critical"
    assert list(m.fields) == ["centroid_distance"]
    for accept in (JSON, MSGPACK):
        out, _ = invoke(bundle, request_body(held_out), MSGPACK, accept)
        raw = msgspec.json.decode(out) if accept == JSON else msgspec.msgpack.decode(out)
        assert [r["condition"] for r in raw["results"]] == ["dry_running"] * 3 + ["healthy"] * 3
        dist = [r["centroid_distance"] for r in raw["results"]]
        assert all(isinstance(x, float) and 0 < x < 5 for x in dist), dist
        assert raw["manifest_digest"] == m.digest
    whole = _json(invoke(bundle, request_body(held_out), MSGPACK, JSON)[0])["results"]
    single = [_json(invoke(bundle, request_body([r]), MSGPACK, JSON)[0])["results"][0]
              for r in held_out]
    assert single == whole  # batching never changes the answer, extra fields included
    # a caller decoding typed still can (unknown fields are ignored), and bundles that
    # declare no fields emit none
    typed = msgspec.json.decode(invoke(bundle, request_body(held_out), MSGPACK, JSON)[0],
                                type=InvocationResponse)
    assert typed.results[0].condition == "dry_running"
    plain = _json(invoke(builtin_bundle(), request_body(held_out), MSGPACK, JSON)[0])
    assert "centroid_distance" not in plain["results"][0]
    far = synth_reports(1, pumps=["p3"], seed=55, gain=40.0, seq0=400)
    scored = _json(invoke(bundle, request_body(far), MSGPACK, JSON)[0])
    assert scored["results"][0]["centroid_distance"] > max(dist)  # like neither class


def test_manifests_per_bundle_through_the_server(
    tmp_path: Path, dry_bundle: Path, held_out: list[dsp.Report]
) -> None:
    """Default (the centroid bundle) and a target model each answer with their own manifest."""
    md = tmp_path / "models"
    pack_bundle(dry_bundle, md / "model.tar.gz")
    write_bundle(md / "plain", model_version="plain-1")
    body = request_body(held_out)
    with ModelServerProcess(model_dir=md) as srv:
        client = boto3.client("sagemaker-runtime", **boto_kwargs(srv.url))
        r = client.invoke_endpoint(EndpointName=srv.name, Body=body, ContentType=MSGPACK,
                                   Accept=JSON, CustomAttributes="trace=1,manifest=1")
        asked = _json(r["Body"].read())
        assert r["CustomAttributes"] == "trace=1,manifest=1"
        r = client.invoke_endpoint(EndpointName=srv.name, Body=body, ContentType=MSGPACK,
                                   Accept=JSON)
        plain = _json(r["Body"].read())
        r = client.invoke_endpoint(EndpointName=srv.name, Body=body, ContentType=MSGPACK,
                                   Accept=JSON, TargetModel="plain")
        target = _json(r["Body"].read())

        def get(path: str) -> Manifest:
            with urllib.request.urlopen(srv.url + path, timeout=10) as resp:  # noqa: S310
                return msgspec.json.decode(resp.read(), type=Manifest)

        default_m, runtime_m, target_m = (
            get("/manifest"), get(f"/endpoints/{srv.name}/manifest"),
            get("/manifest?target=plain"))
    assert "manifest" not in plain
    assert asked["manifest_digest"] == plain["manifest_digest"] == default_m.digest
    assert msgspec.convert(asked["manifest"], Manifest) == default_m == runtime_m
    assert default_m.fields == {"centroid_distance": default_m.fields["centroid_distance"]}
    assert "dry_running" in {c.name for c in default_m.classes}
    assert all("centroid_distance" in x for x in plain["results"])
    assert target["model_version"] == target_m.model_version == "plain-1"
    assert target["manifest_digest"] == target_m.digest != default_m.digest
    assert "dry_running" not in {c.name for c in target_m.classes}
    assert all("centroid_distance" not in x for x in target["results"])
