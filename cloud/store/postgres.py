"""The shared results store: PostgreSQL through asyncpg, for several consumers on several hosts.

Theory of operation
-------------------
* Same tables, columns and idempotence as :mod:`.sqlite` (results and archive
  keyed on the identity, dead letters on (digest, part), alarms upserted on
  ``id``), so every consumer of a shared subscription can write to one
  database and a report redelivered to *another* consumer still yields no
  second row: ``INSERT .. ON CONFLICT DO NOTHING`` is decided by the
  database, not by any one consumer's memory.
* ``commit`` is one transaction; every table is written with one
  ``INSERT .. SELECT FROM unnest($1::type[], ..)`` (one round trip per
  table, whatever the row count). ``synchronous_commit`` is the server's
  (default ``on``): a returned commit is durable, which is what the
  consumer's ack-after-commit rule needs.
* Alarm ``updated_ns`` must increase with every write across *all*
  consumers (the dashboard's stream uses it as a cursor): a transaction
  writing alarms takes a transaction-scoped advisory lock, reads the
  table's maximum and stamps above it, so stamps are ordered by commit.
* Epochs are unsigned 64-bit; ``BIGINT`` is signed, so they are shifted
  exactly as in the SQLite store (:func:`.sqlite.to_i64`). Floats are
  ``double precision`` (NaN and infinity are stored as such).
* The schema version lives in ``pumpwatch_schema``; migrations run under
  an advisory lock so consumers starting together migrate once.
* asyncpg's and the network's errors become :class:`StoreError` here (the
  one boundary); a pool of ``pool_size`` connections serves lookups and
  commits concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import msgspec

from .base import AlarmEvaluator, ChannelKey, SchemaError, StoreError
from .delivery import dead_letter_bytes_sql, gap_rows, gaps_sql
from .records import (
    AlarmRow,
    ArchivedReport,
    Commit,
    CommitOutcome,
    DeadLetter,
    Gap,
    Identity,
    ManifestRow,
    PruneOutcome,
    ResultRow,
    StoreCounts,
)
from .sqlite import (
    _RESULT_COLUMNS,
    ALARM_COLUMNS,
    MANIFEST_SELECT,
    MANIFESTS_DDL,
    _alarm_row,
    _json_encode,
    _manifest_row,
    _result_row,
    _window_filter,
    from_i64,
    to_i64,
)

T = TypeVar("T")

def _dollar(n: int) -> str:
    """PostgreSQL's n-th query parameter."""
    return f"${n}"


_MIGRATION_LOCK = 0x70756D70  # "pump"
_ALARM_LOCK = 0x616C726D  # "alrm"

MIGRATIONS: tuple[str, ...] = (
    # 1: results, archive, dead letters (as SQLite's migration 1)
    """
    CREATE TABLE results (
        device TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        t0_ns BIGINT NOT NULL,
        condition TEXT NOT NULL,
        probabilities TEXT NOT NULL,
        anomaly_score DOUBLE PRECISION,
        anomaly_threshold DOUBLE PRECISION,
        anomalous BOOLEAN NOT NULL,
        baseline TEXT NOT NULL,
        iso_zone TEXT NOT NULL,
        velocity_rms DOUBLE PRECISION,
        rpm DOUBLE PRECISION,
        evidence TEXT NOT NULL,
        model_version TEXT NOT NULL,
        target TEXT NOT NULL,
        published_ns BIGINT,
        received_ns BIGINT NOT NULL,
        stored_ns BIGINT NOT NULL,
        PRIMARY KEY (device, epoch, seq)
    );
    CREATE INDEX results_pump_t0 ON results (pump, t0_ns);
    CREATE INDEX results_received ON results (received_ns);
    CREATE TABLE archive (
        device TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        t0_ns BIGINT NOT NULL,
        received_ns BIGINT NOT NULL,
        report BYTEA NOT NULL,
        PRIMARY KEY (device, epoch, seq)
    );
    CREATE INDEX archive_pump_t0 ON archive (pump, t0_ns);
    CREATE INDEX archive_received ON archive (received_ns);
    CREATE TABLE dead_letters (
        id BIGSERIAL PRIMARY KEY,
        key BYTEA NOT NULL,
        part INTEGER NOT NULL,
        received_ns BIGINT NOT NULL,
        topic TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        device TEXT,
        epoch BIGINT,
        seq BIGINT,
        payload BYTEA NOT NULL,
        UNIQUE (key, part)
    );
    CREATE INDEX dead_letters_received ON dead_letters (received_ns);
    """,
    # 2: alarm episodes (the dashboard's contract), results by commit time
    """
    CREATE TABLE alarms (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT,
        kind TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('raised', 'cleared')),
        raised_ns BIGINT NOT NULL,
        cleared_ns BIGINT,
        updated_ns BIGINT NOT NULL,
        reason TEXT NOT NULL,
        evidence TEXT NOT NULL
    );
    CREATE INDEX alarms_updated ON alarms (updated_ns);
    CREATE INDEX alarms_pump ON alarms (pump, raised_ns);
    CREATE INDEX results_stored ON results (stored_ns);
    """,
    # 3: alarm state machines per channel (cloud/consumer/alarms.py), shared by consumers
    """
    CREATE TABLE alarm_state (
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_ns BIGINT NOT NULL,
        PRIMARY KEY (site, pump, channel)
    );
    """,
    # 4: result fields this code does not type, manifests by digest (as SQLite's migration 4)
    MANIFESTS_DDL,
)
SCHEMA_VERSION = len(MIGRATIONS)

