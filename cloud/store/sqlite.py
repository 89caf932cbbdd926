"""The embedded results store: one SQLite file in WAL mode.

Theory of operation
-------------------
* One private thread owns the one connection; every coroutine hands its work
  to that thread, so calls are serialized and the event loop never blocks on
  disk. Readers in other processes (``pumpwatch results``) see committed
  data thanks to WAL and never block the writer.
* ``commit`` is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``) holding
  results, archive rows and dead letters. With ``synchronous=FULL`` (the
  default) a returned commit survives power loss; ``NORMAL`` survives a
  process crash only, which is what the consumer's ack-after-commit rule
  needs at the very least.
* Idempotence: results and archive rows are keyed on the identity and
  inserted with ``ON CONFLICT DO NOTHING`` (first result wins); dead letters
  on (payload digest, part).
* SQLite integers are signed 64-bit; report epochs are unsigned 64-bit, so
  epochs at or above 2**63 are stored shifted down by 2**64 and shifted back
  on the way out.
* The schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS`
  are applied in order on open, each in its own transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from .base import AlarmEvaluator, ChannelKey, SchemaError, StoreError
from .delivery import dead_letter_bytes_sql, gap_rows, gaps_sql
from .records import (
    AlarmRow,
    ArchivedReport,
    Commit,
    CommitOutcome,
    DeadLetter,
    EvidenceRow,
    Gap,
    Identity,
    ManifestRow,
    PruneOutcome,
    ResultRow,
    StoreCounts,
)

T = TypeVar("T")
Synchronous = Literal["off", "normal", "full"]

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def to_i64(epoch: int) -> int:
    """Unsigned 64-bit epoch -> signed 64-bit column value."""
    return epoch - _U64 if epoch > _I64_MAX else epoch


def from_i64(value: int) -> int:
    return value + _U64 if value < 0 else value


# The alarm episodes table: the contract the dashboard reads (cloud/dashboard/alarms.py),
# also created by its reference writer, hence IF NOT EXISTS.
ALARMS_DDL = """
    CREATE TABLE IF NOT EXISTS alarms (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT,
        kind TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('raised', 'cleared')),
        raised_ns INTEGER NOT NULL,
        cleared_ns INTEGER,
        updated_ns INTEGER NOT NULL,
        reason TEXT NOT NULL,
        evidence TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS alarms_updated ON alarms (updated_ns);
    CREATE INDEX IF NOT EXISTS alarms_pump ON alarms (pump, raised_ns);
"""

# Migration 4, the same text for both stores (SQLite's INTEGER is PostgreSQL's BIGINT here).
MANIFESTS_DDL = """
    ALTER TABLE results ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE results ADD COLUMN manifest_digest TEXT;
    CREATE TABLE manifests (
        digest TEXT PRIMARY KEY,
        model_version TEXT NOT NULL,
        manifest TEXT NOT NULL,
        stored_ns BIGINT NOT NULL
    );
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: results, archive, dead letters
    """
    CREATE TABLE results (
        device TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        t0_ns INTEGER NOT NULL,
        condition TEXT NOT NULL,
        probabilities TEXT NOT NULL,
        anomaly_score REAL,  -- NULL: NaN (SQLite stores NaN as NULL)
        anomaly_threshold REAL,
        anomalous INTEGER NOT NULL,
        baseline TEXT NOT NULL,
        iso_zone TEXT NOT NULL,
        velocity_rms REAL,
        rpm REAL,
        evidence TEXT NOT NULL,
        model_version TEXT NOT NULL,
        target TEXT NOT NULL,
        published_ns INTEGER,
        received_ns INTEGER NOT NULL,
        stored_ns INTEGER NOT NULL,
        PRIMARY KEY (device, epoch, seq)
    ) WITHOUT ROWID;
    CREATE INDEX results_pump_t0 ON results (pump, t0_ns);
    CREATE INDEX results_received ON results (received_ns);
    CREATE TABLE archive (
        device TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        t0_ns INTEGER NOT NULL,
        received_ns INTEGER NOT NULL,
        report BLOB NOT NULL,
        PRIMARY KEY (device, epoch, seq)
    );
    CREATE INDEX archive_pump_t0 ON archive (pump, t0_ns);
    CREATE INDEX archive_received ON archive (received_ns);
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key BLOB NOT NULL,
        part INTEGER NOT NULL,
        received_ns INTEGER NOT NULL,
        topic TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        device TEXT,
        epoch INTEGER,
        seq INTEGER,
        payload BLOB NOT NULL,
        UNIQUE (key, part)
    );
    CREATE INDEX dead_letters_received ON dead_letters (received_ns);
    """,
    # 2: alarm episodes (the dashboard's contract, cloud/dashboard/alarms.py; IF NOT EXISTS
    # because the dashboard's reference writer may have created it), results by commit time
    ALARMS_DDL
    + """
    CREATE INDEX IF NOT EXISTS results_stored ON results (stored_ns);
    """,
    # 3: alarm state machines per channel (cloud/consumer/alarms.py), shared by consumers
    """
    CREATE TABLE alarm_state (
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        state TEXT NOT NULL,
        updated_ns INTEGER NOT NULL,
        PRIMARY KEY (site, pump, channel)
    ) WITHOUT ROWID;
    """,
    # 4: the open contract: result fields this code does not type (JSON object), the
    # bundle manifest each result came with, and the manifests by digest
    MANIFESTS_DDL,
)
SCHEMA_VERSION = len(MIGRATIONS)

