"""The one interface every results store implements, and its errors.

The consumer, the CLI and the benchmarks talk to a :class:`Store` only. An
implementation must make every write idempotent on the report identity (a
redelivered report never yields a second row) and every :meth:`Store.commit`
atomic: the consumer acknowledges a message upstream only after the commit
holding its reports returns, so "returned" must mean "durable".

All methods are coroutines so that a network database (PostgreSQL) fits the
same shape as the embedded SQLite store, which runs its blocking calls on one
private thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from .lifecycle import AlarmChange
from .records import (
    AlarmEvent,
    AlarmOrder,
    AlarmRow,
    ArchivedReport,
    Commit,
    CommitOutcome,
    DeadLetter,
    Gap,
    HistCell,
    Identity,
    ManifestRow,
    MonitorPruneOutcome,
    MonitorRun,
    PruneOutcome,
    ResultRow,
    Series,
    ShadowPair,
    StoreCounts,
    UsageCell,
)

ChannelKey = tuple[str, str, str]  # (site, pump, channel)


class AlarmEvaluator(Protocol):
    """Alarm state machines run inside a commit (``cloud.consumer.alarms.AlarmTracker.evaluate``).

    Called with the result rows the transaction newly inserted and the saved
    state (JSON, or None) of every channel among them; returns the new states
    and the alarm rows to upsert. The store holds the state rows locked for the
    call, so concurrent consumers evaluate one channel one commit at a time.
    """

    def __call__(
        self, rows: Sequence[ResultRow], states: Mapping[ChannelKey, str | None]
    ) -> tuple[dict[ChannelKey, str], list[AlarmRow]]: ...


class HistogramHook(Protocol):
    """Monitoring histograms added inside a commit (``cloud.monitor.Histograms.cells``).

    Called in every commit with the result rows the transaction newly inserted, each once
    and in the commit's order (so a redelivered report is never counted twice, whichever
    consumer stores it; none in a commit without new results, which may still write held
    counts); returns the cells to add.
    """

    def __call__(self, rows: Sequence[ResultRow]) -> Sequence[HistCell]: ...


class StoreError(Exception):
    """The store (our side) failed: disk full, locked, unreachable, corrupt."""


class SchemaError(StoreError):
    """The database's schema is newer than this code, or could not be migrated."""