_RESULT_TYPES = (
    "text", "bigint", "bigint", "text", "text", "text", "bigint", "text", "text",
    "float8", "float8", "bool", "text", "text", "float8", "float8", "text", "text", "text",
    "bigint", "bigint", "bigint", "text", "text",
)
_INSERT_RESULTS = (
    f"INSERT INTO results ({_RESULT_COLUMNS}) SELECT * FROM unnest("  # noqa: S608
    + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(_RESULT_TYPES))
    + ") ON CONFLICT (device, epoch, seq) DO NOTHING"
)
_INSERT_ARCHIVE = (
    "INSERT INTO archive (device, epoch, seq, site, pump, channel, t0_ns, received_ns, report) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], "
    "$6::text[], $7::bigint[], $8::bigint[], $9::bytea[]) "
    "ON CONFLICT (device, epoch, seq) DO NOTHING"
)
_INSERT_DEAD = (
    "INSERT INTO dead_letters (key, part, received_ns, topic, kind, reason, device, epoch, seq, "
    "payload) SELECT * FROM unnest($1::bytea[], $2::int[], $3::bigint[], $4::text[], "
    "$5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bytea[]) "
    "ON CONFLICT (key, part) DO NOTHING"
)
_INSERT_MANIFESTS = (
    "INSERT INTO manifests (digest, model_version, manifest, stored_ns) SELECT * FROM "
    "unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ON CONFLICT (digest) DO NOTHING"
)
_UPSERT_ALARMS = (
    f"INSERT INTO alarms ({ALARM_COLUMNS}) SELECT * FROM unnest($1::text[], $2::text[], "  # noqa: S608
    "$3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], "
    "$10::text[], $11::text[]) ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
    "cleared_ns = excluded.cleared_ns, updated_ns = excluded.updated_ns, "
    "reason = excluded.reason, evidence = excluded.evidence"
)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    cols: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for i, v in enumerate(row):
            cols[i].append(v)
    return cols


