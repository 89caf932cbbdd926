"""A candidate beside production inside the model server: routing, comparison, limits (sans-IO).

Theory of operation.

- **Canary routing** (:func:`bucket`, :func:`to_candidate`): a pump's bucket is
  the first 8 bytes of BLAKE2b of its id, as a share in [0, 100). A pump goes
  to the candidate when its bucket is below the canary's percent. The hash
  does not depend on the process, the batch or the clock, so a pump is always
  scored by the same version in every server replica, and raising the share
  only adds pumps.
- **Shadow comparison** (:class:`Comparison`): production's and the
  candidate's results for the same reports are paired; per pump class (the
  asset descriptor's ``kind``) and overall it counts agreement of conditions,
  the label mix of each version (label shift), the mean anomaly-score shift
  (candidate - production) and the candidate's OOD share. In a canary the
  two versions score different pumps, so only the per-version figures are
  kept (no agreement).
- **Per-version health** (:class:`VersionStats`): reports, scoring calls,
  failed calls, and the last :data:`LATENCY_WINDOW` per-batch scoring times
  (p50/p95, ms).
- **Limits** (:meth:`Rollout.verdict`): once the candidate has scored
  ``min_reports`` reports, the first limit it crosses is the reason the
  server rolls it back (see :class:`models.registry.rollout.RolloutLimits`).

Time is passed in (seconds, as measured by the caller).
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsp.report import Report
from dsp.results import Result
from models.registry.rollout import Candidate

LATENCY_WINDOW = 1024
_SCALE = 100.0 / float(1 << 64)


def bucket(pump: str) -> float:
    """A pump's stable share position in [0, 100) (BLAKE2b of its id)."""
    h = hashlib.blake2b(pump.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") * _SCALE


def to_candidate(pump: str, percent: float) -> bool:
    return bucket(pump) < percent


def pump_class(report: Report) -> str:
    """The comparison's pump class: the asset descriptor's ``kind``, else ``unspecified``."""
    return report.asset.kind or "unspecified"


@dataclass
class VersionStats:
    """One version's share of the traffic: reports, calls, failures, scoring latency."""

    reports: int = 0
    calls: int = 0
    errors: int = 0
    ood: int = 0
    failed_reports: int = 0  # reports of the failed calls (not in ``reports``)
    labels: Counter[str] = field(default_factory=Counter)
    score_sum: float = 0.0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def scored(self, results: Sequence[Result], seconds: float) -> None:
        self.calls += 1
        self.reports += len(results)
        self.latencies.append(seconds)
        for r in results:
            self.labels[r.condition] += 1
            self.score_sum += r.anomaly_score
            if r.decided_by == "ood":
                self.ood += 1

    def failed(self, reports: int, seconds: float) -> None:
        self.calls += 1
        self.errors += 1
        self.failed_reports += reports
        self.latencies.append(seconds)

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def ood_share(self) -> float:
        return self.ood / self.reports if self.reports else 0.0

    def latency_ms(self, q: float) -> float | None:
        if not self.latencies:
            return None
        return round(float(np.percentile(np.fromiter(self.latencies, float), q)) * 1e3, 3)

    def to_dict(self) -> dict[str, Any]:
        n = self.reports
        return {
            "reports": n, "calls": self.calls, "errors": self.errors,
            "error_rate": round(self.error_rate, 4), "ood_share": round(self.ood_share, 4),
            "labels": {k: round(v / n, 4) for k, v in sorted(self.labels.items())} if n else {},
            "mean_anomaly_score": round(self.score_sum / n, 4) if n else None,
            "latency_p50_ms": self.latency_ms(50), "latency_p95_ms": self.latency_ms(95),
        }


@dataclass
class Pairs:
    """Paired results (shadow): the same reports scored by production and the candidate."""

    n: int = 0
    agree: int = 0
    prod: Counter[str] = field(default_factory=Counter)
    cand: Counter[str] = field(default_factory=Counter)
    score_shift: float = 0.0
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, prod_condition: str, prod_score: float, cand_condition: str,
            cand_score: float) -> None:
        self.n += 1
        self.prod[prod_condition] += 1
        self.cand[cand_condition] += 1
        if prod_condition == cand_condition:
            self.agree += 1
        else:
            self.changes[(prod_condition, cand_condition)] += 1
        self.score_shift += cand_score - prod_score

    def to_dict(self) -> dict[str, Any]:
        n = self.n
        if not n:
            return {"reports": 0}
        labels = sorted(set(self.prod) | set(self.cand))
        return {
            "reports": n,
            "agreement": round(self.agree / n, 4),
            # label shift: each label's share under the candidate minus under production
            "label_shift": {k: round((self.cand[k] - self.prod[k]) / n, 4) for k in labels},
            "mean_anomaly_score_shift": round(self.score_shift / n, 4),
            "changes": {f"{a}->{b}": k for (a, b), k in self.changes.most_common(10)},
        }