_RESULT_COLUMNS = (
    "device, epoch, seq, site, pump, channel, t0_ns, condition, probabilities, "
    "anomaly_score, anomaly_threshold, anomalous, baseline, iso_zone, velocity_rms, rpm, "
    "evidence, model_version, target, published_ns, received_ns, stored_ns, extra, "
    "manifest_digest"
)
_INSERT_RESULT = (
    f"INSERT INTO results ({_RESULT_COLUMNS}) VALUES ({', '.join('?' * 24)}) "  # noqa: S608
    "ON CONFLICT (device, epoch, seq) DO NOTHING"
)
_INSERT_ARCHIVE = (
    "INSERT INTO archive (device, epoch, seq, site, pump, channel, t0_ns, received_ns, report) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, epoch, seq) DO NOTHING"
)
_INSERT_DEAD = (
    "INSERT INTO dead_letters (key, part, received_ns, topic, kind, reason, device, epoch, seq, "
    "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, part) DO NOTHING"
)

ALARM_COLUMNS = (
    "id, site, pump, channel, kind, state, raised_ns, cleared_ns, updated_ns, reason, evidence"
)
MANIFEST_SELECT = "SELECT digest, model_version, manifest, stored_ns FROM manifests " \
    "ORDER BY stored_ns, digest"
_INSERT_MANIFEST = (
    "INSERT INTO manifests (digest, model_version, manifest, stored_ns) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (digest) DO NOTHING"
)
_UPSERT_ALARM = (
    f"INSERT INTO alarms ({ALARM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, cleared_ns = excluded.cleared_ns, "
    "updated_ns = excluded.updated_ns, reason = excluded.reason, evidence = excluded.evidence"
)

_json_encode = msgspec.json.Encoder().encode
_NAN = float("nan")


class _EvidenceIn(msgspec.Struct, frozen=True):
    name: str
    value: float | None  # JSON has no NaN: msgspec writes it as null
    note: str = ""


_probs_json = msgspec.json.Decoder(dict[str, float | None]).decode
_extra_json = msgspec.json.Decoder(dict[str, Any]).decode
_evidence_json = msgspec.json.Decoder(list[_EvidenceIn]).decode


def _probs_decode(text: str) -> dict[str, float]:
    return {k: _NAN if v is None else v for k, v in _probs_json(text).items()}


def _evidence_decode(text: str) -> list[EvidenceRow]:
    return [
        EvidenceRow(e.name, _NAN if e.value is None else e.value, e.note)
        for e in _evidence_json(text)
    ]


def _real(v: float | None) -> float:
    return _NAN if v is None else v


