"""Results store: one interface (:class:`Store`), SQLite (embedded) and PostgreSQL (shared).

Both implement the same writes and reads from one statement catalogue
(``_sql.py``, rendered per database by ``_dialect.py``) and one store logic
(``_engine.py``); the dashboard, the API, ``pumpwatch results`` and the
consumer use only the names exported here.

:func:`make_store` picks the implementation from the URL scheme:
``sqlite:///PATH`` (or a bare path) -> :class:`SQLiteStore`;
``postgresql://user@host:port/db`` (or ``postgres://``) -> :class:`PostgresStore`
(imported on first use, so SQLite-only installs need no PostgreSQL driver).
"""

from __future__ import annotations

from typing import Any

from .base import AlarmEvaluator, ChannelKey, HistogramHook, SchemaError, Store, StoreError
from .lifecycle import ACTIONS, AlarmChange, LifecycleError
from .records import (
    DEAD_LETTER_KINDS,
    NO_FAULT_FOUND,
    AlarmEvent,
    AlarmOrder,
    AlarmRow,
    AlarmState,
    AlarmStatus,
    ArchivedReport,
    Commit,
    CommitOutcome,
    DeadLetter,
    DeadLetterKind,
    EvidenceRow,
    Gap,
    HistCell,
    Identity,
    Lifecycle,
    ManifestRow,
    MonitorPruneOutcome,
    MonitorRun,
    PruneOutcome,
    ResultRow,
    Series,
    SeriesChannel,
    ShadowPair,
    ShadowRow,
    StoreCounts,
    UsageCell,
    merge_extra,
)
from .sqlite import SQLiteStore


def make_store(url: str, **options: Any) -> Store:
    """A store for ``url`` (not yet opened). Options go to the implementation."""
    scheme = url.split("://", 1)[0] if "://" in url else "sqlite"
    if scheme == "sqlite":
        return SQLiteStore(url, **options)
    if scheme in ("postgres", "postgresql"):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL store needs asyncpg (pip install 'pumpwatch[cloud]'): {exc}"
            ) from None
        return PostgresStore(url, **options)
    raise StoreError(f"unknown store URL scheme {scheme!r} in {url=}")


__all__ = [
    "ACTIONS",
    "DEAD_LETTER_KINDS",
    "NO_FAULT_FOUND",
    "AlarmChange",
    "AlarmEvaluator",
    "AlarmEvent",
    "AlarmOrder",
    "AlarmRow",
    "AlarmState",
    "AlarmStatus",
    "ArchivedReport",
    "ChannelKey",
    "Commit",
    "CommitOutcome",
    "DeadLetter",
    "DeadLetterKind",
    "EvidenceRow",
    "Gap",
    "HistCell",
    "HistogramHook",
    "Identity",
    "Lifecycle",
    "LifecycleError",
    "ManifestRow",
    "MonitorPruneOutcome",
    "MonitorRun",
    "PruneOutcome",
    "ResultRow",
    "SQLiteStore",
    "SchemaError",
    "Series",
    "SeriesChannel",
    "ShadowPair",
    "ShadowRow",
    "Store",
    "StoreCounts",
    "StoreError",
    "UsageCell",
    "make_store",
    "merge_extra",
]
