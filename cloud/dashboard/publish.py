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
TLS, reconnects and the persistent session behave the same.

Nothing is lost while the broker is down: the store is the outbox (:mod:`.outbox`).
Every stored change is pending until its PUBACK; this adapter's loop reads the pending
changes, hands them to the connection in order (on every (re)connect, after each change
and every :data:`OUTBOX_POLL_S`) and marks each published on its PUBACK. A publish never
undoes or delays the stored change; the API's answer says whether it was handed to a
connected broker right away (``published``; false: it waits in the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cloud.consumer import topics
from cloud.consumer._queue import Handoff
from cloud.consumer.config import MqttConfig, read_toml
from cloud.consumer.errors import ConfigError
from cloud.consumer.mqtt import Delivery, MqttSource
from cloud.store import AlarmEvent, Store
from dsp.config import load

from .outbox import Outbox, OutboxStats, key_of

log = logging.getLogger(__name__)
DEFAULT_CLIENT_ID = "pumpwatch-dashboard"
OUTBOX_WINDOW = 20  # changes handed to the broker and not yet acknowledged, at most
OUTBOX_MAX_PENDING = 10_000  # pending changes kept for publishing; the oldest dropped beyond
OUTBOX_MAX_AGE_S = 7 * 86_400.0  # a change pending longer is dropped (AWS IoT's session max)
OUTBOX_POLL_S = 1.0  # the outbox is also read this often (other dashboards' changes, retries)


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


class AlarmPublisher:
    """Owns one publish-only MQTT connection and the outbox loop; ``start`` inside the event
    loop. ``store``: the writable store (the outbox's pending changes and their marks)."""

    def __init__(self, config: MqttConfig, store: Callable[[], Awaitable[Store]], *,
                 window: int = OUTBOX_WINDOW, max_pending: int = OUTBOX_MAX_PENDING,
                 max_age_s: float = OUTBOX_MAX_AGE_S, poll_s: float = OUTBOX_POLL_S) -> None:
        self.config = config
        self.outbox = Outbox(window=window)
        self.max_pending = max_pending
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self.errors = 0  # outbox rounds that failed (store unreachable, ...): retried
        self._store = store
        self._source: MqttSource | None = None
        self._generation = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one round at a time (the loop's and the API's)

    @property
    def stats(self) -> OutboxStats:
        return self.outbox.stats

    @property
    def connected(self) -> asyncio.Event | None:
        return None if self._source is None else self._source.connected

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        handoff: Handoff[Delivery] = Handoff(1, loop)  # publish-only: nothing arrives
        self._source = MqttSource(self.config, handoff, publish_only=True,
                                  on_puback=self._on_puback)
        self._source.start()
        self._task = loop.create_task(self._run(), name="dashboard-alarm-outbox")
        log.info("alarm changes published to %s:%s as %s", self.config.host, self.config.port,
                 self.config.client_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:  # PUBACKs not yet marked: else the next start publishes them again
            async with asyncio.timeout(2.0):
                await self._write_marks(await self._store(), time.time_ns())
        except Exception as exc:
            log.warning("alarm outbox: marks not written at stop (published again on the "
                        "next start): %s", exc)
        if self._source is not None:
            await asyncio.to_thread(self._source.stop)
            self._source = None

    async def publish(self, event: AlarmEvent) -> bool:
        """A change was just stored: run a round now; whether it is handed to a connected
        broker (False: it waits in the outbox for the next connection)."""
        await self.step()
        return self.outbox.handed_over(key_of(event))

    def _on_puback(self, mid: int, ok: bool, reason: str) -> None:
        key = self.outbox.acked(mid, ok)
        if key is not None and not ok:
            log.error("alarm change %s of %s refused by the broker: %s", key[1], key[0], reason)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the round: a PUBACK during it wakes the next one
            try:
                await self.step()
            except Exception as exc:  # the store or the broker: logged, retried next round
                self.errors += 1
                log.error("alarm outbox round failed (retrying): %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def step(self, *, now_ns: int | None = None) -> None:
        """One outbox round: write the marks, bound the outbox, read what is pending,
        follow the connection, hand over what the outbox allows."""
        async with self._lock:
            await self._step(await self._store(),
                             time.time_ns() if now_ns is None else now_ns)

    async def _write_marks(self, store: Store, now: int) -> None:
        for outcome, keys in self.outbox.marks().items():
            await store.mark_alarm_events(keys, outcome=outcome, at_ns=now)
            self.outbox.marked(keys)

    async def _step(self, store: Store, now: int) -> None:
        ob = self.outbox
        await self._write_marks(store, now)
        # Reads only, unless there is something to write: on SQLite every write takes the
        # database's one write lock, which the consumer's commits need.
        cutoff = now - int(self.max_age_s * 1e9)
        depth, oldest = await store.alarm_outbox_depth()
        if depth > self.max_pending or (oldest is not None and oldest < cutoff):
            old, over = await store.drop_alarm_outbox(
                older_than_ns=cutoff, max_pending=self.max_pending, at_ns=now)
            for reason, n in (("age", old), ("over_bound", over)):
                if n:
                    ob.dropped(reason, n)
                    log.error("alarm outbox: %d change(s) dropped unpublished (%s; bounds: "
                              "%d pending, %.0f s)", n, reason, self.max_pending,
                              self.max_age_s)
            depth, oldest = await store.alarm_outbox_depth()
        pending = await store.alarm_outbox(limit=2 * ob.window) if depth else []
        ob.load(pending, depth=depth, oldest_ns=oldest)
        src = self._source
        up = src is not None and src.stats.connected
        if up and src is not None and src.generation != self._generation:
            self._generation = src.generation
            ob.connected()
        elif not up and ob.connected_now:
            ob.disconnected()
        batch = ob.take()
        for i, entry in enumerate(batch):
            alarm, event = entry
            if not (topics.topic_safe(alarm.site) and topics.topic_safe(alarm.pump)):
                log.error("alarm change of %s not published: site/pump outside the name "
                          "rule", alarm.id)
                ob.refuse(entry)
                continue
            mid = None if src is None else src.publish_tracked(
                topics.alarms_topic(self.config.topic_root, alarm.site, alarm.pump),
                topics.alarm_message(alarm, event))
            if mid is None:
                ob.unhanded(batch[i:])
                break
            ob.handed(entry, mid)
        if ob.marks():
            self._wake.set()  # refused names: mark them in the next round


__all__ = ["DEFAULT_CLIENT_ID", "OUTBOX_MAX_AGE_S", "OUTBOX_MAX_PENDING", "OUTBOX_WINDOW",
           "AlarmPublisher", "load_mqtt_config", "mqtt_config"]
