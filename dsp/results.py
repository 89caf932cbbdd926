"""The endpoint contract's wire schema: invocation request and per-report results.

Versioned like the report schema (``v``: major version; append optional
fields only; never change a field's type). Content types:
``application/x-msgpack`` (production) and ``application/json`` (humans).
A request is ``{"v": 1, "reports": [Report, ...]}``; the response carries one
:class:`Result` per report, in request order.

Optional ``shadow`` part: while a shadow rollout runs, a response may also carry
a top-level ``shadow`` list of :class:`ShadowResult` -- a candidate version's
results for reports that production answered earlier (in this or an earlier
response; see docs/models.md "rolling out a model"). It is not a field of
:class:`InvocationResponse`: a caller decodes it on its own with
:class:`ShadowPart`, so a caller that ignores it is unaffected, and a shadow
part that does not decode never rejects production's results.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from .report import Report

RESULT_SCHEMA_VERSION = 1

#: Classes every served bundle can return whatever its model: the serving layer
#: adds them to each bundle's manifest. ``unknown``: no class can be named with
#: confidence; ``sensor_fault``: the input is unusable (dead, clipped, non-finite).
UNKNOWN = "unknown"
SENSOR_FAULT = "sensor_fault"
HEALTHY = "healthy"
#: Conditions that name no machine fault (the alarm writer and the store's asset alarms
#: look past them for the condition an alarm names).
UNNAMED: frozenset[str] = frozenset({HEALTHY, UNKNOWN, SENSOR_FAULT})


class ClassInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """One condition class a bundle can return, as its manifest declares it.

    ``severity`` is a hint for dashboards and alarms, an open string owned by the
    model side (the built-in bundles use ``none``, ``info``, ``warning``,
    ``critical``); ``action`` is the recommended maintenance action.
    """

    name: str
    display_name: str
    description: str = ""
    severity: str = "info"
    action: str = ""


class Manifest(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a served bundle declares through the contract: its classes and extra fields.

    ``fields`` names the optional result fields the bundle emits beyond
    :class:`Result`'s (name -> description). ``digest`` identifies this content
    (see :func:`manifest_digest`); a response carries it so a caller can cache
    the manifest and fetch it again only when it changes.
    """

    model_version: str
    classes: list[ClassInfo]
    fields: dict[str, str] = {}
    digest: str = ""


def manifest_digest(manifest: Manifest) -> str:
    """A short, stable digest of a manifest's content (its ``digest`` field excluded)."""
    body = msgspec.json.encode(msgspec.structs.replace(manifest, digest=""), order="sorted")
    return hashlib.sha256(body).hexdigest()[:16]


class InvocationRequest(msgspec.Struct, frozen=True):
    v: int
    reports: list[Report]


class Evidence(msgspec.Struct, frozen=True, omit_defaults=True):
    """One reason behind a result, e.g. ``("env_bpfo", 14.2, "BPFO 107.4 Hz, 3 harmonics")``."""

    name: str
    value: float
    note: str = ""


class Result(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    device: str
    epoch: int
    seq: int
    site: str
    pump: str
    channel: str
    t0_ns: int
    condition: str  # open: the bundle's manifest declares the classes
    probabilities: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    anomalous: bool
    baseline: Literal["pump", "fleet"]  # "fleet": no baseline for this pump, generic score
    iso_zone: Literal["A", "B", "C", "D", "?"]
    velocity_rms: float
    model_version: str
    evidence: list[Evidence] = []
    rpm: float | None = None
    #: which rule named ``condition``: quality | physics | ood | classifier (see
    #: models.serving.decision); None from endpoints that predate the decision rule
    decided_by: str | None = None

    @property
    def identity(self) -> tuple[str, int, int]:
        return (self.device, self.epoch, self.seq)


class InvocationResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    model_version: str
    results: list[Result]
    #: identifies the bundle's :class:`Manifest`; the full manifest is included when
    #: the request's CustomAttributes ask for it (``manifest=1``).
    manifest_digest: str | None = None
    manifest: Manifest | None = None


SHADOW_FIELD = "shadow"


class ShadowResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """A shadow (candidate) version's result for a report production answered.

    ``result`` carries the report identity and the shadow's ``model_version``;
    ``production`` names the version whose result the caller got for the same
    report; ``pump_class`` is the report's asset ``kind`` ("" if it names none).
    """

    result: Result
    production: str
    pump_class: str = ""


class ShadowPart(msgspec.Struct, frozen=True):
    """The optional ``shadow`` part of a response body, decoded on its own (see above)."""

    shadow: list[ShadowResult] = []
