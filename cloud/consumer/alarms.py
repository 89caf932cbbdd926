"""Alarm state per pump channel: hysteresis on anomalous windows, ISO 20816 zone alarms.

Theory of operation
-------------------
Sans-IO: :meth:`AlarmTracker.observe` takes result rows (any order, any
chunking) and returns the alarm rows to upsert; the consumer's writer puts
them in the same transaction as the results that caused them and publishes
them after the commit. Times are window times (``t0_ns`` of the report), so a
replay faster than real time raises and clears at the same windows as live.

Per ``(site, pump, channel)``; a ``sensor_fault`` window (the model found the
input unusable: dead, clipped, non-finite) is skipped by both state machines,
so a broken chain neither raises nor clears an alarm:

``anomaly``
    the last ``window_n`` windows' ``anomalous`` flags are kept; when at least
    ``raise_k`` of them are anomalous an episode is raised. It clears after
    ``clear_m`` consecutive clean windows (the history then starts afresh).
    ``raise_k`` of ``window_n`` keeps one noisy window from raising;
    ``clear_m`` keeps a flapping pump from raising and clearing every minute.
    The reason names the raising window's condition (``condition X``); a fault
    usually leaves its pump's baseline before the model can name it, so while
    the episode is raised its **diagnosis** follows the windows: when one fault
    class (not ``healthy``/``unknown``/``sensor_fault``) is the condition of at
    least ``raise_k`` of the last ``window_n`` windows and is not the one the
    episode names, the episode is rewritten (``...; diagnosis X (k of the last
    n windows)``, with that window's evidence) and published, like a zone change.
``iso_zone``
    raised when a window's ISO 20816 zone reaches ``zone_alarm_at`` (default
    C: "unsatisfactory for long-term operation"); every further zone change
    while raised (C -> D, D -> C) is written to the episode and published; it
    clears after ``zone_clear_m`` consecutive windows below ``zone_alarm_at``.
    The zone comes from the edge (the asset's limits travel in the report);
    ``zone_limits`` in the config overrides the limits per site/pump and
    recomputes the zone from the window's velocity RMS (mm/s).

Episode ids are ``"{pump}:{channel}:{kind}:{raised_ns}"`` with the raising
window's time, so recomputing the same windows yields the same id (an upsert,
not a second episode).

Where the state lives: :meth:`AlarmTracker.evaluate` is called by the store
*inside* the commit transaction with the channels' saved states (the
``alarm_state`` table, JSON), the result rows that transaction newly inserted
(a redelivered window is never counted twice), and returns the new states and
the alarm writes. The store locks the state rows (PostgreSQL: ``FOR UPDATE``
in key order), so several consumers sharing a subscription -- each seeing
only some of a pump's windows -- still run one state machine per channel,
and a restarted consumer continues where the last commit left off. Windows
are counted in commit order (by window time within a commit).
"""

from __future__ import annotations

import collections
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec

from cloud.store import AlarmRow, EvidenceRow, ResultRow
from dsp.results import SENSOR_FAULT, UNNAMED

ZONES = ("A", "B", "C", "D")
Zone = Literal["A", "B", "C", "D"]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


class ZoneLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """ISO 20816 zone boundaries A/B, B/C, C/D (mm/s) for pumps matching the patterns."""

    site: str = "*"
    pump: str = "*"
    limits: tuple[float, float, float]

    def __post_init__(self) -> None:
        a, b, c = self.limits
        if not 0 < a < b < c:
            raise ValueError(f"zone limits must be 0 < A/B < B/C < C/D, got {self.limits=}")

    def matches(self, site: str, pump: str) -> bool:
        return fnmatch.fnmatchcase(site, self.site) and fnmatch.fnmatchcase(pump, self.pump)


class AlarmConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[alarms]``: hysteresis and zone alarms (see the module docstring)."""

    enabled: bool = True
    raise_k: PosInt = 3
    window_n: PosInt = 5
    clear_m: PosInt = 5
    zone_alarm_at: Zone | None = "C"  # None: no zone alarms
    zone_clear_m: PosInt = 5
    zone_limits: list[ZoneLimits] = []

    def __post_init__(self) -> None:
        if self.raise_k > self.window_n:
            raise ValueError(f"raise_k={self.raise_k} must be <= window_n={self.window_n}")


def zone_of(velocity_mm_s: float, limits: tuple[float, float, float]) -> str:
    """ISO 20816 zone of a broadband velocity RMS; '?' when not a number."""
    if velocity_mm_s != velocity_mm_s:  # NaN
        return "?"
    for zone, limit in zip(ZONES, limits, strict=False):
        if velocity_mm_s < limit:
            return zone
    return "D"


@dataclass(slots=True)
class _Channel:
    history: collections.deque[bool]
    conditions: collections.deque[str]  # the same windows' conditions
    clean: int = 0
    anomaly: AlarmRow | None = None
    zone: str = "?"
    zone_clean: int = 0
    zone_alarm: AlarmRow | None = None
    named: str = ""  # the fault class the open anomaly episode names ("" none)


ChannelKey = tuple[str, str, str]  # (site, pump, channel)


class SavedChannel(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One channel's alarm state as the store keeps it (JSON; fields only appended)."""

    v: int = 1
    history: list[bool] = []
    clean: int = 0
    anomaly: AlarmRow | None = None
    zone: str = "?"
    zone_clean: int = 0
    zone_alarm: AlarmRow | None = None
    conditions: list[str] = []
    named: str = ""


