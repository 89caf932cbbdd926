"""The statement catalogue: every table, migration and statement of both stores, once.

Written in the portable subset with ``?`` placeholders and DDL type tokens;
:class:`._dialect.Dialect` renders them for SQLite or PostgreSQL. The row
codecs (records <-> column values) live here too, so both stores encode and
decode identically.

* Epochs are unsigned 64-bit; both databases' integers are signed 64-bit, so
  epochs at or above 2**63 are stored shifted down by 2**64 (:func:`to_i64`)
  and shifted back on the way out.
* JSON columns (probabilities, evidence, extra) are text; NaN goes out as
  ``null`` (JSON has none) and comes back as NaN. SQLite stores a NaN float
  column as NULL; both read back NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ._dialect import ColumnType, Dialect
from .records import (
    AlarmEvent,
    AlarmRow,
    ArchivedReport,
    DeadLetter,
    EvidenceRow,
    Lifecycle,
    ManifestRow,
    ResultRow,
    ShadowPair,
    ShadowRow,
)

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def to_i64(epoch: int) -> int:
    """Unsigned 64-bit epoch -> signed 64-bit column value."""
    return epoch - _U64 if epoch > _I64_MAX else epoch


def from_i64(value: int) -> int:
    return value + _U64 if value < 0 else value


# -- schema -------------------------------------------------------------------------------------

_ALARMS_DDL = """
    CREATE TABLE IF NOT EXISTS alarms (
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
    CREATE INDEX IF NOT EXISTS alarms_updated ON alarms (updated_ns);
    CREATE INDEX IF NOT EXISTS alarms_pump ON alarms (pump, raised_ns);
"""

# Each a script of ``;``-separated statements, applied in order in one transaction each.
MIGRATIONS: tuple[str, ...] = (
    # 1: results, archive, dead letters
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
    ) {without_rowid};
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
        report {blob} NOT NULL,
        PRIMARY KEY (device, epoch, seq)
    );
    CREATE INDEX archive_pump_t0 ON archive (pump, t0_ns);
    CREATE INDEX archive_received ON archive (received_ns);
    CREATE TABLE dead_letters (
        id {serial_pk},
        key {blob} NOT NULL,
        part INTEGER NOT NULL,
        received_ns BIGINT NOT NULL,
        topic TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        device TEXT,
        epoch BIGINT,
        seq BIGINT,
        payload {blob} NOT NULL,
        UNIQUE (key, part)
    );
    CREATE INDEX dead_letters_received ON dead_letters (received_ns);
    """,
    # 2: alarm episodes, results by commit time (the live stream's cursor)
    _ALARMS_DDL + """
    CREATE INDEX IF NOT EXISTS results_stored ON results (stored_ns);
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
    ) {without_rowid};
    """,
    # 4: the open contract: result fields this code does not type (JSON object), the
    # bundle manifest each result came with, and the manifests by digest
    """
    ALTER TABLE results ADD COLUMN extra TEXT NOT NULL DEFAULT '{{}}';
    ALTER TABLE results ADD COLUMN manifest_digest TEXT;
    CREATE TABLE manifests (
        digest TEXT PRIMARY KEY,
        model_version TEXT NOT NULL,
        manifest TEXT NOT NULL,
        stored_ns BIGINT NOT NULL
    );
    """,
    # 5: the read interface: each channel's newest result (the fleet view reads one row
    # per channel, whatever the table's size); a pump's trend from the index alone (it
    # replaces (pump, t0_ns), which it leads with); alarms newest raised first, by state
    """
    DROP INDEX results_pump_t0;
    CREATE INDEX results_pump_series ON results (pump, t0_ns, channel, anomaly_score,
        anomaly_threshold, anomalous, velocity_rms, iso_zone);
    CREATE TABLE latest (
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        t0_ns BIGINT NOT NULL,
        device TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (pump, channel)
    ) {without_rowid};
    INSERT INTO latest (pump, channel, t0_ns, device, epoch, seq)
        SELECT r.pump, r.channel, r.t0_ns, r.device, r.epoch, r.seq FROM results r
        JOIN (SELECT pump, channel, max(t0_ns) AS t0_ns FROM results GROUP BY pump, channel) m
        ON r.pump = m.pump AND r.channel = m.channel AND r.t0_ns = m.t0_ns
        WHERE true ON CONFLICT (pump, channel) DO NOTHING;
    CREATE INDEX alarms_raised ON alarms (raised_ns, id);
    CREATE INDEX alarms_state ON alarms (state, pump);
    """,
    # 6: monitoring histograms (cloud/monitor): mergeable cells per (model version,
    # bundle, regime, time bucket, health partition, feature, bin); commits add to them
    """
    CREATE TABLE monitor_hist (
        model_version TEXT NOT NULL,
        target TEXT NOT NULL,
        regime TEXT NOT NULL,
        bucket_ns BIGINT NOT NULL,
        health TEXT NOT NULL,
        feature TEXT NOT NULL,
        bin INTEGER NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model_version, target, regime, bucket_ns, health, feature, bin)
    ) {without_rowid};
    CREATE INDEX monitor_hist_bucket ON monitor_hist (bucket_ns);
    CREATE TABLE monitor_runs (
        model_version TEXT PRIMARY KEY,
        checked_ns BIGINT NOT NULL,
        status TEXT NOT NULL,
        summary TEXT NOT NULL
    );
    """,
    # 7: the alarm lifecycle: asset alarms (kind 'asset') group a pump's channel episodes
    # (parent), carry the operators' state (lifecycle, JSON); every change is an event
    """
    ALTER TABLE alarms ADD COLUMN parent TEXT;
    ALTER TABLE alarms ADD COLUMN lifecycle TEXT;
    CREATE INDEX alarms_parent ON alarms (parent);
    CREATE INDEX alarms_kind ON alarms (kind, pump, state);
    CREATE TABLE alarm_events (
        alarm_id TEXT NOT NULL,
        at_ns BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (alarm_id, at_ns)
    );
    """,
    # 8: a shadow (candidate) version's results beside production's, once per report and
    # version (the model server returns them in the response's optional shadow part)
    """
    CREATE TABLE shadow_results (
        device TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        model_version TEXT NOT NULL,
        production_version TEXT NOT NULL,
        pump_class TEXT NOT NULL,
        site TEXT NOT NULL,
        pump TEXT NOT NULL,
        channel TEXT NOT NULL,
        t0_ns BIGINT NOT NULL,
        condition TEXT NOT NULL,
        probabilities TEXT NOT NULL,
        anomaly_score DOUBLE PRECISION,
        anomaly_threshold DOUBLE PRECISION,
        anomalous BOOLEAN NOT NULL,
        decided_by TEXT,
        received_ns BIGINT NOT NULL,
        stored_ns BIGINT NOT NULL,
        PRIMARY KEY (device, epoch, seq, model_version)
    ) {without_rowid};
    CREATE INDEX shadow_results_version ON shadow_results (model_version, stored_ns);
    CREATE INDEX shadow_results_received ON shadow_results (received_ns);
    """,
    # 9: model usage (cloud/monitor/usage.py): mergeable counters and a fixed-edge latency
    # histogram per (model version, bundle, pump, time bucket, metric, bin); commits add
    """
    CREATE TABLE monitor_usage (
        model_version TEXT NOT NULL,
        target TEXT NOT NULL,
        pump TEXT NOT NULL,
        bucket_ns BIGINT NOT NULL,
        metric TEXT NOT NULL,
        bin INTEGER NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (model_version, target, pump, bucket_ns, metric, bin)
    ) {without_rowid};
    CREATE INDEX monitor_usage_bucket ON monitor_usage (bucket_ns);
    """,
    # 10: the alarm-change outbox (cloud/dashboard/outbox.py): each change keeps the asset
    # alarm as it was after it (``alarm``, JSON) and whether it reached the broker
    # (``published_ns`` NULL: pending; ``publish_outcome`` 'puback', 'refused',
    # 'dropped:<why>'); changes stored before the outbox are not replayed
    """
    ALTER TABLE alarm_events ADD COLUMN alarm TEXT;
    ALTER TABLE alarm_events ADD COLUMN published_ns BIGINT;
    ALTER TABLE alarm_events ADD COLUMN publish_outcome TEXT NOT NULL DEFAULT '';
    UPDATE alarm_events SET published_ns = at_ns, publish_outcome = 'before_outbox';
    CREATE INDEX alarm_events_outbox ON alarm_events (published_ns, at_ns);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migration(dialect: Dialect, version: int) -> list[str]:
    """The statements that take the schema from ``version`` to ``version + 1``."""
    return [s for s in dialect.ddl(MIGRATIONS[version]).split(";") if s.strip()]


# -- columns and row codecs ---------------------------------------------------------------------

RESULT_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("device", "text"), ("epoch", "i64"), ("seq", "i64"), ("site", "text"), ("pump", "text"),
    ("channel", "text"), ("t0_ns", "i64"), ("condition", "text"), ("probabilities", "text"),
    ("anomaly_score", "f64"), ("anomaly_threshold", "f64"), ("anomalous", "bool"),
    ("baseline", "text"), ("iso_zone", "text"), ("velocity_rms", "f64"), ("rpm", "f64"),
    ("evidence", "text"), ("model_version", "text"), ("target", "text"),
    ("published_ns", "i64"), ("received_ns", "i64"), ("stored_ns", "i64"), ("extra", "text"),
    ("manifest_digest", "text"),
)
ARCHIVE_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("device", "text"), ("epoch", "i64"), ("seq", "i64"), ("site", "text"), ("pump", "text"),
    ("channel", "text"), ("t0_ns", "i64"), ("received_ns", "i64"), ("report", "blob"),
)
DEAD_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("key", "blob"), ("part", "i32"), ("received_ns", "i64"), ("topic", "text"),
    ("kind", "text"), ("reason", "text"), ("device", "text"), ("epoch", "i64"),
    ("seq", "i64"), ("payload", "blob"),
)
ALARM_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("id", "text"), ("site", "text"), ("pump", "text"), ("channel", "text"), ("kind", "text"),
    ("state", "text"), ("raised_ns", "i64"), ("cleared_ns", "i64"), ("updated_ns", "i64"),
    ("reason", "text"), ("evidence", "text"), ("parent", "text"), ("lifecycle", "text"),
)
EVENT_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("alarm_id", "text"), ("at_ns", "i64"), ("actor", "text"), ("action", "text"),
    ("detail", "text"),
)
# written with each change: the asset alarm after it (what the outbox publishes)
EVENT_WRITE_COLUMNS: tuple[tuple[str, ColumnType], ...] = (*EVENT_COLUMNS, ("alarm", "text"))
MANIFEST_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("digest", "text"), ("model_version", "text"), ("manifest", "text"), ("stored_ns", "i64"),
)
STATE_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("site", "text"), ("pump", "text"), ("channel", "text"), ("state", "text"),
    ("updated_ns", "i64"),
)
LATEST_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("pump", "text"), ("channel", "text"), ("t0_ns", "i64"), ("device", "text"),
    ("epoch", "i64"), ("seq", "i64"),
)
HIST_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("model_version", "text"), ("target", "text"), ("regime", "text"), ("bucket_ns", "i64"),
    ("health", "text"), ("feature", "text"), ("bin", "i32"), ("value", "f64"),
)
RUN_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("model_version", "text"), ("checked_ns", "i64"), ("status", "text"), ("summary", "text"),
)
SHADOW_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("device", "text"), ("epoch", "i64"), ("seq", "i64"), ("model_version", "text"),
    ("production_version", "text"), ("pump_class", "text"), ("site", "text"),
    ("pump", "text"), ("channel", "text"), ("t0_ns", "i64"), ("condition", "text"),
    ("probabilities", "text"), ("anomaly_score", "f64"), ("anomaly_threshold", "f64"),
    ("anomalous", "bool"), ("decided_by", "text"), ("received_ns", "i64"),
    ("stored_ns", "i64"),
)
USAGE_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("model_version", "text"), ("target", "text"), ("pump", "text"), ("bucket_ns", "i64"),
    ("metric", "text"), ("bin", "i32"), ("value", "f64"),
)
USAGE_KEY = "model_version, target, pump, bucket_ns, metric, bin"
HIST_KEY = "model_version, target, regime, bucket_ns, health, feature, bin"
KEY3: tuple[ColumnType, ...] = ("text", "i64", "i64")
TEXT3: tuple[ColumnType, ...] = ("text", "text", "text")


def names(columns: Sequence[tuple[str, ColumnType]], prefix: str = "") -> str:
    return ", ".join(prefix + c for c, _ in columns)


def types(columns: Sequence[tuple[str, ColumnType]]) -> tuple[ColumnType, ...]:
    return tuple(t for _, t in columns)


_json_encode = msgspec.json.Encoder().encode
_NAN = float("nan")


def json_text(value: object) -> str:
    return _json_encode(value).decode()


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


def real(v: float | None) -> float:
    return _NAN if v is None else float(v)


def result_params(d: Dialect, r: ResultRow, stored_ns: int) -> tuple[Any, ...]:
    return (
        r.device, to_i64(r.epoch), r.seq, r.site, r.pump, r.channel, r.t0_ns, r.condition,
        json_text(r.probabilities), r.anomaly_score, r.anomaly_threshold,
        d.boolean(r.anomalous), r.baseline, r.iso_zone, r.velocity_rms, r.rpm,
        json_text(r.evidence), r.model_version, r.target, r.published_ns, r.received_ns,
        stored_ns, json_text(r.extra), r.manifest_digest,
    )


def result_row(row: Sequence[Any]) -> ResultRow:
    (
        device, epoch, seq, site, pump, channel, t0_ns, condition, probabilities,
        anomaly_score, anomaly_threshold, anomalous, baseline, iso_zone, velocity_rms, rpm,
        evidence, model_version, target, published_ns, received_ns, stored_ns, extra,
        manifest_digest,
    ) = row
    return ResultRow(
        device=device, epoch=from_i64(epoch), seq=seq, site=site, pump=pump, channel=channel,
        t0_ns=t0_ns, condition=condition, probabilities=_probs_decode(probabilities),
        anomaly_score=real(anomaly_score), anomaly_threshold=real(anomaly_threshold),
        anomalous=bool(anomalous), baseline=baseline, iso_zone=iso_zone,
        velocity_rms=real(velocity_rms), rpm=rpm, evidence=_evidence_decode(evidence),
        model_version=model_version, target=target, published_ns=published_ns,
        received_ns=received_ns, stored_ns=stored_ns, extra=_extra_json(extra),
        manifest_digest=manifest_digest,
    )


def shadow_params(d: Dialect, r: ShadowRow, stored_ns: int) -> tuple[Any, ...]:
    return (
        r.device, to_i64(r.epoch), r.seq, r.model_version, r.production_version,
        r.pump_class, r.site, r.pump, r.channel, r.t0_ns, r.condition,
        json_text(r.probabilities), r.anomaly_score, r.anomaly_threshold,
        d.boolean(r.anomalous), r.decided_by, r.received_ns, stored_ns,
    )


def shadow_pair(row: Sequence[Any]) -> ShadowPair:
    (device, epoch, seq, pclass, pver, pcond, pscore, sver, scond, sscore, sdec,
     stored) = row
    return ShadowPair(device=device, epoch=from_i64(epoch), seq=seq, pump_class=pclass,
                      production_version=pver, production_condition=pcond,
                      production_score=real(pscore), shadow_version=sver,
                      shadow_condition=scond, shadow_score=real(sscore),
                      shadow_decided_by=sdec, stored_ns=int(stored))


def archive_params(a: ArchivedReport) -> tuple[Any, ...]:
    return (a.device, to_i64(a.epoch), a.seq, a.site, a.pump, a.channel, a.t0_ns,
            a.received_ns, a.report)


def archive_row(row: Sequence[Any]) -> ArchivedReport:
    d, e, s, si, p, c, t0, rx, rep = row
    return ArchivedReport(device=d, epoch=from_i64(e), seq=s, site=si, pump=p, channel=c,
                          t0_ns=t0, received_ns=rx, report=bytes(rep))


def dead_params(d: DeadLetter) -> tuple[Any, ...]:
    return (d.key, d.part, d.received_ns, d.topic, d.kind, d.reason, d.device,
            None if d.epoch is None else to_i64(d.epoch), d.seq, d.payload)


def dead_row(row: Sequence[Any]) -> DeadLetter:
    i, k, part, rx, topic, kind, reason, dev, e, s, payload = row
    return DeadLetter(id=i, key=bytes(k), part=part, received_ns=rx, topic=topic, kind=kind,
                      reason=reason, device=dev, epoch=None if e is None else from_i64(e),
                      seq=s, payload=bytes(payload))


_lifecycle_json = msgspec.json.Decoder(Lifecycle).decode


def alarm_params(a: AlarmRow) -> tuple[Any, ...]:
    return (a.id, a.site, a.pump, a.channel, a.kind, a.state, a.raised_ns, a.cleared_ns,
            a.updated_ns, a.reason, json_text(a.evidence), a.parent,
            None if a.lifecycle is None else json_text(a.lifecycle))


def alarm_row(row: Sequence[Any]) -> AlarmRow:
    (aid, site, pump, channel, kind, state, raised, cleared, updated, reason, evidence,
     parent, lifecycle) = row
    return AlarmRow(
        id=aid, site=site, pump=pump, channel=channel, kind=kind,
        state="cleared" if state == "cleared" else "raised", raised_ns=raised,
        cleared_ns=cleared, updated_ns=updated, reason=reason,
        evidence=_evidence_decode(evidence), parent=parent,
        lifecycle=None if lifecycle is None else _lifecycle_json(lifecycle),
    )


def alarm_snapshot(text: str) -> AlarmRow:
    """An alarm stored as JSON (``json_text(row)``; evidence NaN went out as null)."""
    body = msgspec.json.decode(text)
    for e in body.get("evidence") or []:
        if isinstance(e, list) and len(e) > 1 and e[1] is None:
            e[1] = _NAN
    return msgspec.convert(body, AlarmRow)


def event_row(row: Sequence[Any]) -> AlarmEvent:
    alarm_id, at_ns, actor, action, detail = row
    return AlarmEvent(alarm_id=alarm_id, at_ns=int(at_ns), actor=actor, action=action,
                      detail=detail)


def manifest_row(row: Sequence[Any]) -> ManifestRow:
    digest, model_version, manifest, stored_ns = row
    return ManifestRow(digest=digest, model_version=model_version, manifest=manifest,
                       stored_ns=stored_ns)


# -- statements ---------------------------------------------------------------------------------


def insert(
    d: Dialect, table: str, columns: Sequence[tuple[str, ColumnType]], n: int,
    conflict: str, *, update: Sequence[str] = (), where: str = "", returning: str = "",
) -> str:
    """``INSERT .. <n rows> ON CONFLICT (conflict) DO NOTHING`` (or ``DO UPDATE SET`` the
    ``update`` columns from the proposed row, if ``where`` holds)."""
    action = "DO NOTHING"
    if update:
        action = "DO UPDATE SET " + ", ".join(
            c if "=" in c else f"{c} = excluded.{c}" for c in update)
        if where:
            action += f" WHERE {where}"
    sql = (f"INSERT INTO {table} ({names(columns)}) {d.rows(types(columns), n)} "
           f"ON CONFLICT ({conflict}) {action}")
    if returning:
        sql += f" RETURNING {returning}"
    return d.sql(sql)


def insert_results(d: Dialect, n: int) -> str:
    return insert(d, "results", RESULT_COLUMNS, n, "device, epoch, seq",
                  returning="device, epoch, seq")


def insert_archive(d: Dialect, n: int) -> str:
    return insert(d, "archive", ARCHIVE_COLUMNS, n, "device, epoch, seq")


def insert_dead(d: Dialect, n: int) -> str:
    return insert(d, "dead_letters", DEAD_COLUMNS, n, "key, part")


def insert_shadow(d: Dialect, n: int) -> str:
    return insert(d, "shadow_results", SHADOW_COLUMNS, n, "device, epoch, seq, model_version")


# Stored shadow results beside production's stored result for the same report.
SHADOW_PAIRS = (
    "SELECT s.device, s.epoch, s.seq, s.pump_class, r.model_version, r.condition, "
    "r.anomaly_score, s.model_version, s.condition, s.anomaly_score, s.decided_by, "
    "s.stored_ns FROM shadow_results s JOIN results r "
    "ON r.device = s.device AND r.epoch = s.epoch AND r.seq = s.seq"
)
PRUNE_SHADOW = "DELETE FROM shadow_results WHERE received_ns < ?"


def insert_manifests(d: Dialect, n: int) -> str:
    return insert(d, "manifests", MANIFEST_COLUMNS, n, "digest")


def upsert_alarms(d: Dialect, n: int) -> str:
    return insert(d, "alarms", ALARM_COLUMNS, n, "id",
                  update=("state", "cleared_ns", "updated_ns", "reason", "evidence"))


def insert_events(d: Dialect, n: int) -> str:
    return insert(d, "alarm_events", EVENT_WRITE_COLUMNS, n, "alarm_id, at_ns")


# An episode's asset alarm: the pump's one that is not closed.
OPEN_ASSET = ("SELECT id, raised_ns FROM alarms WHERE kind = 'asset' AND pump = ? "
              "AND state = 'raised' ORDER BY raised_ns DESC LIMIT 1")
# A lifecycle change (the state, closing time and lifecycle; parent and episodes stay).
SET_LIFECYCLE = ("UPDATE alarms SET state = ?, cleared_ns = ?, updated_ns = ?, lifecycle = ? "
                 "WHERE id = ? AND kind = 'asset'")
EVENTS = (f"SELECT {names(EVENT_COLUMNS)} FROM alarm_events "  # noqa: S608
          "WHERE alarm_id = ? ORDER BY at_ns")
# The outbox: changes not yet published, oldest first (at_ns is unique: the alarm stamp).
OUTBOX = (f"SELECT {names(EVENT_COLUMNS)}, alarm FROM alarm_events "  # noqa: S608
          "WHERE published_ns IS NULL ORDER BY at_ns LIMIT ?")
OUTBOX_DEPTH = "SELECT count(*), min(at_ns) FROM alarm_events WHERE published_ns IS NULL"
OUTBOX_MARK = ("UPDATE alarm_events SET published_ns = ?, publish_outcome = ? "
               "WHERE alarm_id = ? AND at_ns = ? AND published_ns IS NULL")
OUTBOX_DROP_OLD = ("UPDATE alarm_events SET published_ns = ?, publish_outcome = ? "
                   "WHERE published_ns IS NULL AND at_ns < ?")
# beyond the newest ``max_pending``: the oldest are dropped
OUTBOX_DROP_OVER = (
    "UPDATE alarm_events SET published_ns = ?, publish_outcome = ? WHERE published_ns IS NULL "
    "AND at_ns < (SELECT at_ns FROM alarm_events WHERE published_ns IS NULL "
    "ORDER BY at_ns DESC LIMIT 1 OFFSET ?)")


def insert_states(d: Dialect, n: int) -> str:
    """New channels' state rows, empty (so they can be locked like existing ones)."""
    return insert(d, "alarm_state", STATE_COLUMNS, n, "site, pump, channel")


def upsert_states(d: Dialect, n: int) -> str:
    return insert(d, "alarm_state", STATE_COLUMNS, n, "site, pump, channel",
                  update=("state", "updated_ns"))


def upsert_latest(d: Dialect, n: int) -> str:
    return insert(d, "latest", LATEST_COLUMNS, n, "pump, channel",
                  update=("t0_ns", "device", "epoch", "seq"),
                  where="excluded.t0_ns > latest.t0_ns")


def add_hist(d: Dialect, n: int) -> str:
    """Add ``n`` cells to the monitoring histograms (a new cell starts at its value)."""
    return insert(d, "monitor_hist", HIST_COLUMNS, n, HIST_KEY,
                  update=("value = monitor_hist.value + excluded.value",))


def add_usage(d: Dialect, n: int) -> str:
    """Add ``n`` usage cells (a new cell starts at its value)."""
    return insert(d, "monitor_usage", USAGE_COLUMNS, n, USAGE_KEY,
                  update=("value = monitor_usage.value + excluded.value",))


def upsert_runs(d: Dialect, n: int) -> str:
    """Each model version's latest monitoring run (a later check replaces it)."""
    return insert(d, "monitor_runs", RUN_COLUMNS, n, "model_version",
                  update=("checked_ns", "status", "summary"),
                  where="excluded.checked_ns >= monitor_runs.checked_ns")


def existing(d: Dialect, n: int) -> str:
    """Which of ``n`` identities have a result."""
    return d.sql(
        f"WITH w(device, epoch, seq) AS ({d.rows(KEY3, n)}) "  # noqa: S608
        "SELECT r.device, r.epoch, r.seq FROM results r JOIN w "
        "ON r.device = w.device AND r.epoch = w.epoch AND r.seq = w.seq"
    )


def lock_states(d: Dialect, n: int) -> str:
    """The state rows of ``n`` channels, locked, in key order (two consumers never
    deadlock: every transaction locks in the same order)."""
    return d.sql(
        f"WITH k(site, pump, channel) AS ({d.rows(TEXT3, n)}) "  # noqa: S608
        "SELECT a.site, a.pump, a.channel, a.state FROM alarm_state a JOIN k "
        "ON a.site = k.site AND a.pump = k.pump AND a.channel = k.channel "
        f"ORDER BY a.site, a.pump, a.channel{d.for_update}"
    )


ALARMS_TOP = "SELECT coalesce(max(updated_ns), 0) FROM alarms"
PRUNE: tuple[str, ...] = (
    "DELETE FROM results WHERE received_ns < ?",
    "DELETE FROM archive WHERE received_ns < ?",
    "DELETE FROM dead_letters WHERE received_ns < ?",
    # closed asset alarms are labels (pumpwatch labels export): kept
    "DELETE FROM alarms WHERE state = 'cleared' AND kind <> 'asset' AND updated_ns < ?",
)
# A channel whose newest result was pruned leaves the fleet view (as when it had none).
PRUNE_LATEST = (
    "DELETE FROM latest WHERE NOT EXISTS (SELECT 1 FROM results r "
    "WHERE r.device = latest.device AND r.epoch = latest.epoch AND r.seq = latest.seq)"
)
# Monitoring retention (cloud/monitor/retention.py): per model version, the cells older
# than the cutoff, except the version's first ``reference`` ns (its default live reference
# window, cloud/monitor/run.py): parameters version, cutoff, version start + reference.
HIST_VERSIONS = "SELECT model_version, min(bucket_ns) FROM monitor_hist GROUP BY model_version"
PRUNE_HIST = ("DELETE FROM monitor_hist WHERE model_version = ? AND bucket_ns < ? "
              "AND bucket_ns >= ?")
PRUNE_USAGE = "DELETE FROM monitor_usage WHERE bucket_ns < ?"
COUNTS = ("SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM archive), "
          "(SELECT count(*) FROM dead_letters)")
MANIFESTS = f"SELECT {names(MANIFEST_COLUMNS)} FROM manifests ORDER BY stored_ns, digest"  # noqa: S608
LATEST = (
    f"SELECT {names(RESULT_COLUMNS, 'r.')} FROM latest l JOIN results r "  # noqa: S608
    "ON r.device = l.device AND r.epoch = l.epoch AND r.seq = l.seq"
)
MONITOR_RUNS = f"SELECT {names(RUN_COLUMNS)} FROM monitor_runs ORDER BY model_version"  # noqa: S608
HIST_START = "SELECT min(bucket_ns) FROM monitor_hist WHERE model_version = ?"
LAST_T0 = "SELECT max(t0_ns) FROM results WHERE pump = ?"
WATERMARKS = ("SELECT (SELECT coalesce(max(stored_ns), 0) FROM results), "
              "(SELECT coalesce(max(updated_ns), 0) FROM alarms)")
ACTIVE_ALARMS = ("SELECT pump, count(*) FROM alarms WHERE state = 'raised' AND kind <> 'asset' "
                 "GROUP BY pump")
ZONE_CASE = (
    "CASE iso_zone WHEN 'A' THEN 1 WHEN 'B' THEN 2 WHEN 'C' THEN 3 WHEN 'D' THEN 4 ELSE 0 END"
)
ANOMALOUS_INT = "CASE WHEN anomalous THEN 1 ELSE 0 END"


def where(clauses: Sequence[tuple[str, str, object]]) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND ..`` over the clauses whose value is not None, and its params."""
    parts: list[str] = []
    params: list[Any] = []
    for column, op, value in clauses:
        if value is not None:
            parts.append(f"{column} {op} ?")
            params.append(value)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def limit(n: int | None) -> str:
    return "" if n is None else f" LIMIT {int(n)}"


def select(columns: Sequence[tuple[str, ColumnType]], table: str, where_sql: str,
           order: str, n: int | None) -> str:
    return (f"SELECT {names(columns)} FROM {table}{where_sql} "  # noqa: S608
            f"ORDER BY {order}{limit(n)}")


def series_raw(where_sql: str) -> str:
    return (
        "SELECT channel, t0_ns, condition, anomaly_score, anomaly_threshold, "  # noqa: S608
        f"{ANOMALOUS_INT}, iso_zone, velocity_rms FROM results{where_sql} "
        "ORDER BY channel, t0_ns"
    )


def series_buckets(where_sql: str) -> str:
    """Per channel and time bucket (``(t0_ns - since) / bucket``, two more parameters):
    mean time, count, mean and max score, mean threshold, anomalous count, mean and max
    velocity, worst zone rank."""
    return (
        "SELECT channel, CAST(avg(t0_ns) AS BIGINT), count(*), avg(anomaly_score), "  # noqa: S608
        f"max(anomaly_score), avg(anomaly_threshold), sum({ANOMALOUS_INT}), "
        f"avg(velocity_rms), max(velocity_rms), max({ZONE_CASE}) "
        f"FROM results{where_sql} GROUP BY channel, (t0_ns - ?) / ? ORDER BY channel, 2"
    )


def count(table: str, where_sql: str) -> str:
    return f"SELECT count(*) FROM {table}{where_sql}"  # noqa: S608
