"""The dashboard's MQTT publisher: operators' alarm lifecycle changes on the result topics.

Every change an operator makes to an asset alarm (``POST /api/alarms/{id}/ack|assign|
close``) is stored first (:meth:`cloud.store.Store.change_alarm`, with who and when),
then published QoS 1, not retained, on the pump's alarm topic
``{root}/sites/{site}/pumps/{pump}/alarms`` (:func:`cloud.consumer.topics.alarms_topic`,
the consumer's own vocabulary): the asset alarm after the change and the stored change
as ``event`` (:class:`cloud.consumer.topics.AlarmChangeMessage`).

Optional: off unless the dashboard is given an ``[mqtt]`` section
(``pumpwatch dashboard --mqtt-config FILE``: the consumer's ``[mqtt]`` keys; its own
``client_id``, default ``pumpwatch-dashboard``, and certificate with the ``dashboard``
role, which may publish on the alarm topics and nothing else). The connection is the
consumer's MQTT adapter (:class:`cloud.consumer.mqtt.MqttSource`, publish-only), so
TLS, reconnects and the persistent session behave the same. The store is the record: a
publish that fails (broker down, refused, a name outside the name rule) is logged and
counted, never retried, and never undoes or delays the stored change; the API's answer
says whether it was handed to the broker (``published``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.consumer import topics
from cloud.consumer._queue import Handoff
from cloud.consumer.config import MqttConfig, read_toml
from cloud.consumer.errors import ConfigError
from cloud.consumer.mqtt import Delivery, MqttSource
from cloud.store import AlarmEvent, AlarmRow
from dsp.config import load

log = logging.getLogger(__name__)
DEFAULT_CLIENT_ID = "pumpwatch-dashboard"


def mqtt_config(data: dict[str, Any], *, source: str = "dashboard config") -> MqttConfig:
    """The publisher's ``[mqtt]`` from a config dict (only that section is allowed; the
    client id defaults to :data:`DEFAULT_CLIENT_ID`, never the consumer's)."""
    unknown = sorted(set(data) - {"mqtt"})
    if unknown:
        raise ConfigError([f"unknown section(s) {unknown}: the dashboard reads [mqtt] only"],
                          source=source)
    section = dict(data.get("mqtt") or {})
    section.setdefault("client_id", DEFAULT_CLIENT_ID)
    try:
        return load(section, MqttConfig, source=source)
    except ValueError as exc:  # dsp.config.InvalidConfigError
        raise ConfigError(getattr(exc, "problems", [str(exc)]), source=source) from None


def load_mqtt_config(path: str | Path) -> MqttConfig:
    return mqtt_config(read_toml(path), source=str(path))


@dataclass(slots=True)
class PublisherStats:
    published: int = 0  # handed to the broker connection (QoS 1)
    failed: int = 0  # not connected, refused by paho, or an error building it
    refused_names: int = 0  # a site or pump outside the name rule: no topic built


class AlarmPublisher:
    """Owns one publish-only MQTT connection; ``start`` inside the event loop."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.stats = PublisherStats()
        self._source: MqttSource | None = None

    @property
    def connected(self) -> asyncio.Event | None:
        return None if self._source is None else self._source.connected

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        handoff: Handoff[Delivery] = Handoff(1, loop)  # publish-only: nothing arrives
        self._source = MqttSource(self.config, handoff, publish_only=True)
        self._source.start()
        log.info("alarm changes published to %s:%s as %s", self.config.host, self.config.port,
                 self.config.client_id)

    def stop(self) -> None:
        if self._source is not None:
            self._source.stop()
            self._source = None

    def publish(self, alarm: AlarmRow, event: AlarmEvent) -> bool:
        """Publish one stored change; False (logged, counted) if it was not handed over."""
        if not (topics.topic_safe(alarm.site) and topics.topic_safe(alarm.pump)):
            self.stats.refused_names += 1
            log.error("alarm change of %s not published: site/pump outside the name rule",
                      alarm.id)
            return False
        source = self._source
        try:
            ok = source is not None and source.publish(
                topics.alarms_topic(self.config.topic_root, alarm.site, alarm.pump),
                topics.alarm_message(alarm, event))
        except Exception as exc:  # a side effect of a stored change: never its failure
            log.error("alarm change %s of %s not published: %s", event.action, alarm.id, exc)
            ok = False
        if ok:
            self.stats.published += 1
        else:
            self.stats.failed += 1
            log.warning("alarm change %s of %s by %s stored but not published (broker "
                        "not connected)", event.action, alarm.id, event.actor)
        return ok


__all__ = ["DEFAULT_CLIENT_ID", "AlarmPublisher", "PublisherStats", "load_mqtt_config",
           "mqtt_config"]