@runtime_checkable
class Store(Protocol):
    """Results, report archive and dead letters behind one async interface."""

    url: str

    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def known(self, identities: Sequence[Identity]) -> set[Identity]:
        """Those of ``identities`` that already have a result row."""

    async def commit(
        self, commit: Commit, *, alarms: AlarmEvaluator | None = None,
        histograms: HistogramHook | None = None,
    ) -> CommitOutcome:
        """Write results, archive rows, dead letters and alarms in one durable transaction;
        with ``alarms``, also run it over the newly inserted results (see
        :class:`AlarmEvaluator`) and write its states and alarm rows in the same one; with
        ``histograms``, add its cells for the newly inserted results in the same one; the
        commit's ``usage`` cells are added in the same one too."""

    async def histograms(
        self, *, since_ns: int, until_ns: int, model_version: str | None = None
    ) -> list[HistCell]:
        """Monitoring histogram cells of the time buckets ``since_ns <= bucket_ns <
        until_ns`` (of one model version, or all), ordered by key."""

    async def usage(
        self, *, since_ns: int, until_ns: int, model_version: str | None = None
    ) -> list[UsageCell]:
        """Model usage cells (``cloud.monitor.usage``) of the time buckets ``since_ns <=
        bucket_ns < until_ns`` (of one model version, or all), ordered by key."""

    async def histogram_start(self, model_version: str) -> int | None:
        """The first time bucket with histograms of ``model_version``; None if none."""

    async def record_monitor_run(self, run: MonitorRun) -> None:
        """Keep ``run`` as its model version's latest (an older check never replaces it)."""

    async def monitor_runs(self) -> list[MonitorRun]:
        """Each model version's latest monitoring run, by model version."""

    async def results(
        self,
        *,
        pump: str | None = None,
        device: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[ResultRow]:
        """Result rows by window time (``since_ns <= t0_ns < until_ns``), oldest first
        (``newest_first``: newest first, so ``limit`` keeps the latest rows)."""

    async def archived(
        self,
        *,
        pump: str,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[ArchivedReport]:
        """Archived reports of one pump by window time, oldest first."""

    async def dead_letters(
        self, *, since_ns: int | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Dead letters by arrival time, oldest first."""

    async def alarms(
        self,
        *,
        pump: str | None = None,
        state: str | None = None,
        since_updated_ns: int | None = None,
        upto_updated_ns: int | None = None,
        limit: int | None = None,
        order: AlarmOrder = "updated",
        kind: str | None = None,
        parent: str | None = None,
        alarm_id: str | None = None,
        closed_since_ns: int | None = None,
        closed_until_ns: int | None = None,
    ) -> list[AlarmRow]:
        """Alarms (episodes and asset alarms; ``kind`` ("episode": every kind but
        "asset"), ``parent`` and ``alarm_id`` select):
        ``since_updated_ns < updated_ns <= upto_updated_ns``, ``closed_since_ns <=
        cleared_ns < closed_until_ns``; ``order``
        "updated" (by last write, oldest first: the live stream's) or "raised_desc"
        (newest raised first: the alarm list's)."""

    async def change_alarm(self, alarm_id: str, change: AlarmChange) -> AlarmRow:
        """Apply an operator's change to an asset alarm (see :mod:`.lifecycle`); the
        alarm after it. KeyError: no such asset alarm; LifecycleError: refused."""

    async def alarm_events(self, alarm_id: str) -> list[AlarmEvent]:
        """An asset alarm's lifecycle changes, oldest first."""

    async def active_alarms(self) -> dict[str, int]:
        """Pump -> number of its alarm episodes in state "raised"."""

    async def shadow_pairs(
        self, *, shadow_version: str | None = None, version_prefix: str | None = None,
        since_ns: int | None = None, limit: int | None = None,
    ) -> list[ShadowPair]:
        """Stored shadow results beside production's stored result for the same report."""

    async def manifests(self) -> list[ManifestRow]:
        """Every stored bundle manifest, oldest first."""

    # -- the read interface of the dashboard, the API and the CLI ------------------------------
    # Every read is served by an index (see docs/dashboard.md); issue 17 adds gaps per
    # (device, epoch) and monitoring histograms here, beside these.

    async def latest(self, *, pump: str | None = None) -> list[ResultRow]:
        """Each channel's newest result by window time (of ``pump``, or of every pump),
        ordered by pump and channel: the fleet view, one row per channel."""

    async def last_t0(self, pump: str) -> int | None:
        """The newest window time of ``pump``'s results; None if it has none."""

    async def series(
        self,
        pump: str,
        *,
        since_ns: int,
        until_ns: int,
        channel: str | None = None,
        max_points: int = 600,
    ) -> Series:
        """``pump``'s trend, downsampled in the database into at most ``max_points`` time
        buckets per channel (raw rows when the range holds at most that many)."""

    async def latest_archived(
        self, pump: str, channel: str | None = None
    ) -> ArchivedReport | None:
        """The newest archived report of ``pump`` (and ``channel``)."""

    async def recent_archived(
        self, pump: str, channel: str | None = None, *, limit: int
    ) -> list[ArchivedReport]:
        """The ``limit`` newest archived reports of ``pump`` (and ``channel``) by window
        time, newest first: the dashboard's waterfall (an index range on ``archive_pump_t0``)."""

    async def results_stored_after(
        self, after_ns: int, *, upto_ns: int | None = None, limit: int = 5000
    ) -> list[ResultRow]:
        """Results with ``after_ns < stored_ns [<= upto_ns]`` in commit order (the live
        stream's cursor reads)."""

    async def watermarks(self) -> tuple[int, int]:
        """(newest ``stored_ns`` of results, newest ``updated_ns`` of alarms); 0 if none."""

    async def prune(self, *, before_ns: int) -> PruneOutcome:
        """Delete every row *received* before ``before_ns`` (by arrival, not window time,
        so replays of old recordings are kept as long as live data)."""

    async def counts(self) -> StoreCounts:
        """Row counts (cheap enough for health output and tests)."""

    async def gaps(
        self, *, device: str | None = None, before_ns: int, limit: int = 10_000
    ) -> list[Gap]:
        """Missing sequence ranges of committed streams whose next committed report was
        received before ``before_ns`` (see :mod:`cloud.store.delivery`)."""

    async def prune_dead_letters(self, *, max_bytes: int) -> int:
        """Delete the oldest dead letters beyond ``max_bytes`` stored; returns how many."""

    async def prune_monitoring(self, *, before_ns: int, reference_ns: int) -> MonitorPruneOutcome:
        """Delete monitoring histogram cells of buckets before ``before_ns`` except each
        model version's first ``reference_ns`` (its default live reference window), and
        usage cells of buckets before ``before_ns`` (``cloud.monitor.retention``)."""

    async def alarm_outbox(self, *, limit: int) -> list[tuple[AlarmRow, AlarmEvent]]:
        """Alarm changes not yet published, oldest first (``cloud.dashboard.outbox``): the
        asset alarm as it was after each change, and the change."""

    async def alarm_outbox_depth(self) -> tuple[int, int | None]:
        """(pending alarm changes, the oldest one's ``at_ns`` or None)."""

    async def mark_alarm_events(
        self, keys: Sequence[tuple[str, int]], *, outcome: str, at_ns: int
    ) -> int:
        """Take the changes ``(alarm_id, at_ns)`` out of the outbox with ``outcome``."""

    async def drop_alarm_outbox(
        self, *, older_than_ns: int, max_pending: int, at_ns: int
    ) -> tuple[int, int]:
        """Drop pending changes older than ``older_than_ns`` and beyond the newest
        ``max_pending``; (dropped for age, dropped over the bound)."""
