"""Result topics for dashboards: what the consumer publishes after each commit.

* ``{root}/sites/{site}/pumps/{pump}/condition`` -- retained, QoS 1: the pump's
  latest state, one entry per channel (the newest window this consumer has
  committed for it). A dashboard subscribing gets the whole fleet's current
  state at once from the retained messages.
* ``{root}/sites/{site}/pumps/{pump}/alarms`` -- not retained, QoS 1: every
  alarm write (raised, zone change, cleared; the pump's asset alarm with each of
  its episodes), the same JSON as the store's ``alarms`` row and the dashboard's
  ``Alarm``; and every operator's lifecycle change of an asset alarm (ack,
  assign, close with a verdict), published by the dashboard that stored it, with
  the stored change as ``event`` (who, when, what: the store's ``alarm_events``
  row) beside the alarm after it (its ``lifecycle``: status, who acknowledged,
  assignee, verdict...).
* ``{root}/acks/{device}`` -- not retained, QoS 1: confirmations of committed
  reports to the device that sent them (msgpack, :mod:`dsp.confirm`).

Topic levels are built only from names that pass the name rule
(:func:`~.validate.name_ok`); the consumer dead-letters reports with other
names before they get here.

Payloads are JSON (``"v": 1``; fields are only ever appended). Publishing
happens after the commit and before the acks; the store is the record, so a
publish lost to a disconnect is not replayed (the next window republishes the
retained state; the alarm is in the store and on the dashboard's stream).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from cloud.store import AlarmEvent, AlarmRow, ResultRow

from .validate import name_ok


class ChannelState(msgspec.Struct, frozen=True, kw_only=True):
    device: str
    epoch: int
    seq: int
    t0_ns: int
    condition: str
    probabilities: dict[str, float]
    anomaly_score: float
    anomaly_threshold: float
    anomalous: bool
    iso_zone: str
    velocity_rms: float
    rpm: float | None
    model_version: str
    stored_ns: int


class ConditionMessage(msgspec.Struct, frozen=True, kw_only=True):
    v: int = 1
    site: str
    pump: str
    channels: dict[str, ChannelState]


class AlarmMessage(msgspec.Struct, frozen=True, kw_only=True):
    v: int = 1
    alarm: AlarmRow


class AlarmChangeMessage(AlarmMessage, frozen=True, kw_only=True):
    """An operator's lifecycle change: the asset alarm after it, and the stored change."""

    event: AlarmEvent


_encode = msgspec.json.Encoder().encode


def topic_safe(name: str) -> bool:
    """Only names that pass DESIGN.md's name rule become topic levels."""
    return name_ok(name)


def acks_topic(root: str, device: str) -> str:
    """Confirmations to one device (:mod:`dsp.confirm`): cloud-written, device-read."""
    return f"{root}/acks/{device}"


def condition_topic(root: str, site: str, pump: str) -> str:
    return f"{root}/sites/{site}/pumps/{pump}/condition"


def alarms_topic(root: str, site: str, pump: str) -> str:
    return f"{root}/sites/{site}/pumps/{pump}/alarms"


class PumpStates:
    """Latest committed window per pump channel; ``update`` returns the pumps that changed."""

    def __init__(self) -> None:
        self._pumps: dict[tuple[str, str], dict[str, ChannelState]] = {}

    def update(self, rows: Iterable[ResultRow], stored_ns: int) -> list[tuple[str, str]]:
        changed: dict[tuple[str, str], None] = {}
        for r in rows:
            key = (r.site, r.pump)
            channels = self._pumps.setdefault(key, {})
            old = channels.get(r.channel)
            if old is not None and old.t0_ns > r.t0_ns:
                continue  # a late window does not replace a newer state
            channels[r.channel] = ChannelState(
                device=r.device, epoch=r.epoch, seq=r.seq, t0_ns=r.t0_ns,
                condition=r.condition, probabilities=r.probabilities,
                anomaly_score=r.anomaly_score, anomaly_threshold=r.anomaly_threshold,
                anomalous=r.anomalous, iso_zone=r.iso_zone, velocity_rms=r.velocity_rms,
                rpm=r.rpm, model_version=r.model_version, stored_ns=stored_ns,
            )
            changed[key] = None
        return list(changed)

    def message(self, site: str, pump: str) -> bytes:
        return _encode(ConditionMessage(site=site, pump=pump, channels=self._pumps[(site, pump)]))


def alarm_message(alarm: AlarmRow, event: AlarmEvent | None = None) -> bytes:
    """An alarm write (``event`` None) or an operator's change of an asset alarm."""
    if event is None:
        return _encode(AlarmMessage(alarm=alarm))
    return _encode(AlarmChangeMessage(alarm=alarm, event=event))
