"""Bundles and registries written before bundles declared their classes still serve the same.

``tests/fixtures/legacy/`` holds artifacts written by the code before issue 14
(see its ``make_legacy.py``): a bundle directory (mlp + pump baselines) and a
local registry with one approved, deployed softmax bundle, a fixed request and
the responses that code gave. Today's code must load both and answer the same,
except for the fields added since (``manifest_digest``, ``decided_by``) and
what the decision rule (issue 15, :mod:`models.serving.decision`) changes on
purpose: a clear bearing family now names the condition over the classifier,
and the family and decision evidence are worded anew. Probabilities, anomaly
scores and every classifier-decided condition stay identical.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from models.registry.local import LocalRegistry
from models.serving.bundle import load_bundle
from models.serving.classes import CATALOGUE
from models.serving.handler import JSON, MSGPACK, invoke
from tests.infra.model_server import ModelServerProcess

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"
NEW_FIELDS = ("manifest_digest", "manifest")


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A copy (loading a registry writes its extraction cache)."""
    return Path(shutil.copytree(FIXTURES, tmp_path / "legacy"))


def _expected(name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((FIXTURES / f"response-{name}.json").read_text())
    assert "manifest_digest" not in out  # written before the field existed
    return out


_REWORDED = ("env_family:", "speed_used", "decision")


def _comparable(result: dict[str, Any], decided_by: str | None) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if k != "decided_by"}
    out["evidence"] = [e for e in result["evidence"] if not e["name"].startswith(_REWORDED)]
    if decided_by != "classifier":
        out.pop("condition")
    return out


def _without_new(response: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """``response`` without the new fields, its results comparable with ``want``'s."""
    assert isinstance(response.get("manifest_digest"), str)
    out = {k: v for k, v in response.items() if k not in NEW_FIELDS}
    by = [r.get("decided_by") for r in response["results"]]
    assert set(by) <= {"classifier", "physics"} and "classifier" in by, by
    out["results"] = [_comparable(r, b) for r, b in zip(response["results"], by, strict=True)]
    want["results"] = [_comparable(r, b) for r, b in zip(want["results"], by, strict=True)]
    return out


def test_legacy_bundle_dir_serves_identical_results(legacy: Path) -> None:
    bundle = load_bundle(legacy / "bundle-mlp")
    assert "classes" not in json.loads((legacy / "bundle-mlp" / "bundle.json").read_text())
    out, _ = invoke(bundle, (legacy / "request.msgpack").read_bytes(), MSGPACK, JSON)
    got = json.loads(out)
    assert got["manifest_digest"] == bundle.manifest.digest
    want = _expected("bundle-mlp")
    assert _without_new(got, want) == want
    # no classes entry: the classifier's classes, with the built-in catalogue's texts
    names = [c.name for c in bundle.manifest.classes]
    assert names == [*bundle.classifier.classes, "sensor_fault"]
    assert all(c == CATALOGUE[c.name] for c in bundle.manifest.classes)


def test_legacy_registry_deployment_serves_identical_results(legacy: Path) -> None:
    reg = LocalRegistry(legacy / "registry")
    dep = reg.deployment("pumpwatch")
    assert dep is not None and dep.model_version == "legacy/1"
    bundle = reg.load(reg.describe(dep.group, dep.version))
    out, _ = invoke(bundle, (legacy / "request.msgpack").read_bytes(), MSGPACK, JSON)
    want = _expected("registry")
    assert _without_new(json.loads(out), want) == want


def test_legacy_registry_through_the_server_process(legacy: Path) -> None:
    body = (legacy / "request.msgpack").read_bytes()
    with ModelServerProcess(registry=legacy / "registry") as srv:
        req = urllib.request.Request(  # noqa: S310
            srv.url + "/invocations", data=body, method="POST",
            headers={"Content-Type": MSGPACK, "Accept": JSON,
                     "X-Amzn-SageMaker-Custom-Attributes": "manifest=1"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            got = json.loads(r.read())
    assert got["manifest"]["model_version"] == "legacy/1"
    assert got["manifest"]["digest"] == got["manifest_digest"]
    want = _expected("registry")
    assert _without_new(got, want) == want
