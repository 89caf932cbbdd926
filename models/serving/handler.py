"""The inference handler: request bytes in, response bytes out, sans-IO.

One call scores a whole batch: decode once with a typed msgspec decoder,
gather features into columns (:func:`models.serving.features.extract`), run the
classifier, the anomaly model and the bearing-family search with numpy
across the batch, let :func:`models.serving.decision.decide` name each
condition (quality, physics, out-of-distribution gate, classifier: one
documented rule), then build one :class:`dsp.results.Result` per report in
request order. The HTTP server is a
thin adapter around :func:`invoke`.

Every response carries the bundle's ``manifest_digest``; the full manifest
only when the request's CustomAttributes ask for it (``manifest=1``). A
bundle whose classifier emits extra result fields (its manifest's
``fields``) gets them as top-level keys of each result object: those
responses are encoded from plain dicts, the others straight from the
structs (the common path stays as fast as before).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import numpy as np

from dsp.report import QUALITY_NAMES, SUPPORTED_VERSIONS, Report
from dsp.results import (
    RESULT_SCHEMA_VERSION,
    SHADOW_FIELD,
    Evidence,
    InvocationRequest,
    InvocationResponse,
    Result,
    ShadowResult,
)

from ._diagnose_batch import diagnose_bearings
from .bundle import Bundle
from .classifier import EmitsFields
from .decision import decide, rule_out_impossible
from .errors import ModelFailureError, RequestError, UnsupportedMediaTypeError
from .features import BatchFeatures, extract
from .physics import PhysicsClassifier, fleet_score

MSGPACK = "application/x-msgpack"
JSON = "application/json"
_ALIASES = {
    "application/x-msgpack": MSGPACK,
    "application/msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
    "application/json": JSON,
}
_ZONES = ("A", "B", "C", "D")
_ENV_NAMES = {
    "env_bpfo": "outer-race (BPFO)",
    "env_bpfi": "inner-race (BPFI)",
    "env_bsf": "rolling-element (BSF)",
}
_FLEET_TERMS = ("velocity vs B/C limit", "bearing envelope line", "kurtosis")

_mp_decoder = msgspec.msgpack.Decoder(InvocationRequest)
_json_decoder = msgspec.json.Decoder(InvocationRequest)
_mp_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


def media_type(header: str | None, *, default: str | None = None) -> str | None:
    """The canonical media type of a Content-Type/Accept value, or None if unsupported.

    ``Accept`` may list several types; the first supported wins; ``*/*`` or
    empty means ``default``.
    """
    if not header:
        return default
    if header.split(";", 1)[0].strip().lower() == "application/octet-stream":
        return default  # what HTTP clients send when none was given
    for part in header.split(","):
        mt = part.split(";", 1)[0].strip().lower()
        if mt in _ALIASES:
            return _ALIASES[mt]
        if mt in ("*/*", "application/*"):
            return default
    return None


_REPORT_INFO = msgspec.inspect.type_info(Report)
_PATH_RE = re.compile(r"`\$\.reports\[(\d+)\]((?:\[\d+\])*)`")


def _named(path_indices: list[int]) -> str:
    """``[16, 0]`` in a positional report -> ``.features.rms`` (names from the schema)."""
    out = ""
    t: msgspec.inspect.Type = _REPORT_INFO
    for i in path_indices:
        while isinstance(t, msgspec.inspect.UnionType):  # Optional[X] -> X
            t = next(
                (x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)), t.types[0]
            )
        if isinstance(t, msgspec.inspect.StructType) and i < len(t.fields):
            out += "." + t.fields[i].name
            t = t.fields[i].type
        elif isinstance(t, msgspec.inspect.ListType):
            out += f"[{i}]"
            t = t.item_type
        elif isinstance(t, msgspec.inspect.TupleType) and i < len(t.item_types):
            out += f"[{i}]"
            t = t.item_types[i]
        else:
            out += f"[{i}]"
    return out


def _explain(message: str) -> str:
    """Add field names to msgspec's positional paths (reports are array-like on the wire)."""
    m = _PATH_RE.search(message)
    if not m:
        return message
    idx = [int(x) for x in re.findall(r"\d+", m.group(2))]
    return f"{message} (reports[{m.group(1)}]{_named(idx)})"


def decode_request(body: bytes, content_type: str | None) -> list[Report]:
    """Decode and validate a request; :class:`RequestError` names what is wrong."""
    mt = media_type(content_type, default=MSGPACK)
    if mt is None:
        raise UnsupportedMediaTypeError(
            f"unsupported content type {content_type!r}: use {MSGPACK} or {JSON}"
        )
    if not body:
        raise RequestError("empty request body: expected an InvocationRequest {v, reports}")
    try:
        req = _mp_decoder.decode(body) if mt == MSGPACK else _json_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(f"invalid InvocationRequest: {_explain(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise RequestError(f"malformed {mt} body: {exc}") from None
    if req.v != RESULT_SCHEMA_VERSION:
        raise RequestError(
            f"unsupported request schema version v={req.v} (supported: {RESULT_SCHEMA_VERSION})"
        )
    for i, r in enumerate(req.reports):
        if r.v not in SUPPORTED_VERSIONS:
            raise RequestError(
                f"reports[{i}]: unsupported report schema version v={r.v} "
                f"(supported: {sorted(SUPPORTED_VERSIONS)}), identity {r.identity}"
            )
    return req.reports


class _Shadowed(InvocationResponse, frozen=True, omit_defaults=True):
    """A response with the optional ``shadow`` part, for encoding only (dsp.results)."""

    shadow: list[ShadowResult] = msgspec.field(default_factory=list)


def encode_response(
    response: InvocationResponse, accept: str,
    extras: Sequence[Mapping[str, Any]] | None = None,
    shadow: Sequence[ShadowResult] = (),
) -> bytes:
    """Wire bytes; ``extras`` (one mapping per result) become top-level result fields;
    ``shadow`` results go in the optional top-level ``shadow`` part (dsp.results)."""
    body: InvocationResponse | _Shadowed | dict[str, Any] = response
    if extras is not None:
        plain: dict[str, Any] = msgspec.to_builtins(response)
        for res, more in zip(plain["results"], extras, strict=True):
            res.update(more)
        if shadow:
            plain[SHADOW_FIELD] = msgspec.to_builtins(list(shadow))
        body = plain
    elif shadow:  # typed, encoded in one pass (to_builtins costs ~2x)
        body = _Shadowed(**{f: getattr(response, f) for f in response.__struct_fields__},
                         shadow=list(shadow))
    return _mp_encoder.encode(body) if accept == MSGPACK else _json_encoder.encode(body)


def custom_attributes(header: str | None) -> dict[str, str]:
    """SageMaker CustomAttributes as ``key=value`` pairs (``,`` or ``;`` separated).

    An item without ``=`` is a key with an empty value; keys are case-sensitive,
    surrounding whitespace is dropped. Unknown keys are kept (and ignored).
    """
    out: dict[str, str] = {}
    for item in re.split(r"[,;]", header or ""):
        key, _, value = item.partition("=")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def wants_manifest(header: str | None) -> bool:
    """Whether CustomAttributes ask for the full manifest (``manifest=1``)."""
    return custom_attributes(header).get("manifest", "").lower() in ("1", "true", "yes")


def _zones(vel: np.ndarray, limits: np.ndarray) -> list[str]:
    zi = (vel[:, None] >= limits).sum(axis=1)
    return [("?" if not np.isfinite(v) else _ZONES[int(z)]) for v, z in zip(vel, zi, strict=True)]


def _quality_note(flags: int) -> str:
    return ", ".join(name for bit, name in QUALITY_NAMES.items() if flags & bit)


def score(bundle: Bundle, reports: Sequence[Report]) -> InvocationResponse:
    """Score a batch with ``bundle``; one result per report, in order (no extra fields)."""
    return score_with_fields(bundle, reports)[0]


Extras = list[dict[str, Any]]


def score_with_fields(
    bundle: Bundle, reports: Sequence[Report], *, with_manifest: bool = False
) -> tuple[InvocationResponse, Extras | None]:
    """Score a batch; also the bundle's extra result fields per result (None if it has none)."""
    version = bundle.model_version
    manifest = bundle.manifest
    if not reports:
        return InvocationResponse(
            RESULT_SCHEMA_VERSION, version, [], manifest_digest=manifest.digest,
            manifest=manifest if with_manifest else None,
        ), ([] if manifest.fields else None)
    try:
        f = extract(reports)
        response, extras = _score(bundle, reports, f)
    except RequestError:
        raise
    except Exception as exc:
        raise ModelFailureError(
            f"model {version} failed on a batch of {len(reports)}: {exc!r}"
        ) from exc
    if with_manifest:
        response = msgspec.structs.replace(response, manifest=manifest)
    return response, extras


def _extras(bundle: Bundle, f: BatchFeatures, proba: np.ndarray) -> Extras | None:
    """Per result, the extra fields the bundle's manifest declares (None: it declares none)."""
    names = bundle.manifest.fields
    clf = bundle.classifier
    if not names or not isinstance(clf, EmitsFields):
        return None
    out = clf.extra_outputs(f, proba)
    missing = [k for k in names if k not in out]
    bad = {k: len(out[k]) for k in names if k in out and len(out[k]) != f.n}
    if missing or bad:
        raise ValueError(f"classifier {clf.kind} extra outputs: missing {missing}, "
                         f"wrong lengths {bad} (expected {f.n})")
    cols = [(k, list(out[k])) for k in names]
    return [{k: col[i] for k, col in cols} for i in range(f.n)]


def _score(
    bundle: Bundle, reports: Sequence[Report], f: BatchFeatures
) -> tuple[InvocationResponse, Extras | None]:
    n = f.n
    params = bundle.physics
    clf = bundle.classifier
    proba = np.round(np.asarray(clf.predict_proba(f), dtype=np.float64), 4)
    if proba.shape != (n, len(clf.classes)):
        raise ValueError(
            f"classifier returned shape {proba.shape}, expected {(n, len(clf.classes))}"
        )
    bad_rows = ~np.isfinite(proba).all(axis=1)
    if bad_rows.any():  # a model that cannot say anything says "unknown"
        fallback = np.zeros(len(clf.classes))
        if "unknown" in clf.classes:
            fallback[clf.classes.index("unknown")] = 1.0
        else:
            fallback[:] = 1.0 / len(clf.classes)
        proba[bad_rows] = fallback
    extras = _extras(bundle, f, proba)
    given, ruled_out = rule_out_impossible(proba, clf.classes, reports)
    top = given.argmax(axis=1)
    top_p = given[np.arange(n), top]
    labels = [clf.classes[i] for i in top.tolist()]
    unsure = (top_p < params.unsure_below).tolist()

    # anomaly: own baseline, else fleet baseline row, else the physics fleet score
    fscore, fterm = fleet_score(f, params)
    score_a = fscore.copy()
    thr = np.ones(n)
    own = np.zeros(n, dtype=bool)
    top_feat = np.full(n, -1, dtype=np.int64)
    top_z = np.zeros(n)
    names: tuple[str, ...] = ()
    if bundle.baselines is not None:
        b = bundle.baselines.score(f)
        ok = np.isfinite(b.score)
        score_a = np.where(ok, b.score, score_a)
        thr = np.where(ok, b.threshold, thr)
        own = b.own & ok
        used_base = ok
        top_feat = np.where(ok, b.top_feature, -1)
        top_z = b.top_z
        names = bundle.baselines.feature_names
    else:
        used_base = np.zeros(n, dtype=bool)
    score_a = np.where(np.isfinite(score_a), score_a, fscore)
    anomalous = (score_a >= thr).tolist()

    vel = f.column("velocity_rms")
    zones = _zones(vel, f.zone_limits)
    phys = clf if isinstance(clf, PhysicsClassifier) else PhysicsClassifier(params)
    strengths = phys.strengths(f)
    env_cols = {k: f.column(k).tolist() for k in _ENV_NAMES}
    v1 = f.column("v1x").tolist()
    lim = f.zone_limits.tolist()
    flags = f.quality_flags.tolist()
    imb = (strengths["imbalance"] >= 0.5).tolist()
    mis = (strengths["misalignment"] >= 0.5).tolist()
    loose = (strengths["looseness"] >= 0.5).tolist()
    cav = (strengths["cavitation"] >= 0.5).tolist()
    env_thr = params.env_threshold
    # Envelope-family diagnosis of every report with a bearing (it reads their envelope
    # spectra, batch-wise): the slip-wide comb finds lines the edge's catalog-order
    # prominences miss.
    families = diagnose_bearings(reports)
    env_lit = np.stack([np.fmax(f.column(k), 0) >= env_thr for k in _ENV_NAMES]).any(axis=0)
    patterns = (strengths["imbalance"] >= 0.5) | (strengths["misalignment"] >= 0.5) | (
        strengths["looseness"] >= 0.5) | (strengths["cavitation"] >= 0.5)
    # a fault signature: an envelope line at a catalog defect rate 4x its floor (the edge's
    # prominences) or a shaft-rate / broadband pattern; a clear family decides by itself
    signature = (env_lit | patterns).tolist()
    ood = None
    if bundle.support is not None:
        _, ood = bundle.support.outside(f)
    decisions = decide(
        reports, labels=labels, top_p=top_p.tolist(), unsure=unsure, anomalous=anomalous,
        zones=zones, families=families, signature=signature, ood=ood,
    )

    score_l = np.round(score_a, 4).tolist()
    thr_l = np.round(thr, 4).tolist()
    own_l = own.tolist()
    base_l = used_base.tolist()
    tf_l = top_feat.tolist()
    tz_l = np.round(top_z, 2).tolist()
    fs_l = fscore.tolist()
    ft_l = fterm.astype(int).tolist()
    vel_l = vel.tolist()
    proba_l = proba.tolist()
    classes = clf.classes

    results: list[Result] = []
    for i, r in enumerate(reports):
        v = vel_l[i]
        ev = [
            Evidence(
                "iso_zone", round(v, 3),
                f"zone {zones[i]}: {v:.2f} mm/s RMS (A/B {lim[i][0]:g}, B/C {lim[i][1]:g}, "
                f"C/D {lim[i][2]:g})",
            )
            if v == v
            else Evidence("iso_zone", 0.0, "zone ?: the report has no finite velocity RMS")
        ]
        for key, what in _ENV_NAMES.items():
            prom = env_cols[key][i]
            if prom == prom and prom >= env_thr:
                ev.append(Evidence(key, round(prom, 2), f"{what} envelope line {prom:.1f}x floor"))
        ev.extend(families[i].evidence)
        if imb[i]:
            ev.append(Evidence("v1x", round(v1[i], 3), "1x dominates the velocity spectrum"))
        if mis[i]:
            ev.append(Evidence("v2x", round(r.features.v2x or 0.0, 3), "strong 2x relative to 1x"))
        if loose[i]:
            ev.append(Evidence("v3x", round(r.features.v3x or 0.0, 3), "strong 3x relative to 1x"))
        if cav[i]:
            ev.append(Evidence("hf_share", 0.0, "broadband high-frequency energy" + (
                " (cavitation?)" if r.asset.impeller else "")))
        if (out_note := ruled_out[i]) is not None:
            ev.append(out_note)
        d = decisions[i]
        if base_l[i] and tf_l[i] >= 0 and d.anomalous:
            ev.append(
                Evidence(f"z:{names[tf_l[i]]}", tz_l[i], "largest deviation from the baseline")
            )
        elif not base_l[i] and d.anomalous:
            ev.append(Evidence("fleet_score", round(fs_l[i], 3), _FLEET_TERMS[ft_l[i]]))
        if flags[i]:
            ev.append(Evidence("quality", float(flags[i]), _quality_note(flags[i])))
        ev.extend(d.evidence)
        results.append(
            Result(
                v=RESULT_SCHEMA_VERSION,
                device=r.device,
                epoch=r.epoch,
                seq=r.seq,
                site=r.site,
                pump=r.pump,
                channel=r.channel,
                t0_ns=r.t0_ns,
                condition=d.condition,
                probabilities=dict(zip(classes, proba_l[i], strict=True)),
                anomaly_score=score_l[i],
                anomaly_threshold=thr_l[i],
                anomalous=d.anomalous,
                baseline="pump" if own_l[i] else "fleet",
                iso_zone=zones[i],  # type: ignore[arg-type]
                velocity_rms=round(v, 4) if v == v else 0.0,
                model_version=bundle.model_version,
                evidence=ev,
                rpm=r.speed.rpm or None,
                decided_by=d.decided_by,
            )
        )
    return InvocationResponse(
        RESULT_SCHEMA_VERSION, bundle.model_version, results,
        manifest_digest=bundle.manifest.digest,
    ), extras


class Handled(NamedTuple):
    """One request's answer: the response bytes, their content type, the reports scored."""

    body: bytes
    content_type: str
    reports: int


def handle(
    bundle: Bundle, body: bytes, content_type: str | None, accept: str | None,
    custom_attributes: str | None = None, *, shadow: Sequence[ShadowResult] = (),
) -> Handled:
    """Whole request -> its answer (and how many reports it scored, for metrics).

    ``custom_attributes`` is the request's CustomAttributes header: ``manifest=1``
    includes the bundle's full manifest in the response. ``shadow``: a shadow's
    earlier results the response carries in its optional ``shadow`` part.
    """
    req_mt = media_type(content_type, default=MSGPACK)
    out_mt = media_type(accept, default=req_mt or MSGPACK)
    if out_mt is None:
        raise UnsupportedMediaTypeError(f"unsupported Accept {accept!r}: use {MSGPACK} or {JSON}")
    reports = decode_request(body, content_type)
    response, extras = score_with_fields(
        bundle, reports, with_manifest=wants_manifest(custom_attributes)
    )
    return Handled(encode_response(response, out_mt, extras, shadow), out_mt, len(reports))


def invoke(
    bundle: Bundle, body: bytes, content_type: str | None, accept: str | None,
    custom_attributes: str | None = None,
) -> tuple[bytes, str]:
    """Whole request -> (response bytes, response content type); see :func:`handle`."""
    out = handle(bundle, body, content_type, accept, custom_attributes)
    return out.body, out.content_type