class Comparison:
    """The one shadow comparison, per pump class and overall (``"*"``).

    Fed by the model server (pairs it scored), by ``pumpwatch models compare
    --store`` (pairs the consumer stored) and by the SageMaker data-capture
    reader (pairs read back from capture files): the same figures from any source.
    """

    def __init__(self) -> None:
        self.pairs: dict[str, Pairs] = {}

    def add(self, pclass: str, prod_condition: str, prod_score: float, cand_condition: str,
            cand_score: float) -> None:
        for key in ("*", pclass or "unspecified"):
            self.pairs.setdefault(key, Pairs()).add(prod_condition, prod_score, cand_condition,
                                                    cand_score)

    @property
    def reports(self) -> int:
        return self.pairs["*"].n if "*" in self.pairs else 0

    def to_dict(self) -> dict[str, Any]:
        return {k: p.to_dict() for k, p in sorted(self.pairs.items())}


class Rollout:
    """The running comparison of one candidate against production (one per trial)."""

    def __init__(self, *, production: str, candidate: str, trial: Candidate) -> None:
        self.production = production
        self.candidate = candidate
        self.trial = trial
        self.stats = {production: VersionStats(), candidate: VersionStats()}
        self.comparison = Comparison()  # shadow: pump class -> pairs ("*": overall)
        self.classes: dict[str, dict[str, VersionStats]] = {}
        self.shadow_skipped = 0  # shadow batches dropped because the shadow queue was full
        self.fallbacks = 0  # canary reports production scored because the candidate failed

    @property
    def mode(self) -> str:
        return self.trial.mode

    def routes(self, reports: Sequence[Report]) -> list[bool]:
        """Canary: which reports the candidate scores (all False in shadow mode)."""
        if self.trial.mode != "canary":
            return [False] * len(reports)
        pct = self.trial.percent
        return [to_candidate(r.pump, pct) for r in reports]

    def scored(self, version: str, reports: Sequence[Report], results: Sequence[Result],
               seconds: float) -> None:
        self.stats[version].scored(results, seconds)
        for rep, res in zip(reports, results, strict=True):
            per = self.classes.setdefault(pump_class(rep), {
                self.production: VersionStats(), self.candidate: VersionStats()})
            per[version].reports += 1
            per[version].labels[res.condition] += 1
            per[version].score_sum += res.anomaly_score
            if res.decided_by == "ood":
                per[version].ood += 1

    def failed(self, version: str, reports: int, seconds: float) -> None:
        self.stats[version].failed(reports, seconds)

    def compare(self, reports: Sequence[Report], prod: Sequence[Result],
                cand: Sequence[Result]) -> None:
        """Shadow: pair production's and the candidate's results for the same reports."""
        for rep, p, c in zip(reports, prod, cand, strict=True):
            self.comparison.add(pump_class(rep), p.condition, p.anomaly_score, c.condition,
                                c.anomaly_score)

    def verdict(self) -> str | None:
        """Why the candidate must be rolled back now, or None (limits not crossed yet)."""
        s = self.stats[self.candidate]
        lim = self.trial.limits
        if s.reports + s.failed_reports < lim.min_reports:
            return None
        if lim.max_error_rate is not None and s.error_rate > lim.max_error_rate:
            return (f"error rate {s.error_rate:.3f} over its limit {lim.max_error_rate:g} "
                    f"({s.errors} of {s.calls} scoring calls failed)")
        if s.reports < lim.min_reports:
            return None
        if lim.max_p95_latency_ms is not None:  # (a percentile per request only if asked)
            p95 = s.latency_ms(95)
            if p95 is not None and p95 > lim.max_p95_latency_ms:
                return (f"p95 scoring latency {p95:g} ms over its limit "
                        f"{lim.max_p95_latency_ms:g} ms")
        if lim.max_ood_share is not None and s.ood_share > lim.max_ood_share:
            return (f"drift: {s.ood_share:.3f} of its results out of distribution, over its "
                    f"limit {lim.max_ood_share:g}")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.trial.mode,
            "percent": self.trial.percent if self.trial.mode == "canary" else None,
            "production": self.production,
            "candidate": self.candidate,
            "limits": self.trial.limits.to_dict(),
            "started": self.trial.started,
            "by": self.trial.by,
            "versions": {v: s.to_dict() for v, s in self.stats.items()},
            "comparison": self.comparison.to_dict() if self.trial.mode == "shadow" else None,
            "by_pump_class": {
                k: {v: s.to_dict() for v, s in per.items()} for k, per in sorted(
                    self.classes.items())
            },
            "shadow_skipped": self.shadow_skipped,
            "fallbacks": self.fallbacks,
        }


__all__ = ["LATENCY_WINDOW", "Comparison", "Pairs", "Rollout", "VersionStats", "bucket",
           "pump_class", "to_candidate"]