def path_from_url(url: str) -> Path:
    """``sqlite:///rel.db``, ``sqlite:////abs.db`` or a plain path."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise StoreError(f"sqlite URL must be sqlite:///PATH, got {url=}")
        rest = rest[1:]
        if not rest:
            raise StoreError(f"sqlite URL has no path, got {url=}")
        return Path(rest)
    return Path(url)


class SQLiteStore:
    """:class:`~cloud.store.base.Store` over one SQLite file (see module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        synchronous: Synchronous = "full",
        busy_timeout_s: float = 10.0,
        readonly: bool = False,
    ) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._readonly = readonly
        # Writer: the one connection that writes (and migrates). Reader: a second
        # connection on its own thread, so lookups never wait behind a commit's fsync.
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._rexecutor: ThreadPoolExecutor | None = None
        self._rconn: sqlite3.Connection | None = None

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, read: bool = False) -> T:
        executor = self._rexecutor if read else self._executor
        if executor is None:
            raise StoreError(f"store {self.url} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._call, fn, read)

    def _call(self, fn: Callable[[sqlite3.Connection], T], read: bool) -> T:
        conn = self._rconn if read else self._conn
        if conn is None:
            raise StoreError(f"store {self.url} is not open")
        try:
            return fn(conn)
        except StoreError:
            raise
        except sqlite3.Error as exc:
            # The one boundary where sqlite's errors become ours.
            raise StoreError(f"sqlite error on {self.path}: {exc}") from exc

    async def open(self) -> None:
        if self._executor is not None:
            return
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._rexecutor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        try:
            await loop.run_in_executor(self._executor, self._open_sync)
            await loop.run_in_executor(self._rexecutor, self._open_reader_sync)
        except BaseException:
            await self.close()
            raise

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                return sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=self._busy_timeout_s,
                    isolation_level=None, check_same_thread=False,
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None,
                check_same_thread=False,
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc

    def _open_sync(self) -> None:
        conn = self._connect(self._readonly)
        self._conn = conn
        try:
            if not self._readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            self._migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prepare sqlite store {self.path}: {exc}") from exc

    def _open_reader_sync(self) -> None:
        self._rconn = self._connect(readonly=True)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, newer than this code's "
                f"{SCHEMA_VERSION}: upgrade pumpwatch"
            )
        if self._readonly:
            if version < SCHEMA_VERSION:
                raise SchemaError(f"{self.path} has schema version {version}; run the consumer")
            return
        for v in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={v + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for attr, conn_attr in (("_rexecutor", "_rconn"), ("_executor", "_conn")):
            executor = getattr(self, attr)
            setattr(self, attr, None)
            if executor is None:
                continue
            await loop.run_in_executor(executor, self._close_sync, conn_attr)
            executor.shutdown(wait=True)

    def _close_sync(self, conn_attr: str) -> None:
        conn = getattr(self, conn_attr)
        if conn is not None:
            conn.close()
            setattr(self, conn_attr, None)

    # -- writes -------------------------------------------------------------------------------

    async def commit(
        self, commit: Commit, *, alarms: AlarmEvaluator | None = None
    ) -> CommitOutcome:
        return await self._run(lambda conn: self._commit_sync(conn, commit, alarms))

    def _commit_sync(
        self, conn: sqlite3.Connection, commit: Commit, evaluate: AlarmEvaluator | None
    ) -> CommitOutcome:
        now = time.time_ns()
        conn.execute("BEGIN IMMEDIATE")
        try:
            fresh = commit.results
            if evaluate is not None and commit.results:
                # Inside the write transaction: exactly the rows this commit inserts.
                had = _existing(conn, [r.identity for r in commit.results])
                fresh = [r for r in commit.results if r.identity not in had]
            before = conn.total_changes
            conn.executemany(
                _INSERT_RESULT,
                [
                    (
                        r.device, to_i64(r.epoch), r.seq, r.site, r.pump, r.channel, r.t0_ns,
                        r.condition, _json_encode(r.probabilities), r.anomaly_score,
                        r.anomaly_threshold, int(r.anomalous), r.baseline, r.iso_zone,
                        r.velocity_rms, r.rpm, _json_encode(r.evidence), r.model_version,
                        r.target, r.published_ns, r.received_ns, now, _json_encode(r.extra),
                        r.manifest_digest,
                    )
                    for r in commit.results
                ],
            )
            n_results = conn.total_changes - before
            conn.executemany(
                _INSERT_MANIFEST,
                [(m.digest, m.model_version, m.manifest, now) for m in commit.manifests],
            )
            before = conn.total_changes
            conn.executemany(
                _INSERT_ARCHIVE,
                [
                    (
                        a.device, to_i64(a.epoch), a.seq, a.site, a.pump, a.channel, a.t0_ns,
                        a.received_ns, a.report,
                    )
                    for a in commit.archive
                ],
            )
            n_archive = conn.total_changes - before
            before = conn.total_changes
            conn.executemany(
                _INSERT_DEAD,
                [
                    (
                        d.key, d.part, d.received_ns, d.topic, d.kind, d.reason, d.device,
                        None if d.epoch is None else to_i64(d.epoch), d.seq, d.payload,
                    )
                    for d in commit.dead_letters
                ],
            )
            n_dead = conn.total_changes - before
            written = list(commit.alarms)
            if evaluate is not None and fresh:
                written += _evaluate_alarms(conn, evaluate, fresh, now)
            alarms = _stamp_alarms(conn, written, now)
            conn.executemany(
                _UPSERT_ALARM,
                [
                    (
                        a.id, a.site, a.pump, a.channel, a.kind, a.state, a.raised_ns,
                        a.cleared_ns, a.updated_ns, a.reason, _json_encode(a.evidence),
                    )
                    for a in alarms
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return CommitOutcome(
            results_inserted=n_results, archived=n_archive, dead_lettered=n_dead, stored_ns=now,
            alarms=alarms,
        )

    async def prune(self, *, before_ns: int) -> PruneOutcome:
        def run(conn: sqlite3.Connection) -> PruneOutcome:
            conn.execute("BEGIN IMMEDIATE")
            try:
                r = conn.execute("DELETE FROM results WHERE received_ns < ?", (before_ns,)).rowcount
                a = conn.execute("DELETE FROM archive WHERE received_ns < ?", (before_ns,)).rowcount
                d = conn.execute(
                    "DELETE FROM dead_letters WHERE received_ns < ?", (before_ns,)
                ).rowcount
                conn.execute(
                    "DELETE FROM alarms WHERE state = 'cleared' AND updated_ns < ?", (before_ns,)
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return PruneOutcome(results=r, archive=a, dead_letters=d)

        return await self._run(run)

    # -- reads --------------------------------------------------------------------------------

    async def known(self, identities: Sequence[Identity]) -> set[Identity]:
        if not identities:
            return set()
        wanted = list(identities)

        def run(conn: sqlite3.Connection) -> set[Identity]:
            return _existing(conn, wanted)

        return await self._run(run, read=True)

    async def results(
        self,
        *,
        pump: str | None = None,
        device: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[ResultRow]:
        where, params = _window_filter(pump=pump, device=device, since=since_ns, until=until_ns)
        sql = f"SELECT {_RESULT_COLUMNS} FROM results{where} ORDER BY t0_ns, device, epoch, seq"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def run(conn: sqlite3.Connection) -> list[ResultRow]:
            return [_result_row(row) for row in conn.execute(sql, params)]

        return await self._run(run, read=True)

    async def archived(
        self,
        *,
        pump: str,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
    ) -> list[ArchivedReport]:
        where, params = _window_filter(pump=pump, device=None, since=since_ns, until=until_ns)
        sql = (
            "SELECT device, epoch, seq, site, pump, channel, t0_ns, received_ns, report "  # noqa: S608
            f"FROM archive{where} ORDER BY t0_ns, device, epoch, seq"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def run(conn: sqlite3.Connection) -> list[ArchivedReport]:
            return [
                ArchivedReport(
                    device=d, epoch=from_i64(e), seq=s, site=si, pump=p, channel=c, t0_ns=t0,
                    received_ns=rx, report=bytes(rep),
                )
                for d, e, s, si, p, c, t0, rx, rep in conn.execute(sql, params)
            ]

        return await self._run(run, read=True)

    async def dead_letters(
        self, *, since_ns: int | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        sql = (
            "SELECT id, key, part, received_ns, topic, kind, reason, device, epoch, seq, payload "
            "FROM dead_letters"
        )
        params: list[Any] = []
        if since_ns is not None:
            sql += " WHERE received_ns >= ?"
            params.append(since_ns)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def run(conn: sqlite3.Connection) -> list[DeadLetter]:
            return [
                DeadLetter(
                    id=i, key=bytes(k), part=part, received_ns=rx, topic=topic, kind=kind,
                    reason=reason, device=dev, epoch=None if e is None else from_i64(e), seq=s,
                    payload=bytes(payload),
                )
                for i, k, part, rx, topic, kind, reason, dev, e, s, payload in conn.execute(
                    sql, params
                )
            ]

        return await self._run(run, read=True)

    async def alarms(
        self, *, state: str | None = None, since_updated_ns: int | None = None,
        limit: int | None = None,
    ) -> list[AlarmRow]:
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if since_updated_ns is not None:
            clauses.append("updated_ns > ?")
            params.append(since_updated_ns)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        sql = f"SELECT {ALARM_COLUMNS} FROM alarms{where} ORDER BY updated_ns"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def run(conn: sqlite3.Connection) -> list[AlarmRow]:
            return [_alarm_row(row) for row in conn.execute(sql, params)]

        return await self._run(run, read=True)

    async def manifests(self) -> list[ManifestRow]:
        def run(conn: sqlite3.Connection) -> list[ManifestRow]:
            return [_manifest_row(row) for row in conn.execute(MANIFEST_SELECT)]

        return await self._run(run, read=True)

    async def gaps(
        self, *, device: str | None = None, before_ns: int, limit: int = 10_000
    ) -> list[Gap]:
        """Missing sequence ranges of committed streams (see :mod:`.delivery`)."""
        sql = gaps_sql("?1", "?2", "?3")

        def run(conn: sqlite3.Connection) -> list[Gap]:
            return gap_rows(conn.execute(sql, (device, before_ns, limit)), from_i64)

        return await self._run(run, read=True)

    async def prune_dead_letters(self, *, max_bytes: int) -> int:
        """Delete the oldest dead letters beyond ``max_bytes`` stored; returns how many."""
        sql = dead_letter_bytes_sql("?", "length(payload) + length(CAST(reason AS BLOB))")

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute(sql, (max_bytes,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return n

        return await self._run(run)

    async def counts(self) -> StoreCounts:
        def run(conn: sqlite3.Connection) -> StoreCounts:
            (r,) = conn.execute("SELECT count(*) FROM results").fetchone()
            (a,) = conn.execute("SELECT count(*) FROM archive").fetchone()
            (d,) = conn.execute("SELECT count(*) FROM dead_letters").fetchone()
            return StoreCounts(results=r, archive=a, dead_letters=d)

        return await self._run(run, read=True)


def _window_filter(
    *,
    pump: str | None,
    device: str | None,
    since: int | None,
    until: int | None,
    placeholder: Callable[[int], str] = lambda _n: "?",
) -> tuple[str, list[Any]]:
    """``WHERE`` clause and parameters for a pump/device/window-time query.

    ``placeholder(n)`` renders the n-th parameter (1-based): ``?`` for SQLite,
    ``$n`` for PostgreSQL, which shares this function.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("pump", "=", pump),
        ("device", "=", device),
        ("t0_ns", ">=", since),
        ("t0_ns", "<", until),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"{column} {op} {placeholder(len(params))}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _result_row(row: tuple[Any, ...]) -> ResultRow:
    (
        device, epoch, seq, site, pump, channel, t0_ns, condition, probabilities,
        anomaly_score, anomaly_threshold, anomalous, baseline, iso_zone, velocity_rms, rpm,
        evidence, model_version, target, published_ns, received_ns, stored_ns, extra,
        manifest_digest,
    ) = row
    return ResultRow(
        device=device, epoch=from_i64(epoch), seq=seq, site=site, pump=pump, channel=channel,
        t0_ns=t0_ns, condition=condition, probabilities=_probs_decode(probabilities),
        anomaly_score=_real(anomaly_score), anomaly_threshold=_real(anomaly_threshold),
        anomalous=bool(anomalous), baseline=baseline, iso_zone=iso_zone,
        velocity_rms=_real(velocity_rms), rpm=rpm, evidence=_evidence_decode(evidence),
        model_version=model_version, target=target, published_ns=published_ns,
        received_ns=received_ns, stored_ns=stored_ns, extra=_extra_json(extra),
        manifest_digest=manifest_digest,
    )


def _manifest_row(row: tuple[Any, ...]) -> ManifestRow:
    digest, model_version, manifest, stored_ns = row
    return ManifestRow(digest=digest, model_version=model_version, manifest=manifest,
                       stored_ns=stored_ns)


def _existing(conn: sqlite3.Connection, identities: Sequence[Identity]) -> set[Identity]:
    """Which of ``identities`` have a result: row-value IN lists, chunked below SQLite's
    variable limit."""
    found: set[Identity] = set()
    for i in range(0, len(identities), 300):
        chunk = identities[i : i + 300]
        params: list[Any] = []
        for dev, epoch, seq in chunk:
            params += (dev, to_i64(epoch), seq)
        marks = ", ".join(["(?, ?, ?)"] * len(chunk))
        rows = conn.execute(
            f"SELECT device, epoch, seq FROM results "  # noqa: S608 -- placeholders only
            f"WHERE (device, epoch, seq) IN (VALUES {marks})",
            params,
        )
        found.update((d, from_i64(e), s) for d, e, s in rows)
    return found


def _evaluate_alarms(
    conn: sqlite3.Connection, evaluate: AlarmEvaluator, rows: list[ResultRow], now: int
) -> list[AlarmRow]:
    keys = sorted({(r.site, r.pump, r.channel) for r in rows})
    states: dict[ChannelKey, str | None] = dict.fromkeys(keys)
    for i in range(0, len(keys), 300):
        chunk = keys[i : i + 300]
        marks = ", ".join(["(?, ?, ?)"] * len(chunk))
        for site, pump, channel, state in conn.execute(
            f"SELECT site, pump, channel, state FROM alarm_state "  # noqa: S608
            f"WHERE (site, pump, channel) IN (VALUES {marks})",
            [v for k in chunk for v in k],
        ):
            states[(site, pump, channel)] = state
    new_states, alarms = evaluate(rows, states)
    conn.executemany(
        "INSERT INTO alarm_state (site, pump, channel, state, updated_ns) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (site, pump, channel) DO UPDATE SET state = excluded.state, "
        "updated_ns = excluded.updated_ns",
        [(*k, v, now) for k, v in sorted(new_states.items())],
    )
    return alarms


def _stamp_alarms(conn: sqlite3.Connection, alarms: list[AlarmRow], now: int) -> list[AlarmRow]:
    """Give every alarm write its own ``updated_ns``, strictly above the table's maximum."""
    if not alarms:
        return []
    (top,) = conn.execute("SELECT coalesce(max(updated_ns), 0) FROM alarms").fetchone()
    base = max(now, top + 1)
    return [msgspec.structs.replace(a, updated_ns=base + i) for i, a in enumerate(alarms)]


def _alarm_row(row: tuple[Any, ...]) -> AlarmRow:
    aid, site, pump, channel, kind, state, raised, cleared, updated, reason, evidence = row
    return AlarmRow(
        id=aid, site=site, pump=pump, channel=channel, kind=kind,
        state="cleared" if state == "cleared" else "raised", raised_ns=raised,
        cleared_ns=cleared, updated_ns=updated, reason=reason,
        evidence=_evidence_decode(evidence),
    )
