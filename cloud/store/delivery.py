"""The delivery statements both stores share: gaps of committed streams, dead letters
kept under a byte budget. Written once; ``{p1}``... are the dialect's placeholders.

Gaps
----
A stream (device, epoch) counts its sequence numbers from 0. A *gap* is a run
of sequence numbers with neither a result row nor a dead letter naming it,
below a sequence number that was committed (a loss at the very end of a stream
shows up once a later report arrives). Only gaps whose next committed report
was received before ``before_ns`` are returned: younger holes are usually
reports the edge is still re-publishing (the grace period).

Dead letters by bytes
---------------------
Retention by age is :meth:`Store.prune`; this also keeps the dead letters'
stored bytes (payload + reason) under a total, deleting the oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .records import Gap

_GAPS_SQL = """
WITH committed AS (
    SELECT device, epoch, seq, received_ns FROM results
     WHERE ({p1} IS NULL OR device = {p1})
    UNION ALL
    SELECT device, epoch, seq, received_ns FROM dead_letters
     WHERE seq IS NOT NULL AND epoch IS NOT NULL AND device IS NOT NULL
       AND ({p1} IS NULL OR device = {p1})
), ordered AS (
    SELECT device, epoch, seq, received_ns,
           LAG(seq) OVER (PARTITION BY device, epoch ORDER BY seq) AS prev
      FROM committed
)
SELECT device, epoch, COALESCE(prev + 1, 0) AS first, seq - 1 AS last, received_ns
  FROM ordered
 WHERE seq > COALESCE(prev + 1, 0) AND received_ns < {p2}
 ORDER BY device, epoch, seq
 LIMIT {p3}
"""


def gaps_sql(p1: str, p2: str, p3: str) -> str:
    """The statement with the given placeholders (SQLite ``?1``..., PostgreSQL ``$1``...)."""
    return _GAPS_SQL.format(p1=p1, p2=p2, p3=p3)


def gap_rows(rows: Iterable[Any], from_i64: Any) -> list[Gap]:
    """Gap records from ``(device, epoch, first, last, received_ns)`` rows."""
    return [
        Gap(device=d, epoch=from_i64(e), first=int(a), last=int(b), after_received_ns=int(rx))
        for d, e, a, b, rx in rows
    ]


_DEAD_LETTER_BYTES_SQL = """
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM (
        SELECT id, SUM({size}) OVER (ORDER BY id DESC) AS newer_bytes FROM dead_letters
    ) AS t WHERE newer_bytes > {p1}
)
"""


def dead_letter_bytes_sql(p1: str, size: str) -> str:
    """Delete the oldest dead letters beyond ``p1`` bytes; ``size``: the row's bytes."""
    return _DEAD_LETTER_BYTES_SQL.format(p1=p1, size=size)
