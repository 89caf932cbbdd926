"""The shared results store: PostgreSQL through asyncpg, for several consumers on several hosts.

Theory of operation
-------------------
* The statements, the schema and the store logic are shared with the SQLite
  store (:mod:`._sql`, :mod:`._engine`); this module holds what is
  PostgreSQL's own: the connection pool, advisory locks and the
  ``pumpwatch_schema`` version table.
* Every consumer of a shared subscription can write to one database and a
  report redelivered to *another* consumer still yields no second row:
  ``INSERT .. ON CONFLICT DO NOTHING`` is decided by the database, not by any
  one consumer's memory.
* ``commit`` is one transaction; every table is written with one
  ``INSERT .. SELECT * FROM unnest($1::type[], ..)`` (one round trip per
  table, whatever the row count). ``synchronous_commit`` is the server's
  (default ``on``): a returned commit is durable, which is what the
  consumer's ack-after-commit rule needs.
* Alarm ``updated_ns`` must increase with every write across *all*
  consumers (the dashboard's stream uses it as a cursor): a transaction
  writing alarms takes a transaction-scoped advisory lock before it reads
  the table's maximum and stamps above it, so stamps are ordered by commit.
* Floats are ``double precision`` (NaN and infinity are stored as such).
* Migrations run under an advisory lock so consumers starting together
  migrate once.
* asyncpg's and the network's errors become :class:`StoreError` here (the
  one boundary); a pool of ``pool_size`` connections serves lookups and
  commits concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from ._dialect import POSTGRES
from ._engine import Session, SQLStore
from ._sql import SCHEMA_VERSION, migration
from .base import SchemaError, StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore"]

_MIGRATION_LOCK = 0x70756D70  # "pump"
_ALARM_LOCK = 0x616C726D  # "alrm"
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

# The shared migrations as PostgreSQL runs them (scripts), for tests and tools.
MIGRATIONS: tuple[str, ...] = tuple(
    ";\n".join(migration(POSTGRES, v)) for v in range(SCHEMA_VERSION)
)


def _count(status: str) -> int:
    """Rows affected from a command tag like ``INSERT 0 12``."""
    try:
        return int(status.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return 0


class _Conn:
    """An asyncpg connection as a :class:`~._engine.Session`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.deferred: list[tuple[str, Sequence[Any]]] = []  # run before the COMMIT

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _count(await self.conn.execute(sql, *params))

    async def execute_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        n = 0
        for sql, params in statements:
            n += await self.execute(sql, params)
        return n

    def defer(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.deferred.append((sql, params))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        return [tuple(r) for r in await self.conn.fetch(sql, *params)]


class PostgresStore(SQLStore):
    """:class:`~cloud.store.base.Store` over PostgreSQL (see module docstring).

    ``url``: ``postgresql://user[:password]@host[:port]/database`` (libpq style;
    ``PGPASSWORD`` etc. apply).
    """

    dialect = POSTGRES

    def __init__(
        self, url: str, *, pool_size: int = 4, connect_timeout_s: float = 10.0, **_: Any
    ) -> None:
        self.url = url
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self, *, write: bool) -> AsyncIterator[Session]:
        pool = self._pool
        if pool is None:
            raise StoreError(f"store {self.url} is not open")
        try:
            async with pool.acquire() as conn:
                if write:
                    async with conn.transaction():
                        tx = _Conn(conn)
                        yield tx
                        await tx.execute_many(tx.deferred)
                else:
                    yield _Conn(conn)
        except StoreError:
            raise
        except _ERRORS as exc:
            # The one boundary where asyncpg's errors become ours.
            raise StoreError(f"postgresql error on {self._safe_url}: "
                             f"{type(exc).__name__}: {exc}") from exc

    def _write(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._session(write=True)

    def _read(self) -> contextlib.AbstractAsyncContextManager[Session]:
        return self._session(write=False)

    async def _lock_alarms(self, tx: Session) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", (_ALARM_LOCK,))

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
        except (*_ERRORS, ValueError) as exc:
            raise StoreError(f"cannot open postgresql store {self._safe_url}: "
                             f"{type(exc).__name__}: {exc}") from exc
        try:
            async with self._session(write=True) as tx:
                await self._migrate(tx)
        except BaseException:
            await self.close()
            raise

    async def _migrate(self, tx: Session) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", (_MIGRATION_LOCK,))
        await tx.execute("CREATE TABLE IF NOT EXISTS pumpwatch_schema (version INTEGER)")
        ((version,),) = await tx.fetch("SELECT max(version) FROM pumpwatch_schema")
        version = version or 0
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self._safe_url} has schema version {version}, newer than this code's "
                f"{SCHEMA_VERSION}: upgrade pumpwatch"
            )
        for v in range(version, SCHEMA_VERSION):
            for statement in migration(POSTGRES, v):
                await tx.execute(statement)
            await tx.execute("INSERT INTO pumpwatch_schema (version) VALUES ($1)", (v + 1,))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(10):
                    await pool.close()
            except TimeoutError:
                pool.terminate()
