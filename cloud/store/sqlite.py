"""The embedded results store: one SQLite file in WAL mode.

Theory of operation
-------------------
* The statements, the schema and the store logic are shared with the
  PostgreSQL store (:mod:`._sql`, :mod:`._engine`); this module holds what is
  SQLite's own: connections, threads, the write lock and ``user_version``.
* One private thread owns the writing connection and a second one a reading
  connection (so lookups never wait behind a commit's fsync); every
  coroutine hands its statements to one of them, so the event loop never
  blocks on disk. Readers in other processes (``pumpwatch results``, the
  dashboard) see committed data thanks to WAL and never block the writer.
* ``commit`` is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``), one
  commit at a time (an asyncio lock: its statements are several hops to the
  writer thread). With ``synchronous=FULL`` (the default) a returned commit
  survives power loss; ``NORMAL`` survives a process crash only, which is
  what the consumer's ack-after-commit rule needs at the very least.
* Idempotence: results and archive rows are keyed on the identity and
  inserted with ``ON CONFLICT DO NOTHING`` (first result wins); dead letters
  on (payload digest, part).
* ``readonly=True`` opens both connections ``mode=ro`` (the dashboard's):
  a missing file or an older schema is a clear :class:`StoreError`.
* The schema version lives in ``PRAGMA user_version``; the shared
  migrations are applied in order on open, each in its own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from ._dialect import SQLITE
from ._engine import Session, SQLStore
from ._sql import SCHEMA_VERSION, from_i64, migration, to_i64
from .base import SchemaError, StoreError

T = TypeVar("T")
Synchronous = Literal["off", "normal", "full"]

# The shared migrations as SQLite runs them (scripts), for tests and tools.
MIGRATIONS: tuple[str, ...] = tuple(
    ";\n".join(migration(SQLITE, v)) for v in range(SCHEMA_VERSION)
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore", "from_i64", "path_from_url", "to_i64"]


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


class _Thread:
    """One connection on its own thread: a :class:`~._engine.Session` by hops."""

    def __init__(self, name: str, path: Path) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None
        self.path = path
        self.deferred: list[tuple[str, Sequence[Any]]] = []  # run with the COMMIT

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.conn is None:
            raise StoreError(f"sqlite store {self.path} is not open")
        try:
            return fn(self.conn)
        except StoreError:
            raise
        except sqlite3.Error as exc:
            # The one boundary where sqlite's errors become ours.
            raise StoreError(f"sqlite error on {self.path}: {exc}") from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self.execute_many([(sql, params)])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return await self.call(lambda conn: conn.execute(sql, params).fetchall())

    async def execute_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        if not statements:  # nothing to run: no hop to the thread
            return 0
        return await self.call(lambda conn: _run(conn, statements))

    def defer(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.deferred.append((sql, params))


class SQLiteStore(SQLStore):
    """:class:`~cloud.store.base.Store` over one SQLite file (see module docstring)."""

    dialect = SQLITE

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
        self._writer: _Thread | None = None
        self._reader: _Thread | None = None
        self._lock = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[Session]:
        writer = self._writer
        if writer is None:
            raise StoreError(f"store {self.url} is not open")
        if self._readonly:
            raise StoreError(f"store {self.url} is open read-only")
        async with self._lock:
            await writer.call(lambda conn: conn.execute("BEGIN IMMEDIATE"))
            writer.deferred = []
            try:
                yield writer
                last, writer.deferred = writer.deferred, []
                await writer.call(lambda conn: _run(conn, [*last, ("COMMIT", ())]))
            except BaseException:
                writer.deferred = []
                await writer.call(_rollback)
                raise

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Session]:
        if self._reader is None:
            raise StoreError(f"store {self.url} is not open")
        yield self._reader

    async def open(self) -> None:
        if self._writer is not None:
            return
        if self._readonly and not self.path.exists():
            raise StoreError(f"cannot open {self.path}: no results store there yet "
                             "(is the consumer running?)")
        self._writer = _Thread("sqlite-writer", self.path)
        self._reader = _Thread("sqlite-reader", self.path)
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._writer.executor, self._open_writer)
            await loop.run_in_executor(self._reader.executor, self._open_reader)
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

    def _open_writer(self) -> None:
        assert self._writer is not None
        conn = self._writer.conn = self._connect(self._readonly)
        try:
            if not self._readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            self._migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot prepare sqlite store {self.path}: {exc}") from exc

    def _open_reader(self) -> None:
        assert self._reader is not None
        self._reader.conn = self._connect(readonly=True)

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
                for statement in migration(SQLITE, v):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={v + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for attr in ("_reader", "_writer"):
            thread: _Thread | None = getattr(self, attr)
            setattr(self, attr, None)
            if thread is None:
                continue
            await loop.run_in_executor(thread.executor, _close, thread)
            thread.executor.shutdown(wait=True)


def _run(conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
    before = conn.total_changes
    for sql, params in statements:
        conn.execute(sql, params)
    return conn.total_changes - before


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _close(thread: _Thread) -> None:
    if thread.conn is not None:
        thread.conn.close()
        thread.conn = None