def _count(status: str) -> int:
    """Rows affected from a command tag like ``INSERT 0 12``."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


class PostgresStore:
    """:class:`~cloud.store.base.Store` over PostgreSQL (see module docstring).

    ``url``: ``postgresql://user[:password]@host[:port]/database`` (libpq style;
    ``PGPASSWORD`` etc. apply).
    """

    def __init__(
        self, url: str, *, pool_size: int = 4, connect_timeout_s: float = 10.0, **_: Any
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = self._pool
        if pool is None:
            raise StoreError(f"store {self.url} is not open")
        try:
            async with pool.acquire() as conn:
                return await fn(conn)
        except StoreError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # The one boundary where asyncpg's errors become ours.
            raise StoreError(f"postgresql error on {self._safe_url}: "
                             f"{type(exc).__name__}: {exc}") from exc

    @property
    def _safe_url(self) -> str:
        # Never log a password from the URL.
        head, _, tail = self.url.rpartition("@")
        if not head:
            return self.url
        scheme, _, userinfo = head.partition("://")
        return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self._pool_size,
                timeout=self._connect_timeout_s, command_timeout=60,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError,
                ValueError) as exc:
            raise StoreError(f"cannot open postgresql store {self._safe_url}: "
                             f"{type(exc).__name__}: {exc}") from exc
        try:
            await self._run(self._migrate)
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS pumpwatch_schema (version INTEGER)")
            version = await conn.fetchval("SELECT max(version) FROM pumpwatch_schema") or 0
            if version > SCHEMA_VERSION:
                raise SchemaError(
                    f"{self._safe_url} has schema version {version}, newer than this code's "
                    f"{SCHEMA_VERSION}: upgrade pumpwatch"
                )
            for v in range(version, SCHEMA_VERSION):
                await conn.execute(MIGRATIONS[v])
                await conn.execute("INSERT INTO pumpwatch_schema (version) VALUES ($1)", v + 1)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    # -- writes -------------------------------------------------------------------------------

    async def commit(
        self, commit: Commit, *, alarms: AlarmEvaluator | None = None
    ) -> CommitOutcome:
        now = time.time_ns()
        results = _columns([
            (
                r.device, to_i64(r.epoch), r.seq, r.site, r.pump, r.channel, r.t0_ns,
                r.condition, _json_encode(r.probabilities).decode(), r.anomaly_score,
                r.anomaly_threshold, r.anomalous, r.baseline, r.iso_zone, r.velocity_rms,
                r.rpm, _json_encode(r.evidence).decode(), r.model_version, r.target,
                r.published_ns, r.received_ns, now, _json_encode(r.extra).decode(),
                r.manifest_digest,
            )
            for r in commit.results
        ], 24)
        manifests = _columns(
            [(m.digest, m.model_version, m.manifest, now) for m in commit.manifests], 4
        )
        archive = _columns([
            (a.device, to_i64(a.epoch), a.seq, a.site, a.pump, a.channel, a.t0_ns,
             a.received_ns, a.report)
            for a in commit.archive
        ], 9)
        dead = _columns([
            (d.key, d.part, d.received_ns, d.topic, d.kind, d.reason, d.device,
             None if d.epoch is None else to_i64(d.epoch), d.seq, d.payload)
            for d in commit.dead_letters
        ], 10)

        async def run(conn: asyncpg.Connection) -> CommitOutcome:
            n_results = n_archive = n_dead = 0
            stamped: list[AlarmRow] = []
            fresh: list[ResultRow] = []
            async with conn.transaction():
                if commit.results and alarms is not None:
                    got = await conn.fetch(_INSERT_RESULTS + " RETURNING device, epoch, seq",
                                           *results)
                    n_results = len(got)
                    inserted = {(d, from_i64(e), s) for d, e, s in got}
                    fresh = [r for r in commit.results if r.identity in inserted]
                elif commit.results:
                    n_results = _count(await conn.execute(_INSERT_RESULTS, *results))
                if commit.archive:
                    n_archive = _count(await conn.execute(_INSERT_ARCHIVE, *archive))
                if commit.dead_letters:
                    n_dead = _count(await conn.execute(_INSERT_DEAD, *dead))
                if commit.manifests:
                    await conn.execute(_INSERT_MANIFESTS, *manifests)
                written = list(commit.alarms)
                if alarms is not None and fresh:
                    written += await _evaluate_alarms(conn, alarms, fresh, now)
                if written:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _ALARM_LOCK)
                    top = await conn.fetchval("SELECT coalesce(max(updated_ns), 0) FROM alarms")
                    base = max(now, int(top) + 1)
                    stamped = [msgspec.structs.replace(a, updated_ns=base + i)
                               for i, a in enumerate(written)]
                    # One upsert may touch a row once: the last write per id wins (an
                    # episode raised and cleared within one commit is stored cleared).
                    last = {a.id: a for a in stamped}
                    await conn.execute(_UPSERT_ALARMS, *_columns([
                        (a.id, a.site, a.pump, a.channel, a.kind, a.state, a.raised_ns,
                         a.cleared_ns, a.updated_ns, a.reason, _json_encode(a.evidence).decode())
                        for a in last.values()
                    ], 11))
            return CommitOutcome(results_inserted=n_results, archived=n_archive,
                                 dead_lettered=n_dead, stored_ns=now, alarms=stamped)

        return await self._run(run)

    async def prune(self, *, before_ns: int) -> PruneOutcome:
        async def run(conn: asyncpg.Connection) -> PruneOutcome:
            async with conn.transaction():
                r = _count(await conn.execute(
                    "DELETE FROM results WHERE received_ns < $1", before_ns))
                a = _count(await conn.execute(
                    "DELETE FROM archive WHERE received_ns < $1", before_ns))
                d = _count(await conn.execute(
                    "DELETE FROM dead_letters WHERE received_ns < $1", before_ns))
                await conn.execute(
                    "DELETE FROM alarms WHERE state = 'cleared' AND updated_ns < $1", before_ns)
            return PruneOutcome(results=r, archive=a, dead_letters=d)

        return await self._run(run)

    # -- reads --------------------------------------------------------------------------------

    async def known(self, identities: Sequence[Identity]) -> set[Identity]:
        if not identities:
            return set()
        devs, epochs, seqs = _columns([(d, to_i64(e), s) for d, e, s in identities], 3)

        async def run(conn: asyncpg.Connection) -> set[Identity]:
            rows = await conn.fetch(
                "SELECT r.device, r.epoch, r.seq FROM results r JOIN unnest($1::text[], "
                "$2::bigint[], $3::bigint[]) AS w(device, epoch, seq) "
                "USING (device, epoch, seq)", devs, epochs, seqs,
            )
            return {(d, from_i64(e), s) for d, e, s in rows}

        return await self._run(run)

    async def results(
        self,
        *,
        pump: str | None = None,
        device: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[ResultRow]:
        where, params = _window_filter(
            pump=pump, device=device, since=since_ns, until=until_ns, placeholder=_dollar
        )
        sql = f"SELECT {_RESULT_COLUMNS} FROM results{where} ORDER BY t0_ns, device, epoch, seq"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        async def run(conn: asyncpg.Connection) -> list[ResultRow]:
            return [_result_row(tuple(r)) for r in await conn.fetch(sql, *params)]

        return await self._run(run)

    async def archived(
        self,
        *,
        pump: str,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[ArchivedReport]:
        where, params = _window_filter(
            pump=pump, device=None, since=since_ns, until=until_ns, placeholder=_dollar
        )
        sql = (
            "SELECT device, epoch, seq, site, pump, channel, t0_ns, received_ns, report "  # noqa: S608
            f"FROM archive{where} ORDER BY t0_ns, device, epoch, seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        async def run(conn: asyncpg.Connection) -> list[ArchivedReport]:
            return [
                ArchivedReport(
                    device=d, epoch=from_i64(e), seq=s, site=si, pump=p, channel=c, t0_ns=t0,
                    received_ns=rx, report=bytes(rep),
                )
                for d, e, s, si, p, c, t0, rx, rep in await conn.fetch(sql, *params)
            ]

        return await self._run(run)

    async def dead_letters(
        self, *, since_ns: int | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        sql = (
            "SELECT id, key, part, received_ns, topic, kind, reason, device, epoch, seq, payload "
            "FROM dead_letters"
        )
        params: list[Any] = []
        if since_ns is not None:
            sql += " WHERE received_ns >= $1"
            params.append(since_ns)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        async def run(conn: asyncpg.Connection) -> list[DeadLetter]:
            return [
                DeadLetter(
                    id=i, key=bytes(k), part=part, received_ns=rx, topic=topic, kind=kind,
                    reason=reason, device=dev, epoch=None if e is None else from_i64(e), seq=s,
                    payload=bytes(payload),
                )
                for i, k, part, rx, topic, kind, reason, dev, e, s, payload in await conn.fetch(
                    sql, *params
                )
            ]

        return await self._run(run)

    async def alarms(
        self, *, state: str | None = None, since_updated_ns: int | None = None,
        limit: int | None = None,
    ) -> list[AlarmRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            params.append(state)
            clauses.append(f"state = ${len(params)}")
        if since_updated_ns is not None:
            params.append(since_updated_ns)
            clauses.append(f"updated_ns > ${len(params)}")
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {ALARM_COLUMNS} FROM alarms{where} ORDER BY updated_ns"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        async def run(conn: asyncpg.Connection) -> list[AlarmRow]:
            return [_alarm_row(tuple(r)) for r in await conn.fetch(sql, *params)]

        return await self._run(run)

    async def manifests(self) -> list[ManifestRow]:
        async def run(conn: asyncpg.Connection) -> list[ManifestRow]:
            return [_manifest_row(tuple(r)) for r in await conn.fetch(MANIFEST_SELECT)]

        return await self._run(run)

    async def gaps(
        self, *, device: str | None = None, before_ns: int, limit: int = 10_000
    ) -> list[Gap]:
        """Missing sequence ranges of committed streams (see :mod:`.delivery`)."""
        sql = gaps_sql("$1::text", "$2::bigint", "$3::bigint")

        async def run(conn: asyncpg.Connection) -> list[Gap]:
            return gap_rows(await conn.fetch(sql, device, before_ns, limit), from_i64)

        return await self._run(run)

    async def prune_dead_letters(self, *, max_bytes: int) -> int:
        """Delete the oldest dead letters beyond ``max_bytes`` stored; returns how many."""
        sql = dead_letter_bytes_sql("$1::bigint", "octet_length(payload) + octet_length(reason)")

        async def run(conn: asyncpg.Connection) -> int:
            return _count(await conn.execute(sql, max_bytes))

        return await self._run(run)

    async def counts(self) -> StoreCounts:
        async def run(conn: asyncpg.Connection) -> StoreCounts:
            row = await conn.fetchrow(
                "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM archive), "
                "(SELECT count(*) FROM dead_letters)"
            )
            assert row is not None
            return StoreCounts(results=row[0], archive=row[1], dead_letters=row[2])

        return await self._run(run)


async def _evaluate_alarms(
    conn: asyncpg.Connection, evaluate: AlarmEvaluator, rows: list[ResultRow], now: int
) -> list[AlarmRow]:
    """Lock the channels' state rows (created empty if new; always in key order, so two
    consumers never deadlock), run the state machines, write the new states."""
    keys = sorted({(r.site, r.pump, r.channel) for r in rows})
    sites, pumps, channels = _columns(keys, 3)
    await conn.execute(
        "INSERT INTO alarm_state (site, pump, channel, state, updated_ns) "
        "SELECT site, pump, channel, '', $4 FROM unnest($1::text[], $2::text[], $3::text[]) "
        "AS k(site, pump, channel) ORDER BY site, pump, channel "
        "ON CONFLICT (site, pump, channel) DO NOTHING", sites, pumps, channels, now,
    )
    got = await conn.fetch(
        "SELECT a.site, a.pump, a.channel, a.state FROM alarm_state a JOIN unnest($1::text[], "
        "$2::text[], $3::text[]) AS k(site, pump, channel) USING (site, pump, channel) "
        "ORDER BY a.site, a.pump, a.channel FOR UPDATE OF a", sites, pumps, channels,
    )
    states: dict[ChannelKey, str | None] = {(s, p, c): st or None for s, p, c, st in got}
    new_states, alarms = evaluate(rows, states)
    if new_states:
        ks = sorted(new_states)
        s_, p_, c_ = _columns(ks, 3)
        await conn.execute(
            "UPDATE alarm_state a SET state = k.state, updated_ns = $5 FROM unnest($1::text[], "
            "$2::text[], $3::text[], $4::text[]) AS k(site, pump, channel, state) "
            "WHERE a.site = k.site AND a.pump = k.pump AND a.channel = k.channel",
            s_, p_, c_, [new_states[k] for k in ks], now,
        )
    return alarms


