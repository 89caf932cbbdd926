"""The store logic both databases share: commits, pruning and every read, written once.

:class:`SQLStore` implements :class:`~.base.Store` over two primitives a
backend provides: a write transaction and a read session, each an
:class:`Session` (``execute`` -> rows affected, ``fetch`` -> rows). The
statements come from :mod:`._sql`, rendered by the backend's
:class:`~._dialect.Dialect`; a backend adds connection handling, migrations
bookkeeping and its locks, and no SQL of the schema's tables.

Theory of operation
-------------------
* ``commit`` is one transaction: results (``RETURNING`` the identities it
  inserted, so exactly the new rows go on), manifests, archive rows, dead
  letters, each channel's newest result (``latest``), the alarm state
  machines over the new rows, then the alarm writes, and last the usage counters
  (``Commit.usage``, added to the stored cells). ``stored_ns`` is taken
  inside the transaction, just before the first insert, so a commit's stamp
  trails its visibility by the transaction's own duration only (the live
  stream's look-back covers that; see :mod:`cloud.dashboard.stream`).
* Alarm ``updated_ns`` is strictly increasing across every writer: the
  backend's :meth:`SQLStore._lock_alarms` serializes alarm writers, and the
  stamp is above the table's maximum.
* Locks are always taken in key order (channels sorted), so two consumers
  writing the same channels never deadlock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from dsp.results import UNNAMED

from . import _sql as q
from . import delivery, lifecycle
from ._dialect import Dialect
from .base import AlarmEvaluator, ChannelKey, HistogramHook
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
    Lifecycle,
    ManifestRow,
    MonitorPruneOutcome,
    MonitorRun,
    PruneOutcome,
    ResultRow,
    Series,
    SeriesChannel,
    ShadowPair,
    StoreCounts,
    UsageCell,
)

ZONES_BY_RANK = "?ABCD"


class Session(Protocol):
    """One connection's statements (in a transaction, for writes)."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; rows it changed."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        """Run one query; its rows."""

    async def execute_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        """Run statements in order (SQLite: in one hop to its thread); rows they changed."""

    def defer(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement last in this write transaction, just before its COMMIT (SQLite:
        in the same hop). Its failure fails the transaction, as any statement's."""


def _fresh(results: Sequence[ResultRow], new: set[Identity]) -> list[ResultRow]:
    """The rows of ``results`` this transaction inserted (identities ``new``, consumed),
    each once (a report twice in one commit was inserted once)."""
    if len(new) == len(results):  # every row new, so distinct
        return list(results)
    fresh: list[ResultRow] = []
    for r in results:
        ident = r.identity
        if ident in new:
            new.remove(ident)
            fresh.append(r)
    return fresh


class SQLStore:
    """The shared half of both stores (see the module docstring)."""

    url: str
    dialect: Dialect

    # -- what a backend provides --------------------------------------------------------------

    def _write(self) -> contextlib.AbstractAsyncContextManager[Session]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractAsyncContextManager[Session]:
        raise NotImplementedError

    async def _lock_alarms(self, tx: Session) -> None:
        """Serialize alarm writers until the transaction ends (no-op with one writer)."""

    # -- bulk helpers -------------------------------------------------------------------------

    async def _bulk(
        self, tx: Session, build: Any, rows: Sequence[Sequence[Any]], width: int
    ) -> int:
        return await tx.execute_many([(build(self.dialect, count), params)
                                      for count, params in self.dialect.row_chunks(rows, width)])

    async def _bulk_fetch(
        self, tx: Session, build: Any, rows: Sequence[Sequence[Any]], width: int
    ) -> list[Sequence[Any]]:
        out: list[Sequence[Any]] = []
        for count, params in self.dialect.row_chunks(rows, width):
            out += await tx.fetch(build(self.dialect, count), params)
        return out

    # -- writes -------------------------------------------------------------------------------

    async def commit(
        self, commit: Commit, *, alarms: AlarmEvaluator | None = None,
        histograms: HistogramHook | None = None,
    ) -> CommitOutcome:
        d = self.dialect
        async with self._write() as tx:
            now = time.time_ns()
            inserted = await self._bulk_fetch(
                tx, q.insert_results, [q.result_params(d, r, now) for r in commit.results],
                len(q.RESULT_COLUMNS),
            )
            new = {(dev, q.from_i64(e), s) for dev, e, s in inserted}
            fresh = _fresh(commit.results, new)
            await self._bulk(tx, q.insert_manifests,
                             [(m.digest, m.model_version, m.manifest, now)
                              for m in commit.manifests], len(q.MANIFEST_COLUMNS))
            n_archive = await self._bulk(tx, q.insert_archive,
                                         [q.archive_params(a) for a in commit.archive],
                                         len(q.ARCHIVE_COLUMNS))
            n_dead = await self._bulk(tx, q.insert_dead,
                                      [q.dead_params(x) for x in commit.dead_letters],
                                      len(q.DEAD_COLUMNS))
            n_shadow = await self._bulk(tx, q.insert_shadow,
                                        [q.shadow_params(d, x, now) for x in commit.shadow],
                                        len(q.SHADOW_COLUMNS))
            await self._write_latest(tx, fresh)
            if histograms is not None:  # also without new rows: a flush writes what it holds
                # Sorted by key, so two consumers adding to the same cells never deadlock.
                cells = sorted(histograms(fresh))
                await self._bulk(tx, q.add_hist, cells, len(q.HIST_COLUMNS))
            written = list(commit.alarms)
            if alarms is not None and fresh:
                written += await self._evaluate_alarms(tx, alarms, fresh, now)
            stamped: list[AlarmRow] = []
            if written:
                await self._lock_alarms(tx)
                written = await self._group_assets(tx, written, fresh)
                ((top,),) = await tx.fetch(q.ALARMS_TOP)
                base = max(now, int(top) + 1)
                stamped = [msgspec.structs.replace(a, updated_ns=base + i)
                           for i, a in enumerate(written)]
                # One upsert may touch a row once: the last write per id wins (an
                # episode raised and cleared within one commit is stored cleared).
                last = {a.id: a for a in stamped}
                await self._bulk(tx, q.upsert_alarms,
                                 [q.alarm_params(a) for a in last.values()],
                                 len(q.ALARM_COLUMNS))
            if commit.usage:
                # Last: every consumer's commits add to the same few cells (a version's
                # calls and latency), so their row locks are held for the shortest time;
                # sorted by key (as the histograms), two commits never deadlock. Deferred
                # to the COMMIT's hop (SQLite): the usage costs no round trip of its own.
                for count, params in d.row_chunks(sorted(commit.usage), len(q.USAGE_COLUMNS)):
                    tx.defer(q.add_usage(d, count), params)
        return CommitOutcome(results_inserted=len(fresh), archived=n_archive,
                             dead_lettered=n_dead, stored_ns=now, alarms=stamped,
                             shadow_inserted=n_shadow)

    async def _group_assets(
        self, tx: Session, written: list[AlarmRow], fresh: list[ResultRow]
    ) -> list[AlarmRow]:
        """Episodes join their pump's asset alarm that is not closed; a raised episode on a
        pump without one opens one (with the model, manifest and condition of the pump's
        newest result in this commit). The asset row is rewritten after its episodes, so
        its ``updated_ns`` moves (the stream and the result topics carry it)."""
        # The pump's newest result naming a condition (not healthy/unknown/sensor fault),
        # else its newest: what the model said when the alarm was raised.
        newest: dict[str, ResultRow] = {}
        for r in sorted(fresh, key=lambda r: (r.condition not in UNNAMED, r.t0_ns)):
            newest[r.pump] = r
        assets: dict[str, AlarmRow | None] = {}
        out: list[AlarmRow] = []
        touched: dict[str, AlarmRow] = {}
        for a in written:
            if a.kind == "asset":
                out.append(a)
                continue
            if a.pump not in assets:
                rows = await tx.fetch(self.dialect.sql(q.OPEN_ASSET), (a.pump,))
                assets[a.pump] = None if not rows else AlarmRow(
                    id=str(rows[0][0]), site=a.site, pump=a.pump, kind="asset",
                    state="raised", raised_ns=int(rows[0][1]), reason="")
            asset = assets[a.pump]
            if asset is None and a.state == "raised":
                latest = newest.get(a.pump)
                condition = "" if latest is None else latest.condition
                asset = AlarmRow(
                    id=f"{a.pump}:asset:{a.raised_ns}", site=a.site, pump=a.pump,
                    kind="asset", state="raised", raised_ns=a.raised_ns, reason="",
                    lifecycle=Lifecycle(
                        model_version="" if latest is None else latest.model_version,
                        manifest_digest=None if latest is None else latest.manifest_digest,
                        condition=condition))
                assets[a.pump] = asset
            if asset is None:
                out.append(a)
                continue
            out.append(msgspec.structs.replace(a, parent=asset.id))
            touched[asset.id] = msgspec.structs.replace(
                asset, reason=f"{a.channel}: {a.reason}", evidence=a.evidence)
        return out + list(touched.values())

    async def _write_latest(self, tx: Session, fresh: list[ResultRow]) -> None:
        newest: dict[tuple[str, str], ResultRow] = {}
        for r in fresh:
            k = (r.pump, r.channel)
            if k not in newest or r.t0_ns > newest[k].t0_ns:
                newest[k] = r
        rows = [(p, c, r.t0_ns, r.device, q.to_i64(r.epoch), r.seq)
                for (p, c), r in sorted(newest.items())]
        await self._bulk(tx, q.upsert_latest, rows, len(q.LATEST_COLUMNS))

    async def _evaluate_alarms(
        self, tx: Session, evaluate: AlarmEvaluator, rows: list[ResultRow], now: int
    ) -> list[AlarmRow]:
        """Lock the channels' state rows (created empty if new), run the state machines,
        write the new states."""
        keys = sorted({(r.site, r.pump, r.channel) for r in rows})
        await self._bulk(tx, q.insert_states, [(*k, "", now) for k in keys],
                         len(q.STATE_COLUMNS))
        got = await self._bulk_fetch(tx, q.lock_states, keys, 3)
        states: dict[ChannelKey, str | None] = dict.fromkeys(keys)
        for site, pump, channel, state in got:
            states[(site, pump, channel)] = state or None
        new_states, alarms = evaluate(rows, states)
        await self._bulk(tx, q.upsert_states,
                         [(*k, v, now) for k, v in sorted(new_states.items())],
                         len(q.STATE_COLUMNS))
        return alarms

    async def change_alarm(self, alarm_id: str, change: AlarmChange) -> AlarmRow:
        """Apply an operator's change to an asset alarm (see :mod:`.lifecycle`): the new
        lifecycle and its event in one transaction, stamped like every alarm write (so
        the live stream and result topics carry it). :class:`KeyError` for an unknown
        asset alarm, :class:`~.lifecycle.LifecycleError` for a refused change."""
        d = self.dialect
        async with self._write() as tx:
            await self._lock_alarms(tx)
            sql = q.select(q.ALARM_COLUMNS, "alarms", " WHERE id = ? AND kind = 'asset'",
                           "id", 1)
            rows = await tx.fetch(d.sql(sql), (alarm_id,))
            if not rows:
                raise KeyError(alarm_id)
            row = q.alarm_row(rows[0])
            lc = row.lifecycle or Lifecycle()
            classes: list[str] = []
            if lc.manifest_digest:
                got = await tx.fetch(d.sql("SELECT manifest FROM manifests WHERE digest = ?"),
                                     (lc.manifest_digest,))
                if got:
                    body = msgspec.json.decode(str(got[0][0]))
                    classes = [str(c.get("name")) for c in body.get("classes", [])]
            new = lifecycle.apply(lc, change, classes)
            ((top,),) = await tx.fetch(q.ALARMS_TOP)
            stamp = max(time.time_ns(), int(top) + 1)
            closed = new.status == "closed"
            await tx.execute(d.sql(q.SET_LIFECYCLE), (
                "cleared" if closed else "raised", change.at_ns if closed else None, stamp,
                q.json_text(new), alarm_id))
            detail = {k: v for k, v in msgspec.structs.asdict(change).items()
                      if k not in ("action", "actor", "at_ns") and v is not None}
            after = msgspec.structs.replace(row, lifecycle=new, updated_ns=stamp,
                                            state="cleared" if closed else "raised",
                                            cleared_ns=change.at_ns if closed else None)
            # the alarm after the change rides with its event: the outbox publishes it
            # later as it was now, even after further changes
            await self._bulk(tx, q.insert_events, [
                (alarm_id, stamp, change.actor, change.action, q.json_text(detail),
                 q.json_text(after))], len(q.EVENT_WRITE_COLUMNS))
        return after

    # -- the alarm-change outbox (cloud/dashboard/outbox.py) ------------------------------------

    async def alarm_outbox(self, *, limit: int) -> list[tuple[AlarmRow, AlarmEvent]]:
        """Changes not yet published, oldest first: the asset alarm after each, and it."""
        async with self._read() as s:
            rows = await s.fetch(self.dialect.sql(q.OUTBOX), (limit,))
        return [(q.alarm_snapshot(str(r[5])), q.event_row(r[:5])) for r in rows]

    async def alarm_outbox_depth(self) -> tuple[int, int | None]:
        """How many changes wait for publishing, and the oldest one's time (ns)."""
        async with self._read() as s:
            ((n, oldest),) = await s.fetch(q.OUTBOX_DEPTH)
        return int(n), None if oldest is None else int(oldest)

    async def mark_alarm_events(
        self, keys: Sequence[tuple[str, int]], *, outcome: str, at_ns: int
    ) -> int:
        """Take changes (``(alarm_id, at_ns)``) out of the outbox with ``outcome``
        (``puback``, ``refused``, ``dropped:<why>``); how many were still pending."""
        if not keys:
            return 0
        sql = self.dialect.sql(q.OUTBOX_MARK)
        async with self._write() as tx:
            return sum([await tx.execute(sql, (at_ns, outcome, a, t)) for a, t in keys])

    async def drop_alarm_outbox(
        self, *, older_than_ns: int, max_pending: int, at_ns: int
    ) -> tuple[int, int]:
        """Bound the outbox: drop (mark ``dropped:age`` / ``dropped:over_bound``) the
        pending changes older than ``older_than_ns`` and those beyond the newest
        ``max_pending``; how many of each."""
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending=}")
        d = self.dialect
        async with self._write() as tx:
            old = await tx.execute(d.sql(q.OUTBOX_DROP_OLD),
                                   (at_ns, "dropped:age", older_than_ns))
            over = await tx.execute(d.sql(q.OUTBOX_DROP_OVER),
                                    (at_ns, "dropped:over_bound", max_pending - 1))
        return old, over

    async def alarm_events(self, alarm_id: str) -> list[AlarmEvent]:
        async with self._read() as s:
            return [q.event_row(r) for r in await s.fetch(self.dialect.sql(q.EVENTS),
                                                         (alarm_id,))]

    async def prune(self, *, before_ns: int) -> PruneOutcome:
        d = self.dialect
        async with self._write() as tx:
            r, a, dl, _alarms = [await tx.execute(d.sql(sql), (before_ns,)) for sql in q.PRUNE]
            await tx.execute(q.PRUNE_LATEST)
            await tx.execute(d.sql(q.PRUNE_SHADOW), (before_ns,))
        return PruneOutcome(results=r, archive=a, dead_letters=dl)

    async def prune_monitoring(self, *, before_ns: int, reference_ns: int) -> MonitorPruneOutcome:
        """Delete monitoring histogram cells of time buckets before ``before_ns``, except
        each model version's first ``reference_ns`` (its default live reference window),
        and usage cells before ``before_ns``."""
        d = self.dialect
        async with self._write() as tx:
            starts = await tx.fetch(q.HIST_VERSIONS)
            hist = 0
            for version, first in starts:
                hist += await tx.execute(d.sql(q.PRUNE_HIST), (
                    version, before_ns, int(first) + reference_ns))
            usage = await tx.execute(d.sql(q.PRUNE_USAGE), (before_ns,))
        return MonitorPruneOutcome(histograms=hist, usage=usage)

    async def prune_dead_letters(self, *, max_bytes: int) -> int:
        """Delete the oldest dead letters beyond ``max_bytes`` stored; returns how many."""
        d = self.dialect
        sql = d.sql(delivery.DEAD_LETTERS_OVER_BUDGET.format(size=d.dead_letter_bytes))
        async with self._write() as tx:
            return await tx.execute(sql, (max_bytes,))

    # -- reads: the consumer's ----------------------------------------------------------------

    async def gaps(
        self, *, device: str | None = None, before_ns: int, limit: int = 10_000
    ) -> list[Gap]:
        """Missing sequence ranges of committed streams (see :mod:`.delivery`)."""
        async with self._read() as s:
            rows = await s.fetch(self.dialect.sql(delivery.GAPS),
                                 delivery.gaps_params(device, before_ns, limit))
        return delivery.gap_rows(rows, q.from_i64)

    async def known(self, identities: Sequence[Identity]) -> set[Identity]:
        if not identities:
            return set()
        keys = [(dev, q.to_i64(e), s) for dev, e, s in identities]
        async with self._read() as s:
            rows = await self._bulk_fetch(s, q.existing, keys, 3)
        return {(dev, q.from_i64(e), sq) for dev, e, sq in rows}

    async def counts(self) -> StoreCounts:
        async with self._read() as s:
            ((r, a, d),) = await s.fetch(q.COUNTS)
        return StoreCounts(results=int(r), archive=int(a), dead_letters=int(d))

    # -- reads: results -----------------------------------------------------------------------

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
        w, params = q.where([("pump", "=", pump), ("device", "=", device),
                             ("t0_ns", ">=", since_ns), ("t0_ns", "<", until_ns)])
        order = ("t0_ns DESC, device DESC, epoch DESC, seq DESC" if newest_first
                 else "t0_ns, device, epoch, seq")
        sql = q.select(q.RESULT_COLUMNS, "results", w, order, limit)
        async with self._read() as s:
            return [q.result_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    async def results_stored_after(
        self, after_ns: int, *, upto_ns: int | None = None, limit: int = 5000
    ) -> list[ResultRow]:
        w, params = q.where([("stored_ns", ">", after_ns), ("stored_ns", "<=", upto_ns)])
        sql = q.select(q.RESULT_COLUMNS, "results", w,
                       "stored_ns, t0_ns, device, epoch, seq", limit)
        async with self._read() as s:
            return [q.result_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    async def latest(self, *, pump: str | None = None) -> list[ResultRow]:
        w, params = q.where([("l.pump", "=", pump)])
        sql = f"{q.LATEST}{w} ORDER BY l.pump, l.channel"
        async with self._read() as s:
            return [q.result_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    async def last_t0(self, pump: str) -> int | None:
        async with self._read() as s:
            ((t,),) = await s.fetch(self.dialect.sql(q.LAST_T0), (pump,))
        return None if t is None else int(t)

    async def series(
        self,
        pump: str,
        *,
        since_ns: int,
        until_ns: int,
        channel: str | None = None,
        max_points: int = 600,
    ) -> Series:
        d = self.dialect
        w, params = q.where([("pump", "=", pump), ("t0_ns", ">=", since_ns),
                             ("t0_ns", "<", until_ns), ("channel", "=", channel)])
        out: dict[str, SeriesChannel] = {}

        def get(ch: str) -> SeriesChannel:
            if ch not in out:
                out[ch] = SeriesChannel(
                    channel=ch, t_ns=[], count=[], anomaly_score=[], anomaly_score_max=[],
                    anomaly_threshold=[], anomalous=[], velocity_rms=[], velocity_rms_max=[],
                    iso_zone=[], condition=[],
                )
            return out[ch]

        async with self._read() as s:
            # Counted and bucketed on the (pump, t0_ns, ..) index alone (it covers every
            # column the buckets read): cheap even for a month of rows.
            ((total,),) = await s.fetch(d.sql(q.count("results", w)), params)
            if total <= max_points:
                bucket = 0
                for ch, t0, cond, score, thr, anom, zone, vel in await s.fetch(
                    d.sql(q.series_raw(w)), params
                ):
                    c = get(ch)
                    c.t_ns.append(t0)
                    c.count.append(1)
                    c.anomaly_score.append(q.real(score))
                    c.anomaly_score_max.append(q.real(score))
                    c.anomaly_threshold.append(q.real(thr))
                    c.anomalous.append(int(anom))
                    c.velocity_rms.append(q.real(vel))
                    c.velocity_rms_max.append(q.real(vel))
                    c.iso_zone.append(zone)
                    c.condition.append(cond)
            else:
                bucket = -(-(until_ns - since_ns) // max_points)
                for ch, t, n, score, smax, thr, anom, vel, vmax, zone in await s.fetch(
                    d.sql(q.series_buckets(w)), [*params, since_ns, bucket]
                ):
                    c = get(ch)
                    c.t_ns.append(int(t))
                    c.count.append(int(n))
                    c.anomaly_score.append(q.real(score))
                    c.anomaly_score_max.append(q.real(smax))
                    c.anomaly_threshold.append(q.real(thr))
                    c.anomalous.append(int(anom))
                    c.velocity_rms.append(q.real(vel))
                    c.velocity_rms_max.append(q.real(vmax))
                    c.iso_zone.append(ZONES_BY_RANK[int(zone)])
                    c.condition.append(None)
        return Series(pump=pump, since_ns=since_ns, until_ns=until_ns, bucket_ns=bucket,
                      rows=int(total), series=[out[ch] for ch in sorted(out)])

    # -- reads: archive, dead letters, manifests ------------------------------------------------

    async def archived(
        self,
        *,
        pump: str,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[ArchivedReport]:
        w, params = q.where([("pump", "=", pump), ("t0_ns", ">=", since_ns),
                             ("t0_ns", "<", until_ns)])
        sql = q.select(q.ARCHIVE_COLUMNS, "archive", w, "t0_ns, device, epoch, seq", limit)
        async with self._read() as s:
            return [q.archive_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    async def latest_archived(
        self, pump: str, channel: str | None = None
    ) -> ArchivedReport | None:
        rows = await self.recent_archived(pump, channel, limit=1)
        return rows[0] if rows else None

    async def recent_archived(
        self, pump: str, channel: str | None = None, *, limit: int
    ) -> list[ArchivedReport]:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit=}")
        w, params = q.where([("pump", "=", pump), ("channel", "=", channel)])
        sql = q.select(q.ARCHIVE_COLUMNS, "archive", w, "t0_ns DESC", limit)
        async with self._read() as s:
            return [q.archive_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    async def dead_letters(
        self, *, since_ns: int | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        w, params = q.where([("received_ns", ">=", since_ns)])
        sql = q.select((("id", "i64"), *q.DEAD_COLUMNS), "dead_letters", w, "id", limit)
        async with self._read() as s:
            return [q.dead_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    async def shadow_pairs(
        self, *, shadow_version: str | None = None, version_prefix: str | None = None,
        since_ns: int | None = None, limit: int | None = None,
    ) -> list[ShadowPair]:
        """Stored shadow results joined with production's stored result for the same
        report (a shadow row whose production result is not stored yet is left out),
        oldest stored first; filtered by the shadow's version, a version prefix (a
        model group's ``"group/"``) and the shadow row's commit time."""
        w, params = q.where([("s.model_version", "=", shadow_version),
                             ("s.stored_ns", ">=", since_ns)])
        n = limit if version_prefix is None else None  # the prefix is matched here, below
        sql = f"{q.SHADOW_PAIRS}{w} ORDER BY s.stored_ns, s.device, s.epoch, s.seq{q.limit(n)}"
        async with self._read() as s:
            rows = [q.shadow_pair(r) for r in await s.fetch(self.dialect.sql(sql), params)]
        if version_prefix is not None:
            rows = [r for r in rows if r.shadow_version.startswith(version_prefix)]
        return rows if limit is None else rows[:limit]

    async def manifests(self) -> list[ManifestRow]:
        async with self._read() as s:
            return [q.manifest_row(r) for r in await s.fetch(q.MANIFESTS)]

    # -- reads: alarms ------------------------------------------------------------------------

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
        w, params = q.where([("pump", "=", pump), ("state", "=", state),
                             ("kind", "<>" if kind == "episode" else "=",
                              "asset" if kind == "episode" else kind),
                             ("parent", "=", parent),
                             ("id", "=", alarm_id), ("cleared_ns", ">=", closed_since_ns),
                             ("cleared_ns", "<", closed_until_ns),
                             ("updated_ns", ">", since_updated_ns),
                             ("updated_ns", "<=", upto_updated_ns)])
        by = "updated_ns, id" if order == "updated" else "raised_ns DESC, id DESC"
        sql = q.select(q.ALARM_COLUMNS, "alarms", w, by, limit)
        async with self._read() as s:
            return [q.alarm_row(r) for r in await s.fetch(self.dialect.sql(sql), params)]

    # -- reads: monitoring ----------------------------------------------------------------------

    async def histograms(
        self, *, since_ns: int, until_ns: int, model_version: str | None = None
    ) -> list[HistCell]:
        w, params = q.where([("bucket_ns", ">=", since_ns), ("bucket_ns", "<", until_ns),
                             ("model_version", "=", model_version)])
        sql = q.select(q.HIST_COLUMNS, "monitor_hist", w, q.HIST_KEY, None)
        async with self._read() as s:
            return [(str(v), str(t), str(r), int(b), str(h), str(f), int(i), float(x))
                    for v, t, r, b, h, f, i, x in await s.fetch(self.dialect.sql(sql), params)]

    async def usage(
        self, *, since_ns: int, until_ns: int, model_version: str | None = None
    ) -> list[UsageCell]:
        w, params = q.where([("bucket_ns", ">=", since_ns), ("bucket_ns", "<", until_ns),
                             ("model_version", "=", model_version)])
        sql = q.select(q.USAGE_COLUMNS, "monitor_usage", w, q.USAGE_KEY, None)
        async with self._read() as s:
            return [(str(v), str(t), str(p), int(b), str(m), int(i), float(x))
                    for v, t, p, b, m, i, x in await s.fetch(self.dialect.sql(sql), params)]

    async def histogram_start(self, model_version: str) -> int | None:
        async with self._read() as s:
            ((t,),) = await s.fetch(self.dialect.sql(q.HIST_START), (model_version,))
        return None if t is None else int(t)

    async def record_monitor_run(self, run: MonitorRun) -> None:
        async with self._write() as tx:
            await self._bulk(tx, q.upsert_runs, [(run.model_version, run.checked_ns, run.status,
                                                  run.summary)], len(q.RUN_COLUMNS))

    async def monitor_runs(self) -> list[MonitorRun]:
        async with self._read() as s:
            return [MonitorRun(model_version=str(v), checked_ns=int(c), status=str(st),
                               summary=str(sm)) for v, c, st, sm in await s.fetch(q.MONITOR_RUNS)]

    async def active_alarms(self) -> dict[str, int]:
        async with self._read() as s:
            return {str(p): int(n) for p, n in await s.fetch(q.ACTIVE_ALARMS)}

    async def watermarks(self) -> tuple[int, int]:
        async with self._read() as s:
            ((r, a),) = await s.fetch(q.WATERMARKS)
        return int(r), int(a)

