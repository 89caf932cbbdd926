"""The inference handler, sans-IO: batching never changes the answer; bundles slot in."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

import dsp
from dsp.results import InvocationResponse
from models.serving.baseline import DEFAULT_FEATURES, FLEET, fit_baselines
from models.serving.bundle import Bundle, builtin_bundle, load_bundle, write_bundle
from models.serving.classes import CONDITIONS
from models.serving.classifier import SoftmaxClassifier
from models.serving.errors import BundleError, ChecksumMismatchError, RequestError
from models.serving.handler import JSON, MSGPACK, decode_request, invoke, score
from tests.infra.model_server import request_body, synth_reports


@pytest.fixture(scope="module")
def healthy() -> list[dsp.Report]:
    return synth_reports(24, pumps=["p1", "p2", "p3"], seed=21)


@pytest.fixture(scope="module")
def mixed(healthy: list[dsp.Report]) -> list[dsp.Report]:
    faulty = synth_reports(6, pumps=["p1", "p2", "p9"], seed=22, outer=25.0, seq0=100)
    inner = synth_reports(3, pumps=["p3"], seed=23, inner=25.0, seq0=200)
    loud = synth_reports(3, pumps=["p2"], seed=24, gain=6.0, seq0=300)
    out = healthy[:12] + faulty + inner + loud
    random.Random(3).shuffle(out)
    return out


def _results(bundle: Bundle, reports: Sequence[dsp.Report]) -> list[Any]:
    return [msgspec.to_builtins(r) for r in score(bundle, reports).results]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batching_never_changes_the_answer(
    tmp_path: Path, healthy: list[dsp.Report], mixed: list[dsp.Report], seed: int
) -> None:
    bundle = load_bundle(write_bundle(
        tmp_path / "b", model_version="t-1",
        baselines=fit_baselines(healthy, min_reports=5, fleet=True),
    ))
    whole = _results(bundle, mixed)
    one_by_one = [r for rep in mixed for r in _results(bundle, [rep])]
    assert whole == one_by_one
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(mixed)), 4))
    parts = [mixed[a:b] for a, b in zip([0, *cuts], [*cuts, len(mixed)], strict=True)]
    assert [r for p in parts for r in _results(bundle, p)] == whole


def test_results_in_order_with_identity_and_version(mixed: list[dsp.Report]) -> None:
    resp = score(builtin_bundle(), mixed)
    assert [r.identity for r in resp.results] == [r.identity for r in mixed]
    for res in resp.results:
        assert res.model_version == resp.model_version == "builtin-physics-1"
        assert set(res.probabilities) == set(CONDITIONS)
        assert res.baseline == "fleet"
        assert np.isfinite(res.anomaly_score) and res.anomaly_threshold == 1.0


def test_physics_names_the_fault_and_why(mixed: list[dsp.Report]) -> None:
    resp = score(builtin_bundle(), mixed)
    by_seq = {r.seq: r for r in resp.results}
    for rep in mixed:
        res = by_seq[rep.seq]
        names = {e.name for e in res.evidence}
        if 200 <= rep.seq < 300:  # inner-race impacts
            assert res.condition == "bearing_inner", res
            assert "env_bpfi" in names and res.anomalous
        elif rep.seq >= 300:  # 6x louder: zone C/D
            assert res.iso_zone in ("C", "D") and res.anomalous
        elif rep.seq < 100:
            assert res.condition == "healthy" and not res.anomalous


def test_pump_fleet_and_missing_baselines(healthy: list[dsp.Report]) -> None:
    base = fit_baselines(healthy, min_reports=5, fleet=True)
    assert set(base.pumps) == {"p1", "p2", "p3", FLEET}
    only_p1 = fit_baselines([r for r in healthy if r.pump == "p1"], min_reports=5)
    b1 = builtin_bundle()
    with_fleet = type(b1)("v", b1.classifier, base, b1.physics)
    without = type(b1)("v", b1.classifier, only_p1, b1.physics)
    stranger = synth_reports(2, pumps=["p-new"], seed=30, seq0=50)
    r1 = score(with_fleet, stranger).results
    assert {r.baseline for r in r1} == {"fleet"}
    assert all(r.anomaly_threshold == base.threshold[base.index[FLEET]] for r in r1)
    r2 = score(without, [*stranger, healthy[0]]).results
    assert [r.baseline for r in r2] == ["fleet", "fleet", "pump"]
    assert r2[0].anomaly_threshold == 1.0  # physics fleet score


def test_mixed_band_layouts_in_one_batch(healthy: list[dsp.Report]) -> None:
    cfg = dsp.ReportConfig(bands=((10.0, 1000.0), (1000.0, 5000.0)))
    odd = synth_reports(2, pumps=["p1"], seed=31, cfg=cfg, seq0=70)
    base = fit_baselines(healthy, min_reports=5)
    b = type(builtin_bundle())("v", builtin_bundle().classifier, base, builtin_bundle().physics)
    res = score(b, [healthy[0], *odd]).results
    assert all(np.isfinite(r.anomaly_score) for r in res)
    assert res[1].baseline == "pump"  # scored on the features it has


def test_softmax_classifier_slots_in(tmp_path: Path, healthy: list[dsp.Report]) -> None:
    names = ("log:velocity_rms", "log:env_bpfo", "log:env_bpfi", "kurtosis")
    classes = ("healthy", "bearing_outer", "bearing_inner", "unknown")
    w = np.zeros((4, 4))
    w[1, 1] = w[2, 2] = 5.0
    clf = SoftmaxClassifier(
        feature_names=names, classes=classes, mean=np.array([0.0, 0.3, 0.3, 3.0]),
        scale=np.ones(4), W=w, b=np.array([1.0, 0, 0, -5]),
    )
    d = write_bundle(tmp_path / "trained", model_version="clf-7", classifier=clf,
                     baselines=fit_baselines(healthy, min_reports=5))
    bundle = load_bundle(d)
    assert bundle.classifier.kind == "softmax"
    res = score(bundle, healthy[:3]).results
    assert all(set(r.probabilities) == set(classes) for r in res)
    assert all(r.condition == "healthy" and r.model_version == "clf-7" for r in res)
    outer = synth_reports(1, pumps=["p1"], seed=32, outer=40.0, seq0=90)
    assert score(bundle, outer).results[0].condition == "bearing_outer"


def test_bundle_files_are_checksummed(tmp_path: Path, healthy: list[dsp.Report]) -> None:
    d = write_bundle(tmp_path / "b", model_version="x", baselines=fit_baselines(healthy[:12],
                                                                                min_reports=3))
    (d / "baselines.npz").write_bytes((d / "baselines.npz").read_bytes()[:-1] + b"?")
    with pytest.raises(ChecksumMismatchError):
        load_bundle(d)
    (d / "bundle.json").write_text('{"format": "pumpwatch-bundle", "format_version": 1, '
                                   '"model_version": "x", "classifier": {"kind": "xgb"}}')
    with pytest.raises(BundleError, match="unknown classifier kind 'xgb'"):
        load_bundle(d)
    with pytest.raises(BundleError, match=r"no bundle\.json"):
        load_bundle(tmp_path)


def test_content_negotiation(healthy: list[dsp.Report]) -> None:
    body = request_body(healthy[:2])
    out, ct = invoke(builtin_bundle(), body, MSGPACK, "application/json")
    assert ct == JSON
    assert len(msgspec.json.decode(out, type=InvocationResponse).results) == 2
    out, ct = invoke(builtin_bundle(), request_body(healthy[:1], json=True),
                     "application/json; charset=utf-8", "*/*")
    assert ct == JSON
    with pytest.raises(RequestError, match="Accept"):
        invoke(builtin_bundle(), body, MSGPACK, "text/html")
    assert decode_request(request_body([]), MSGPACK) == []
    empty = msgspec.msgpack.decode(invoke(builtin_bundle(), request_body([]), MSGPACK, None)[0],
                                   type=InvocationResponse)
    assert empty.results == []


def test_wrong_report_version_names_identity(healthy: list[dsp.Report]) -> None:
    bad = msgspec.structs.replace(healthy[0], v=2)
    with pytest.raises(RequestError, match=r"reports\[0\].*v=2.*dev1"):
        decode_request(request_body([bad]), MSGPACK)


def test_default_features_are_known() -> None:
    assert "log:band_rms[2500-5000]" in DEFAULT_FEATURES


def test_validation_errors_name_the_field(healthy: list[dsp.Report]) -> None:
    good = msgspec.msgpack.decode(dsp.encode_report(healthy[0]))  # positional, bytes kept
    bad = list(good)
    feats = list(bad[16])
    feats[0] = "loud"  # features.rms
    bad[16] = feats
    body = msgspec.msgpack.encode({"v": 1, "reports": [good, bad]})
    with pytest.raises(RequestError, match=r"reports\[1\]\.features\.rms"):
        decode_request(body, MSGPACK)
    # no Content-Type (or octet-stream) means msgpack
    assert len(decode_request(request_body(healthy[:1]), None)) == 1
    assert len(decode_request(request_body(healthy[:1]), "application/octet-stream")) == 1


def test_non_finite_features_never_reach_the_wire(healthy: list[dsp.Report]) -> None:
    f = msgspec.structs.replace(
        healthy[0].features, kurtosis=float("nan"), velocity_rms=float("inf"),
        env_bpfo=float("inf"), v1x=float("nan"), band_rms=[float("inf")] * 4,
    )
    broken = msgspec.structs.replace(healthy[0], features=f)
    out, _ = invoke(builtin_bundle(), request_body([broken, healthy[1]]), MSGPACK, JSON)
    res = msgspec.json.decode(out, type=InvocationResponse).results  # strict: no nulls
    # no finite velocity: unusable input, a sensor fault (models.serving.decision rule 1)
    assert res[0].iso_zone == "?" and res[0].condition == "sensor_fault"
    assert res[0].decided_by == "quality" and not res[0].anomalous
    assert np.isfinite(res[0].anomaly_score)
    assert res[1].condition == "healthy"


def test_batch_bearing_diagnosis_equals_the_reference(mixed: list[dsp.Report]) -> None:
    """Batching never changes the family call: a batch gives what each report alone gives."""
    from models.serving._diagnose_batch import diagnose_bearings
    from models.serving.diagnostics import diagnose_bearing

    extra = synth_reports(4, pumps=["p5"], seed=51, outer=6.0, seq0=400)
    no_bearing = msgspec.structs.replace(extra[0], asset=dsp.Asset(vanes=6))
    no_speed = msgspec.structs.replace(extra[1], speed=dsp.Speed(0.0, "unknown"))
    no_env = msgspec.structs.replace(extra[2], envelope=None)
    at_12k = synth_reports(2, pumps=["p6"], seed=52, outer=6.0, seq0=500,
                           cfg=dsp.ReportConfig().at_rate(12000.0))
    reports = [*mixed, *extra, no_bearing, no_speed, no_env, *at_12k]
    got = diagnose_bearings(reports)
    want = [diagnose_bearings([r])[0] for r in reports]
    assert got == want
    assert [diagnose_bearing(r).label for r in reports] == [c.label for c in want]
    assert sum(1 for c in want if c.label == "bearing_outer") >= 6  # the faulty ones
    assert [c.label for c in want[-5:-2]] == [None, None, None]  # no bearing/speed/envelope
    resp = score(builtin_bundle(), reports)
    for res, call in zip(resp.results, want, strict=True):
        fam = [e for e in res.evidence if e.name.startswith(("env_family:", "speed_used"))]
        assert fam == call.evidence


def _broadband(rep: dsp.Report, asset: dsp.Asset) -> dsp.Report:
    """``rep`` as a pump in zone D whose acceleration sits above 2.5 kHz: no shaft line to
    speak of, no envelope line (the cavitation signature of the physics rules)."""
    f = msgspec.structs.replace(
        rep.features, velocity_rms=9.0, v1x=0.3, v2x=0.1, v3x=0.1,
        band_rms=[0.3, 0.4, 4.0, 4.0], env_bpfo=None, env_bpfi=None, env_bsf=None,
        env_ftf=None,
    )
    return msgspec.structs.replace(rep, features=f, asset=asset)


def test_broadband_high_frequency_energy_is_named_and_cavitation_only_on_a_pump(
    healthy: list[dsp.Report],
) -> None:
    # the evidence note asks "cavitation?" only where the asset has an impeller: a
    # machine without stated vanes shows the energy but is never labelled cavitation
    pump, dry = healthy[0].asset, msgspec.structs.replace(healthy[0].asset, vanes=None)
    assert pump.impeller and not dry.impeller
    res = score(builtin_bundle(), [_broadband(healthy[0], pump),
                                   _broadband(healthy[1], dry)]).results
    notes = [{e.name: e.note for e in r.evidence}.get("hf_share") for r in res]
    assert notes == ["broadband high-frequency energy (cavitation?)",
                     "broadband high-frequency energy"]
    assert res[0].condition == "cavitation"
    # the result keeps what the classifier said; the decision rules cavitation out
    assert res[1].condition != "cavitation"
    ruled = {e.name: e.note for e in res[1].evidence}.get("ruled_out", "")
    assert ruled.startswith("cavitation (p=") and "needs an impeller" in ruled
