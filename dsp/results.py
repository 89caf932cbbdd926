"""The endpoint contract's wire schema: invocation request and per-report results.

Versioned like the report schema (``v``: major version; append optional
fields only; never change a field's type). Content types:
``application/x-msgpack`` (production) and ``application/json`` (humans).
A request is ``{"v": 1, "reports": [Report, ...]}``; the response carries one
:class:`Result` per report, in request order.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .report import Report

RESULT_SCHEMA_VERSION = 1
CONDITIONS: tuple[str, ...] = (
    "healthy",
    "imbalance",
    "misalignment",
    "looseness",
    "bearing_outer",
    "bearing_inner",
    "bearing_ball",
    "cavitation",
    "unknown",
)
Condition = Literal[
    "healthy",
    "imbalance",
    "misalignment",
    "looseness",
    "bearing_outer",
    "bearing_inner",
    "bearing_ball",
    "cavitation",
    "unknown",
]


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
    condition: Condition
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

    @property
    def identity(self) -> tuple[str, int, int]:
        return (self.device, self.epoch, self.seq)


class InvocationResponse(msgspec.Struct, frozen=True):
    v: int
    model_version: str
    results: list[Result]
