"""Safe rollout, backend-neutral: a candidate beside production, promotion, rollback, history.

Vocabulary (the same for the local registry and SageMaker):

- A :class:`~models.registry.local.Deployment` names the endpoint's *production*
  version and, while a rollout runs, one :class:`Candidate` beside it.
- ``mode="all"`` (a plain deploy) switches production at once and ends any rollout.
- ``mode="shadow"``: every batch is scored by both; callers get production's
  results, and the candidate's in the response's optional ``shadow`` part (the
  consumer stores them in ``shadow_results``); the model server keeps the
  comparison (``GET /rollout``). On SageMaker a shadow variant's answers go to
  data capture (:mod:`.capture` reads them back).
- ``mode="canary"``: ``percent`` of the pumps, chosen by a hash of the pump id
  (stable: a pump never flips between versions while the share stays put,
  and raising the share only adds pumps), are scored by the candidate; every
  result names the version that produced it.
- ``promote`` makes the candidate production; ``rollback`` drops the candidate
  (or, with none, returns production to the version before the last switch).
  The model server rolls back by itself (``automatic=True``, ``by`` the server)
  when the candidate crosses one of its :class:`RolloutLimits`.
- Every change appends a :class:`HistoryEntry` (who, when, from which version
  to which, why): :meth:`RolloutRegistry.history`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from models.serving.errors import RegistryError

if TYPE_CHECKING:
    from .local import Deployment

RolloutMode = Literal["all", "shadow", "canary"]
ROLLOUT_MODES: tuple[str, ...] = ("all", "shadow", "canary")
Action = Literal["deploy", "shadow", "canary", "promote", "rollback", "auto-rollback"]


@dataclass(frozen=True, kw_only=True)
class RolloutLimits:
    """When the model server rolls a candidate back by itself (None: not checked).

    Judged on the candidate's own traffic once it has scored ``min_reports``
    reports: ``max_error_rate`` -- share of the candidate's scoring calls that
    failed; ``max_p95_latency_ms`` -- 95th percentile of its scoring time per
    batch (ms); ``max_ood_share`` -- its drift status, the share of its results
    decided by the out-of-distribution gate (``decided_by == "ood"``).
    """

    max_error_rate: float | None = 0.05
    max_p95_latency_ms: float | None = None
    max_ood_share: float | None = None
    min_reports: int = 20

    def __post_init__(self) -> None:
        bad = []
        for name in ("max_error_rate", "max_ood_share"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                bad.append(f"{name} must be within [0, 1], got {v!r}")
        if self.max_p95_latency_ms is not None and not self.max_p95_latency_ms > 0:
            bad.append(f"max_p95_latency_ms must be > 0, got {self.max_p95_latency_ms!r}")
        if self.min_reports < 1:
            bad.append(f"min_reports must be >= 1, got {self.min_reports!r}")
        if bad:
            raise RegistryError("rollout limits: " + "; ".join(bad))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutLimits:
        known = {k: d[k] for k in ("max_error_rate", "max_p95_latency_ms", "max_ood_share",
                                   "min_reports") if k in d}
        return cls(**known)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """The version on trial beside production."""

    version: int
    mode: Literal["shadow", "canary"]
    percent: float = 0.0  # canary: share of pumps, 0-100; shadow: 0 (all batches, no results)
    limits: RolloutLimits = field(default_factory=RolloutLimits)
    started: str = ""
    by: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["limits"] = self.limits.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        return cls(version=int(d["version"]), mode=d["mode"], percent=float(d.get("percent", 0)),
                   limits=RolloutLimits.from_dict(d.get("limits") or {}),
                   started=d.get("started", ""), by=d.get("by", ""))


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    """One change of an endpoint's deployment: who, when, from which version to which, why."""

    at: str
    by: str
    action: Action
    endpoint: str
    group: str
    from_version: int | None
    to_version: int | None
    reason: str = ""
    percent: float | None = None  # canary share

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistoryEntry:
        return cls(at=d["at"], by=d["by"], action=d["action"], endpoint=d["endpoint"],
                   group=d["group"], from_version=d.get("from_version"),
                   to_version=d.get("to_version"), reason=d.get("reason", ""),
                   percent=d.get("percent"))


def who() -> str:
    """The person (or service) making a change: ``$PUMPWATCH_USER``, else the login name."""
    env = os.environ.get("PUMPWATCH_USER")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_rollout(mode: str, percent: float | None) -> None:
    """A mode and canary share that can work; :class:`RegistryError` naming every problem."""
    if mode not in ROLLOUT_MODES:
        raise RegistryError(f"rollout mode must be one of {ROLLOUT_MODES}, got {mode!r}")
    if mode == "canary":
        if percent is None or not 0.0 < percent < 100.0:
            raise RegistryError(f"a canary needs a share of pumps 0 < percent < 100, got "
                                f"{percent!r}")
    elif percent is not None:
        raise RegistryError(f"percent is for canary deployments only (mode {mode!r})")


class RolloutRegistry(Protocol):
    """The rollout half of a registry (local directory, SageMaker): same signatures on both.

    ``by`` defaults to :func:`who`; ``reason`` is free text kept in the history.
    """

    def deploy(
        self, group: str, endpoint: str = "pumpwatch", version: int | None = None, *,
        mode: RolloutMode = "all", percent: float | None = None,
        limits: RolloutLimits | None = None, by: str | None = None, reason: str = "",
    ) -> Deployment: ...

    def promote(
        self, group: str, endpoint: str = "pumpwatch", *, by: str | None = None,
        reason: str = "",
    ) -> Deployment: ...

    def rollback(
        self, group: str, endpoint: str = "pumpwatch", *, by: str | None = None,
        reason: str = "", automatic: bool = False,
    ) -> Deployment: ...

    def history(self, group: str, endpoint: str | None = None) -> list[HistoryEntry]: ...


__all__ = [
    "ROLLOUT_MODES",
    "Candidate",
    "HistoryEntry",
    "RolloutLimits",
    "RolloutMode",
    "RolloutRegistry",
    "check_rollout",
    "who",
]
