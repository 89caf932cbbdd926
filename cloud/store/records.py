"""What the results store holds: result rows, archived reports and dead letters.

These are plain msgspec Structs shared by every store implementation, so the
consumer and the CLI never see a database row. Times are integer nanoseconds
since the Unix epoch (UTC). Identity is ``(device, epoch, seq)`` as in the
report schema; ``epoch`` is an unsigned 64-bit value here, whatever a backend
has to do to store it.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Identity = tuple[str, int, int]
# One monitoring histogram cell: (model_version, target, regime, bucket_ns, health, feature,
# bin, value); commits add ``value`` to the stored cell (see cloud.monitor.histograms).
HistCell = tuple[str, str, str, int, str, str, int, float]
# One usage cell: (model_version, target, pump, bucket_ns, metric, bin, value); commits add
# ``value`` to the stored cell (see cloud.monitor.usage).
UsageCell = tuple[str, str, str, int, str, int, float]

# Why a dead letter was dead-lettered, coarsely; the free-text reason says exactly.
DeadLetterKind = Literal[
    "oversize",  # payload larger than the configured limit
    "malformed",  # not a decodable batch / report
    "schema",  # decodes, but an unknown schema version or a field out of range
    "spoofed",  # payload's device differs from the topic's
    "topic",  # topic outside pumpwatch/devices/{device}/reports
    "model",  # the endpoint refused this report (poison)
    "name",  # a device/site/pump/channel name breaks the name rule
    "nonfinite",  # NaN or infinity where the model needs a number
    "lengths",  # arrays inconsistent with the report's own parameters
    "blob",  # spectrum or envelope bytes that do not decode
]
DEAD_LETTER_KINDS: tuple[str, ...] = (
    "oversize",
    "malformed",
    "schema",
    "spoofed",
    "topic",
    "model",
    "name",
    "nonfinite",
    "lengths",
    "blob",
)


class EvidenceRow(msgspec.Struct, gc=False, frozen=True):
    name: str
    value: float
    note: str = ""


class ResultRow(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """One report's result as stored.

    ``published_ns`` is the publisher's clock (MQTT user property, if sent),
    ``received_ns`` the consumer's on arrival, ``stored_ns`` the commit time
    (filled in by the store; 0 until then). ``extra``: the result's fields this
    code does not type (a model's optional outputs, kept as JSON values);
    ``manifest_digest``: the manifest of the bundle that produced it (see
    :class:`ManifestRow`), if the endpoint said.
    """

    device: str
    epoch: int
    seq: int
    site: str
    pump: str
    channel: str
    t0_ns: int
    condition: str
    probabilities: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    anomalous: bool
    baseline: str
    iso_zone: str
    velocity_rms: float
    rpm: float | None
    evidence: list[EvidenceRow]
    model_version: str
    target: str  # "endpoint" or "endpoint/bundle" that produced it
    published_ns: int | None
    received_ns: int
    stored_ns: int = 0
    extra: dict[str, Any] = {}
    manifest_digest: str | None = None

    @property
    def identity(self) -> Identity:
        return (self.device, self.epoch, self.seq)


def merge_extra(typed: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A result object for output: ``typed`` with the model's ``extra`` fields merged in
    (an extra never replaces a typed field) and their names listed in ``extra_fields``."""
    merged = [k for k in extra if k not in typed and k != "extra_fields"]
    return {**typed, **{k: extra[k] for k in merged}, "extra_fields": merged}


class ShadowRow(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """A shadow (candidate) version's result for a report, as stored (``shadow_results``).

    Unique on (report identity, ``model_version``): a re-delivered shadow result
    is stored once. ``production_version`` names the version whose result the
    caller got for the same report (that result is in ``results``);
    ``pump_class`` is the report's asset kind ("" if none); ``decided_by`` the
    rule that named the shadow's condition. ``stored_ns`` filled in by the store.
    """

    device: str
    epoch: int
    seq: int
    model_version: str
    production_version: str
    pump_class: str
    site: str
    pump: str
    channel: str
    t0_ns: int
    condition: str
    probabilities: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    anomalous: bool
    decided_by: str | None
    received_ns: int
    stored_ns: int = 0

    @property
    def identity(self) -> Identity:
        return (self.device, self.epoch, self.seq)


class ShadowPair(msgspec.Struct, frozen=True, kw_only=True):
    """A stored shadow result beside production's stored result for the same report."""

    device: str
    epoch: int
    seq: int
    pump_class: str
    production_version: str  # the version of the stored production result
    production_condition: str
    production_score: float
    shadow_version: str
    shadow_condition: str
    shadow_score: float
    shadow_decided_by: str | None
    stored_ns: int  # when the shadow row was stored


class MonitorRun(msgspec.Struct, frozen=True, kw_only=True):
    """A model version's latest monitoring run (cloud.monitor): its status and a JSON
    summary (worst features, prediction shares, usage, report path) for the dashboard."""

    model_version: str
    checked_ns: int
    status: str
    summary: str  # JSON text


class ManifestRow(msgspec.Struct, frozen=True, kw_only=True):
    """A bundle's manifest (``dsp.results.Manifest`` as JSON, every field kept), by digest.

    Written once per digest (first wins); ``stored_ns`` filled in by the store.
    """

    digest: str
    model_version: str
    manifest: str  # JSON text
    stored_ns: int = 0


class ArchivedReport(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """An accepted report's encoded bytes (exactly as received) and its index fields."""

    device: str
    epoch: int
    seq: int
    site: str
    pump: str
    channel: str
    t0_ns: int
    received_ns: int
    report: bytes

    @property
    def identity(self) -> Identity:
        return (self.device, self.epoch, self.seq)


class DeadLetter(msgspec.Struct, gc=False, frozen=True, kw_only=True):
    """A message, or one report of a message, that could not be accepted.

    ``key`` + ``part`` make a dead letter idempotent: ``key`` is a digest of
    topic and payload, ``part`` the report's index in the message (-1: the
    whole message), so a redelivered bad message is recorded once.
    """

    key: bytes
    part: int
    received_ns: int
    topic: str
    kind: str
    reason: str
    payload: bytes
    device: str | None = None
    epoch: int | None = None
    seq: int | None = None
    id: int | None = None  # assigned by the store


AlarmState = Literal["raised", "cleared"]
# An asset alarm's lifecycle (one vocabulary: cloud.store.lifecycle moves between them).
AlarmStatus = Literal["open", "acknowledged", "closed"]
NO_FAULT_FOUND = "no_fault_found"


class Lifecycle(msgspec.Struct, frozen=True, kw_only=True):
    """An asset alarm's operator-facing state (``kind == "asset"`` rows only).

    ``model_version``/``manifest_digest``/``condition``: what raised it (the newest
    result of the pump in the raising commit: its model, bundle manifest and named
    condition). ``verdict``: the confirmed failure mode when closed (a manifest class
    or ``no_fault_found``); ``onset_ns``: when the operator says the fault began (for
    time to detection), if they know.
    """

    status: AlarmStatus = "open"
    model_version: str = ""
    manifest_digest: str | None = None
    condition: str = ""
    acknowledged_by: str | None = None
    acknowledged_ns: int | None = None
    assignee: str | None = None
    closed_by: str | None = None
    closed_ns: int | None = None
    verdict: str | None = None
    action_taken: str | None = None
    note: str | None = None
    onset_ns: int | None = None


class AlarmEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One lifecycle change of an asset alarm: who, when, what (``detail``: JSON text)."""

    alarm_id: str
    at_ns: int
    actor: str
    action: str  # "ack", "assign", "close"
    detail: str = "{}"


class AlarmRow(msgspec.Struct, frozen=True, kw_only=True):
    """One alarm episode of one pump channel, or one pump's asset alarm, as the
    dashboard reads it.

    An asset alarm (``kind == "asset"``, ``channel`` None) groups the episodes raised
    on its pump while it is not closed (their ``parent``); it stays ``raised`` until an
    operator closes it (``lifecycle``), then ``cleared`` at the closing time.

    Written by the consumer's alarm state machines (``cloud.consumer.alarms``) in the
    store's commit, read by the dashboard: ``id`` stable per episode (upserted),
    ``updated_ns`` the time of the last write (0: the store stamps it, strictly
    above every earlier write), times in ns since the Unix epoch (UTC);
    ``raised_ns``/``cleared_ns`` are the window times of the raising and clearing windows.
    """

    id: str
    site: str
    pump: str
    kind: str  # "anomaly", "iso_zone"
    state: AlarmState
    raised_ns: int
    reason: str
    evidence: list[EvidenceRow] = []
    channel: str | None = None
    cleared_ns: int | None = None
    updated_ns: int = 0
    parent: str | None = None  # an episode's asset alarm (``kind == "asset"``)
    lifecycle: Lifecycle | None = None  # asset alarms only


# by last write, oldest first (ties by id) / newest raised first (ties by id, descending)
AlarmOrder = Literal["updated", "raised_desc"]


class SeriesChannel(msgspec.Struct, kw_only=True):
    """One channel's trend, columnar: raw rows (``count`` 1, ``condition`` set) or time
    buckets (mean time, row count, mean and max, anomalous count, worst ISO zone)."""

    channel: str
    t_ns: list[int]
    count: list[int]
    anomaly_score: list[float]
    anomaly_score_max: list[float]
    anomaly_threshold: list[float]
    anomalous: list[int]
    velocity_rms: list[float]
    velocity_rms_max: list[float]
    iso_zone: list[str]
    condition: list[str | None]


class Series(msgspec.Struct, kw_only=True):
    """One pump's trend over ``since_ns <= t0_ns < until_ns``, downsampled by the store.

    ``bucket_ns`` 0: raw rows (at most ``max_points`` in the range); else buckets of
    that width from ``since_ns`` (so at most ``max_points`` per channel). ``rows``: the
    result rows in the range.
    """

    pump: str
    since_ns: int
    until_ns: int
    bucket_ns: int
    rows: int
    series: list[SeriesChannel]


class Commit(msgspec.Struct, kw_only=True):
    """One transaction's worth of writes. All or nothing; every part idempotent."""

    results: list[ResultRow] = []
    archive: list[ArchivedReport] = []
    dead_letters: list[DeadLetter] = []
    alarms: list[AlarmRow] = []  # upserted on id, in list order
    manifests: list[ManifestRow] = []  # inserted once per digest
    shadow: list[ShadowRow] = []  # a shadow version's results, once per (identity, version)
    # usage counters added in the same transaction (cloud.monitor.usage); not rows of data,
    # so not counted by len()
    usage: list[UsageCell] = []

    def __len__(self) -> int:
        return (len(self.results) + len(self.archive) + len(self.dead_letters)
                + len(self.alarms) + len(self.manifests) + len(self.shadow))


class CommitOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What a commit changed: rows new to the store (the rest were already there)."""

    results_inserted: int
    archived: int
    dead_lettered: int
    stored_ns: int
    shadow_inserted: int = 0
    alarms: list[AlarmRow] = []  # as written, updated_ns stamped


class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """Sequence numbers ``first..last`` of one stream with neither a result nor a dead
    letter, although a later report of the stream (received at ``after_received_ns``) was
    committed: lost unless the edge still re-publishes them."""

    device: str
    epoch: int
    first: int
    last: int
    after_received_ns: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class PruneOutcome(msgspec.Struct, frozen=True, kw_only=True):
    results: int
    archive: int
    dead_letters: int


class MonitorPruneOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """Monitoring cells deleted by retention (``Store.prune_monitoring``)."""

    histograms: int
    usage: int


class StoreCounts(msgspec.Struct, frozen=True, kw_only=True):
    results: int
    archive: int
    dead_letters: int
