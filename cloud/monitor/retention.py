"""Retention of the monitoring tables: histogram and usage cells older than a set age.

The consumer's retention chore (``[monitor] retention_days``, every
``[store] prune_interval_s``) deletes the cells of time buckets that began before
the cutoff, from ``monitor_hist`` and ``monitor_usage``, except what the monitoring
runs still need: each model version's first :data:`REFERENCE_WINDOW_NS` of
histograms, its default live reference window (:func:`cloud.monitor.run.monitor`:
"the reference chosen at deployment"), is kept however old, so pruning never moves a
deployed version's reference. A reference window given by hand
(``pumpwatch monitor run --reference-since/--reference-until``) is not known to the
store: keep ``retention_days`` longer than its age. Usage has no reference; the
dashboard and ``monitor status`` read its last 24 h.
"""

from __future__ import annotations

import time

from ..store.base import Store
from ..store.records import MonitorPruneOutcome

REFERENCE_WINDOW_NS = 86_400 * 1_000_000_000  # a version's first day: its live reference
MIN_RETENTION_DAYS = 2.0  # a day of live window, the current partial day, the reference


async def prune_monitoring(
    store: Store, *, retention_days: float, now_ns: int | None = None
) -> MonitorPruneOutcome:
    """Delete monitoring cells of buckets older than ``retention_days`` (see the module
    docstring); what was deleted."""
    if not retention_days >= MIN_RETENTION_DAYS:
        raise ValueError(f"retention_days must be >= {MIN_RETENTION_DAYS}, got {retention_days=}")
    now = time.time_ns() if now_ns is None else now_ns
    return await store.prune_monitoring(
        before_ns=now - int(retention_days * 86_400e9), reference_ns=REFERENCE_WINDOW_NS
    )


__all__ = ["MIN_RETENTION_DAYS", "REFERENCE_WINDOW_NS", "prune_monitoring"]
