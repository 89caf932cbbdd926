"""The alarm record the dashboard shows, and the SQLite table it reads it from.

Alarms are raised and cleared by the consumer side (hysteresis on anomalous
windows, ISO 20816 zone changes). Until that writer exists this module is the
contract both sides meet at: one row per alarm *episode*, updated in place
when it clears. The dashboard only reads; :func:`write_alarms_sqlite` is the
writer's reference implementation (and what the tests use).

* ``id``: stable per episode (e.g. ``"{pump}:{kind}:{raised_ns}"``); an
  upsert on it turns "raised" into "cleared".
* ``state``: ``"raised"`` while active, ``"cleared"`` after.
* ``updated_ns``: wall-clock time of the last write (ns); the live stream's
  cursor, so every write must move it forward.
* ``evidence``: the same ``(name, value, note)`` rows results carry.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

from cloud.store import EvidenceRow
from cloud.store.sqlite import ALARMS_DDL as ALARMS_DDL  # one schema, owned by the store

AlarmState = Literal["raised", "cleared"]

ALARM_COLUMNS = (
    "id, site, pump, channel, kind, state, raised_ns, cleared_ns, updated_ns, reason, evidence"
)


class AlarmRow(msgspec.Struct, frozen=True, kw_only=True):
    """One alarm episode of one pump (times in ns since the Unix epoch, UTC)."""

    id: str
    site: str
    pump: str
    kind: str  # "anomaly", "iso_zone", "condition", ...
    state: AlarmState
    raised_ns: int
    reason: str
    evidence: list[EvidenceRow] = []
    channel: str | None = None
    cleared_ns: int | None = None
    updated_ns: int = 0  # 0: filled in with the write time


_encode = msgspec.json.Encoder().encode
_evidence_decode = msgspec.json.Decoder(list[EvidenceRow]).decode


def alarm_from_row(row: Sequence[object]) -> AlarmRow:
    """A row selected with :data:`ALARM_COLUMNS` -> :class:`AlarmRow`."""
    (aid, site, pump, channel, kind, state, raised, cleared, updated, reason, evidence) = row
    return AlarmRow(
        id=str(aid), site=str(site), pump=str(pump),
        channel=None if channel is None else str(channel), kind=str(kind),
        state="cleared" if state == "cleared" else "raised", raised_ns=int(raised),  # type: ignore[call-overload]
        cleared_ns=None if cleared is None else int(cleared),  # type: ignore[call-overload]
        updated_ns=int(updated), reason=str(reason),  # type: ignore[call-overload]
        evidence=_evidence_decode(evidence),  # type: ignore[arg-type]
    )


def write_alarms_sqlite(path: str | Path, alarms: Sequence[AlarmRow]) -> None:
    """Create the table if needed and upsert ``alarms`` in one transaction.

    ``updated_ns`` of 0 is replaced by the current time, kept strictly above
    the table's maximum so the live stream's cursor always moves forward.
    """
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        conn.executescript(ALARMS_DDL)
        conn.execute("BEGIN IMMEDIATE")
        try:
            (top,) = conn.execute("SELECT coalesce(max(updated_ns), 0) FROM alarms").fetchone()
            now = max(time.time_ns(), top + 1)
            conn.executemany(
                f"INSERT INTO alarms ({ALARM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, "
                "cleared_ns = excluded.cleared_ns, updated_ns = excluded.updated_ns, "
                "reason = excluded.reason, evidence = excluded.evidence",
                [
                    (
                        a.id, a.site, a.pump, a.channel, a.kind, a.state, a.raised_ns,
                        a.cleared_ns, a.updated_ns or now, a.reason, _encode(a.evidence),
                    )
                    for a in alarms
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
