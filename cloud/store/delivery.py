"""The delivery statements both stores share: gaps of committed streams, dead letters
kept under a byte budget. Written once with ``?`` placeholders, as :mod:`._sql`.

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

#: Parameters: device (four times: NULL for every device), before_ns, limit.
GAPS = """
WITH committed AS (
    SELECT device, epoch, seq, received_ns FROM results
     WHERE (CAST(? AS TEXT) IS NULL OR device = CAST(? AS TEXT))
    UNION ALL
    SELECT device, epoch, seq, received_ns FROM dead_letters
     WHERE seq IS NOT NULL AND epoch IS NOT NULL AND device IS NOT NULL
       AND (CAST(? AS TEXT) IS NULL OR device = CAST(? AS TEXT))
), ordered AS (
    SELECT device, epoch, seq, received_ns,
           LAG(seq) OVER (PARTITION BY device, epoch ORDER BY seq) AS prev
      FROM committed
)
SELECT device, epoch, COALESCE(prev + 1, 0) AS first, seq - 1 AS last, received_ns
  FROM ordered
 WHERE seq > COALESCE(prev + 1, 0) AND received_ns < CAST(? AS BIGINT)
 ORDER BY device, epoch, seq
 LIMIT ?
"""


def gaps_params(device: str | None, before_ns: int, limit: int) -> tuple[Any, ...]:
    return (device, device, device, device, before_ns, limit)


def gap_rows(rows: Iterable[Any], from_i64: Any) -> list[Gap]:
    """Gap records from ``(device, epoch, first, last, received_ns)`` rows."""
    return [
        Gap(device=d, epoch=from_i64(e), first=int(a), last=int(b), after_received_ns=int(rx))
        for d, e, a, b, rx in rows
    ]


#: Parameter: the byte budget. ``{size}``: a dead letter's stored bytes in the dialect
#: (:attr:`cloud.store._dialect.Dialect.dead_letter_bytes`).
DEAD_LETTERS_OVER_BUDGET = """
DELETE FROM dead_letters WHERE id IN (
    SELECT id FROM (
        SELECT id, SUM({size}) OVER (ORDER BY id DESC) AS newer_bytes FROM dead_letters
    ) AS t WHERE newer_bytes > ?
)
"""