_save = msgspec.json.Encoder().encode
_load = msgspec.json.Decoder(SavedChannel).decode


@dataclass(slots=True)
class AlarmStats:
    raised: int = 0
    cleared: int = 0
    updated: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def _anomaly_evidence(r: ResultRow) -> list[EvidenceRow]:
    """An anomaly episode's evidence: the window's score against its threshold, then the
    window's own evidence."""
    return [EvidenceRow("anomaly_score", r.anomaly_score,
                        f"threshold {r.anomaly_threshold:.3g}"), *r.evidence]


class AlarmTracker:
    """Alarm state machines for every pump channel seen (see the module docstring)."""

    def __init__(self, config: AlarmConfig) -> None:
        self.config = config
        self.stats = AlarmStats()
        self._channels: dict[tuple[str, str, str], _Channel] = {}
        self._limits: dict[tuple[str, str], tuple[float, float, float] | None] = {}

    def __len__(self) -> int:
        return len(self._channels)

    def _channel(self, site: str, pump: str, channel: str) -> _Channel:
        key = (site, pump, channel)
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = self._fresh()
        return ch

    def _fresh(self) -> _Channel:
        n = self.config.window_n
        return _Channel(collections.deque(maxlen=n), collections.deque(maxlen=n))

    def _zone_limits(self, site: str, pump: str) -> tuple[float, float, float] | None:
        key = (site, pump)
        if key not in self._limits:
            self._limits[key] = next(
                (z.limits for z in self.config.zone_limits if z.matches(site, pump)), None
            )
        return self._limits[key]

    def evaluate(
        self, rows: Sequence[ResultRow], states: Mapping[ChannelKey, str | None]
    ) -> tuple[dict[ChannelKey, str], list[AlarmRow]]:
        """The store's hook (see the module docstring): saved states in, new states and
        alarm writes out. A missing or unreadable state starts the channel afresh."""
        n = self.config.window_n
        for key, text in states.items():
            saved = None
            if text:
                try:
                    saved = _load(text)
                except msgspec.DecodeError:
                    saved = None
            if saved is None:
                self._channels[key] = self._fresh()
                continue
            self._channels[key] = _Channel(
                collections.deque(saved.history[-n:], maxlen=n),
                collections.deque(saved.conditions[-n:], maxlen=n), clean=saved.clean,
                anomaly=saved.anomaly, zone=saved.zone, zone_clean=saved.zone_clean,
                zone_alarm=saved.zone_alarm, named=saved.named,
            )
        alarms = self.observe(rows)
        out: dict[ChannelKey, str] = {}
        for key in {(r.site, r.pump, r.channel) for r in rows}:
            ch = self._channels[key]
            out[key] = _save(SavedChannel(
                history=list(ch.history), clean=ch.clean, anomaly=ch.anomaly, zone=ch.zone,
                zone_clean=ch.zone_clean, zone_alarm=ch.zone_alarm,
                conditions=list(ch.conditions), named=ch.named,
            )).decode()
        return out, alarms

    def restore(self, open_alarms: Iterable[AlarmRow]) -> None:
        """Adopt episodes still raised in the store (after a restart), to clear them later."""
        for a in open_alarms:
            if a.state != "raised" or a.channel is None:
                continue
            ch = self._channel(a.site, a.pump, a.channel)
            if a.kind == "anomaly":
                ch.anomaly = a
            elif a.kind == "iso_zone":
                ch.zone_alarm = a
                ch.zone = str(self.config.zone_alarm_at or "?")

    def observe(self, rows: Sequence[ResultRow]) -> list[AlarmRow]:
        """Feed result rows; the alarm rows to upsert (raised, updated or cleared), in order."""
        if not self.config.enabled:
            return []
        out: list[AlarmRow] = []
        for r in sorted(rows, key=lambda r: (r.site, r.pump, r.channel, r.t0_ns)):
            ch = self._channel(r.site, r.pump, r.channel)
            if r.condition == SENSOR_FAULT:  # the chain is broken: no machine evidence either way
                continue
            a = self._anomaly(ch, r)
            if a is not None:
                out.append(a)
            if self.config.zone_alarm_at is not None:
                z = self._zone(ch, r)
                if z is not None:
                    out.append(z)
        for a in out:
            self.stats.by_kind[a.kind] = self.stats.by_kind.get(a.kind, 0) + 1
        return out

    # -- state machines ----------------------------------------------------------------------

    def _anomaly(self, ch: _Channel, r: ResultRow) -> AlarmRow | None:
        cfg = self.config
        ch.history.append(r.anomalous)
        ch.conditions.append(r.condition)
        if ch.anomaly is None:
            hits = sum(ch.history)
            if hits < cfg.raise_k:
                return None
            ch.clean = 0
            ch.named = "" if r.condition in UNNAMED else r.condition
            ch.anomaly = AlarmRow(
                id=f"{r.pump}:{r.channel}:anomaly:{r.t0_ns}", site=r.site, pump=r.pump,
                channel=r.channel, kind="anomaly", state="raised", raised_ns=r.t0_ns,
                reason=(
                    f"{hits} of the last {len(ch.history)} windows anomalous (score "
                    f"{r.anomaly_score:.3g} vs threshold {r.anomaly_threshold:.3g}, "
                    f"{r.baseline} baseline; condition {r.condition})"
                ),
                evidence=_anomaly_evidence(r),
            )
            self.stats.raised += 1
            return ch.anomaly
        ch.clean = 0 if r.anomalous else ch.clean + 1
        if ch.clean >= cfg.clear_m:
            episode, ch.anomaly = ch.anomaly, None
            ch.history.clear()
            ch.conditions.clear()
            ch.clean = 0
            ch.named = ""
            self.stats.cleared += 1
            return msgspec.structs.replace(
                episode, state="cleared", cleared_ns=r.t0_ns, updated_ns=0,
                reason=f"{episode.reason}; cleared after {cfg.clear_m} clean windows",
            )
        return self._diagnosis(ch, r)

    def _diagnosis(self, ch: _Channel, r: ResultRow) -> AlarmRow | None:
        """The open anomaly episode rewritten when the windows name another fault class
        (see the module docstring), else None."""
        cfg = self.config
        if r.condition in UNNAMED or r.condition == ch.named or ch.anomaly is None:
            return None
        votes = sum(c == r.condition for c in ch.conditions)
        if votes < cfg.raise_k:
            return None
        ch.named = r.condition
        raised = ch.anomaly.reason.split("; diagnosis ", 1)[0]
        ch.anomaly = msgspec.structs.replace(
            ch.anomaly, updated_ns=0,
            reason=(f"{raised}; diagnosis {r.condition} ({votes} of the last "
                    f"{len(ch.conditions)} windows)"),
            evidence=_anomaly_evidence(r),
        )
        self.stats.updated += 1
        return ch.anomaly

    def _zone(self, ch: _Channel, r: ResultRow) -> AlarmRow | None:
        cfg = self.config
        assert cfg.zone_alarm_at is not None
        limits = self._zone_limits(r.site, r.pump)
        zone = zone_of(r.velocity_rms, limits) if limits is not None else r.iso_zone
        if zone not in ZONES:
            return None
        previous, ch.zone = ch.zone, zone
        at = ZONES.index(cfg.zone_alarm_at)
        limit_note = f"limits {limits} mm/s (consumer config)" if limits else "asset limits"
        evidence = [EvidenceRow("velocity_rms", r.velocity_rms, f"mm/s, zone {zone}, "
                                f"{limit_note}")]
        if ZONES.index(zone) >= at:
            ch.zone_clean = 0
            if ch.zone_alarm is None:
                ch.zone_alarm = AlarmRow(
                    id=f"{r.pump}:{r.channel}:iso_zone:{r.t0_ns}", site=r.site, pump=r.pump,
                    channel=r.channel, kind="iso_zone", state="raised", raised_ns=r.t0_ns,
                    reason=(f"ISO 20816 zone {previous} -> {zone} "
                            f"(velocity RMS {r.velocity_rms:.2f} mm/s)"),
                    evidence=evidence,
                )
                self.stats.raised += 1
                return ch.zone_alarm
            if zone != previous and previous in ZONES:
                ch.zone_alarm = msgspec.structs.replace(
                    ch.zone_alarm, updated_ns=0, evidence=evidence,
                    reason=(f"ISO 20816 zone {previous} -> {zone} "
                            f"(velocity RMS {r.velocity_rms:.2f} mm/s)"),
                )
                self.stats.updated += 1
                return ch.zone_alarm
            return None
        if ch.zone_alarm is None:
            return None
        ch.zone_clean += 1
        if ch.zone_clean < cfg.zone_clear_m:
            return None
        episode, ch.zone_alarm = ch.zone_alarm, None
        ch.zone_clean = 0
        self.stats.cleared += 1
        return msgspec.structs.replace(
            episode, state="cleared", cleared_ns=r.t0_ns, updated_ns=0, evidence=evidence,
            reason=(f"{episode.reason}; back in zone {zone} for {cfg.zone_clear_m} windows "
                    f"(velocity RMS {r.velocity_rms:.2f} mm/s)"),
        )
