"""What differs between the SQL of the two stores: placeholders, types, bulk row sources.

Every statement is written once, in :mod:`._sql`, with ``?`` placeholders and the
portable subset both databases share (``ON CONFLICT .. DO NOTHING / DO UPDATE``,
``RETURNING``, CTEs, row values). A :class:`Dialect` renders it:

* **placeholders**: ``?`` stays for SQLite; PostgreSQL's are numbered ``$1, $2, ..``
  in order of appearance (no statement here has a ``?`` inside a string literal);
* **types** in DDL: ``{blob}`` (``BLOB``/``BYTEA``), ``{serial_pk}`` (an
  auto-assigned integer key), ``{without_rowid}`` (SQLite's clustered tables);
  ``BIGINT``, ``DOUBLE PRECISION``, ``BOOLEAN`` and ``TEXT`` mean the same in both
  (SQLite reads them by affinity);
* **bulk rows** (:meth:`Dialect.rows`): a row source of ``n`` rows of given
  column types, ``VALUES (?, ..), (?, ..)`` with the rows flattened for SQLite,
  ``SELECT * FROM unnest(?::text[], ..)`` with one array per column for
  PostgreSQL (one round trip per table, whatever the row count);
* **row locks**: ``FOR UPDATE`` where PostgreSQL needs it (SQLite's
  ``BEGIN IMMEDIATE`` already holds the one write lock).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, Literal

ColumnType = Literal["text", "i64", "i32", "f64", "bool", "blob"]

_PG_TYPES: dict[str, str] = {
    "text": "text", "i64": "bigint", "i32": "int", "f64": "float8", "bool": "bool",
    "blob": "bytea",
}
_QMARK = re.compile(r"\?")
# SQLite's default limit on bound variables (3.32+); bulk statements are chunked below it.
SQLITE_MAX_VARIABLES = 32766
# Rows per SQLite bulk statement, at most; each statement has a power-of-two row count.
# The sqlite3 module caches every distinct statement text it prepared (128 per
# connection), and a prepared statement's memory grows with its rows (about 1.3 KB per
# row of 20 columns): batch sizes of every count once filled that cache with ~160 MB
# of native memory that only grew with the messages seen. Power-of-two shapes up to
# this cap keep at most 8 shapes per statement kind, and their sum is bounded.
SQLITE_MAX_ROWS_PER_STATEMENT = 128


class Dialect:
    """How one database spells the shared statements (see the module docstring)."""

    def __init__(self, name: Literal["sqlite", "postgresql"]) -> None:
        self.name = name
        self.is_postgres = name == "postgresql"

    def __repr__(self) -> str:
        return f"Dialect({self.name!r})"

    @functools.lru_cache(maxsize=512)  # noqa: B019 -- two long-lived instances
    def sql(self, text: str) -> str:
        """``text`` with its placeholders in this dialect's style."""
        if not self.is_postgres:
            return text
        counter = iter(range(1, 1 << 16))
        return _QMARK.sub(lambda _m: f"${next(counter)}", text)

    def ddl(self, text: str) -> str:
        if self.is_postgres:
            return text.format(blob="BYTEA", serial_pk="BIGSERIAL PRIMARY KEY",
                               without_rowid="")
        return text.format(blob="BLOB", serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT",
                           without_rowid="WITHOUT ROWID")

    @property
    def dead_letter_bytes(self) -> str:
        """A dead letter's stored bytes (payload and reason) as an SQL expression."""
        if self.is_postgres:
            return "octet_length(payload) + octet_length(reason)"
        return "length(payload) + length(CAST(reason AS BLOB))"

    @property
    def for_update(self) -> str:
        """Suffix that locks the selected rows until the transaction ends."""
        return " FOR UPDATE" if self.is_postgres else ""

    def rows(self, types: Sequence[ColumnType], n: int) -> str:
        """A row source of ``n`` rows (placeholders in ``?`` style; see :meth:`sql`)."""
        if self.is_postgres:
            arrays = ", ".join(f"?::{_PG_TYPES[t]}[]" for t in types)
            return f"SELECT * FROM unnest({arrays})"  # noqa: S608 -- placeholders only
        one = "(" + ", ".join("?" * len(types)) + ")"
        return "VALUES " + ", ".join([one] * n)

    def row_chunks(
        self, rows: Sequence[Sequence[Any]], width: int, *, reserved: int = 0
    ) -> list[tuple[int, list[Any]]]:
        """``rows`` as (row count, parameters) per statement: one statement with a column
        array each for PostgreSQL; for SQLite, flattened and chunked below its variable
        limit (``reserved``: other parameters of the statement) into statements of a
        power-of-two row count, at most :data:`SQLITE_MAX_ROWS_PER_STATEMENT` (a bounded
        set of statement texts, so of prepared statements cached per connection)."""
        if not rows:
            return []
        if self.is_postgres:
            cols: list[list[Any]] = [[] for _ in range(width)]
            for row in rows:
                for i, v in enumerate(row):
                    cols[i].append(v)
            return [(len(rows), list(cols))]
        per = min(SQLITE_MAX_ROWS_PER_STATEMENT,
                  max(1, (SQLITE_MAX_VARIABLES - reserved) // width))
        per = 1 << (per.bit_length() - 1)  # a power of two
        out = []
        i = 0
        while i < len(rows):
            left = len(rows) - i
            n = per if left >= per else 1 << (left.bit_length() - 1)
            chunk = rows[i : i + n]
            out.append((n, [v for row in chunk for v in row]))
            i += n
        return out

    def boolean(self, value: bool) -> bool | int:
        return value if self.is_postgres else int(value)


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgresql")
