"""End-to-end confirmation against real processes: a real edge agent (spool, publisher,
paho transport), a real Mosquitto, the real model server process, the consumer and SQLite.

Each test makes the broker lose acknowledged reports (or keep them from the consumers)
in one of the ways DESIGN.md names, and checks that every report is still stored exactly
once -- because the edge keeps what the cloud has not confirmed and publishes it again --
and that the agent's spool ends empty (everything confirmed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import dsp
from edge.agent import Agent
from edge.sources import synthetic_source
from tests.edge._helpers import build, edge_config
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto, granting_acl
from tests.infra.pipeline import Publisher, consumer_config, encoded_reports
from tests.test_consumer_pipeline import assert_exactly_once, running_consumer, stored

CONFIRM_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


class RunningAgent:
    """An :class:`Agent` on its own thread, exiting once every report is confirmed."""

    def __init__(self, tmp_path: Path, port: int, root: str, *, device: str, seconds: float,
                 pace: float = 10.0, drain_timeout_s: float | None = None,
                 username: str | None = None) -> None:
        mqtt_extra: dict[str, Any] = {"confirm": True, "confirm_timeout_s": CONFIRM_TIMEOUT_S,
                                      "topic_prefix": root}
        if username is not None:
            mqtt_extra["username"] = username
        d = edge_config(tmp_path, port, channels=4, device=device,
                        source={"duration_s": seconds, "pace": pace}, mqtt_extra=mqtt_extra)
        self.cfg = build(d)
        self.agent = Agent(self.cfg, synthetic_source(self.cfg), exit_when_drained=True,
                           overflow="block", drain_timeout_s=drain_timeout_s)
        self.stop = threading.Event()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.agent.run(self.stop)

    def start(self) -> RunningAgent:
        self.thread.start()
        return self

    async def wait(self, within_s: float) -> int | None:
        await asyncio.to_thread(self.thread.join, within_s)
        if self.thread.is_alive():
            st = self.agent.status()
            self.stop.set()
            await asyncio.to_thread(self.thread.join, 20)
            raise AssertionError(f"agent still has reports after {within_s} s: {st['spool']}")
        return self.code

    def identities(self) -> set[tuple[str, int, int]]:
        return {(self.cfg.device, self.agent.epoch, s) for s in range(self.agent.builder.seq)}


async def until(pred: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def all_published(run: RunningAgent) -> Callable[[], bool]:
    """The source has ended and the broker PUBACKed everything (nothing in flight)."""
    a = run.agent
    return lambda: a._compute_done.is_set() and a.publisher.inflight_messages == 0 and (
        a.spool.pending == 0)


async def test_broker_sigkill_with_a_long_autosave_window_loses_nothing(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """Mosquitto saves every 60 s: SIGKILLed, it forgets what it PUBACKed and still held for
    the consumers. The edge publishes the unconfirmed reports again."""
    broker = mosquitto_factory(autosave_interval=60).start()
    root = "e2ekill"
    db = tmp_path / "r.db"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root)
    async with running_consumer(cfg):  # registers the consumer's persistent session
        pass
    run = RunningAgent(tmp_path, broker.port, root, device="gw-kill", seconds=20).start()
    # the consumers are away: the broker PUBACKs and queues everything for their session
    await until(all_published(run), 60, "the agent to publish everything")
    assert run.agent.spool.stats.unconfirmed + run.agent.spool.stats.republished > 0
    broker.kill()  # SIGKILL: the queue was never saved
    broker.start()
    async with running_consumer(cfg) as consumer:
        assert await run.wait(60) == 0
        stats = consumer.stats()
    expected = run.identities()
    assert len(expected) == 80
    assert_exactly_once(db, expected)
    sp = run.agent.spool.stats
    assert sp.republished > 0 and sp.records == 0 and sp.confirmed >= 80
    assert stats["counters"]["confirmations_sent"] > 0


async def test_consumer_group_offline_past_its_session_expiry_loses_nothing(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """The consumers' session expires (like AWS IoT's, 1 h by default) while they are away:
    the broker drops what it queued for them. Re-publication fills the hole."""
    broker = mosquitto_factory().start()
    root = "e2eexpiry"
    db = tmp_path / "r.db"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, mqtt={"session_expiry_s": 1})
    async with running_consumer(cfg):
        pass
    run = RunningAgent(tmp_path, broker.port, root, device="gw-exp", seconds=20).start()
    await until(all_published(run), 60, "the agent to publish everything")
    await asyncio.sleep(2.0)  # past the session expiry: the queued reports are gone
    async with running_consumer(cfg) as consumer:
        assert consumer._mqtt is not None and not consumer._mqtt.stats.session_present
        assert await run.wait(60) == 0
    assert_exactly_once(db, run.identities())
    assert run.agent.spool.stats.republished > 0


async def test_a_device_in_the_consumers_shared_group_cannot_black_hole_reports(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """A client that may not read reports joins ``$share/{group}/...``: the broker deals it
    its round-robin share and drops it. Nothing is lost.

    The perimeter (issue 18: dynamic security) now refuses that SUBSCRIBE, so this test
    simulates a broker that still grants it: Mosquitto 2.0.11 with a plain ``acl_file``,
    which grants every SUBSCRIBE and withholds what the ACL forbids (the loss the
    confirmations must repair whatever the broker does)."""
    root = "e2eshare"
    broker = mosquitto_factory(acl=granting_acl(root)).start()
    db = tmp_path / "r.db"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, mqtt={"username": "consumer"})
    granted: list[bool] = []
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-intruder",
                           protocol=mqtt.MQTTv5)
    intruder.username_pw_set("gw-intruder")
    intruder.on_subscribe = lambda _c, _u, _m, rcs, _p: granted.extend(
        not r.is_failure for r in rcs)
    intruder.connect("127.0.0.1", broker.port)
    intruder.loop_start()
    intruder.subscribe(f"$share/g1/{root}/devices/+/reports", qos=1)
    try:
        await until(lambda: bool(granted), 10, "the intruder's SUBACK")
        async with running_consumer(cfg) as consumer:
            run = RunningAgent(tmp_path, broker.port, root, device="gw-share", seconds=20,
                               username="gw-share").start()
            assert await run.wait(90) == 0
            stats = consumer.stats()
    finally:
        intruder.loop_stop()
        intruder.disconnect()
    assert_exactly_once(db, run.identities())
    # the hole was real: reports were dealt to the intruder and had to go out again
    assert run.agent.spool.stats.republished > 0
    assert stats["counters"]["already_stored"] >= 0


async def test_edge_restarted_with_a_new_epoch_while_old_reports_are_unconfirmed(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """The agent stops with every report unconfirmed; the confirmations are published while
    it is offline (its persistent session keeps them); it restarts with a new epoch and
    the same spool: the old epoch is settled, the new one delivered, each stored once."""
    broker = mosquitto_factory().start()
    root = "e2erestart"
    db = tmp_path / "r.db"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root)
    async with running_consumer(cfg):
        pass
    first = RunningAgent(tmp_path, broker.port, root, device="gw-rst", seconds=10,
                         drain_timeout_s=0.5).start()
    assert await first.wait(60) == 0
    assert first.agent.spool.stats.records == 40  # nothing confirmed: no consumer ran
    old = first.identities()
    assert len(old) == 40
    async with running_consumer(cfg) as consumer:  # confirms to a device that is away
        await until(lambda: len(stored(db)) >= 40, 30, "the first epoch's rows")
        await until(lambda: consumer.counters.confirmations_sent > 0, 10, "confirmations")
        second = RunningAgent(tmp_path, broker.port, root, device="gw-rst", seconds=10)
        assert second.agent.spool.stats.recovered == 40  # all still unconfirmed
        second.start()
        assert await second.wait(60) == 0
    assert second.agent.epoch != first.agent.epoch
    assert_exactly_once(db, old | second.identities())
    assert second.agent.publisher.stats.confirmations > 0
    assert second.agent.spool.stats.records == 0


async def test_a_loss_nobody_repairs_is_reported_as_a_gap(
    mosquitto_factory: Callable[..., Mosquitto], model_server: ModelServerProcess,
    tmp_path: Path,
) -> None:
    """A publisher without a spool (no re-publication) skips seq 10..14: once the grace
    period is over the consumer reports the hole (stats, log), never silently."""
    broker = mosquitto_factory().start()
    root = "e2egap"
    db = tmp_path / "r.db"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root,
                          confirm={"gap_grace_s": 0.2, "gap_check_interval_s": 0.2})
    seqs = [*range(10), *range(15, 20)]
    async with running_consumer(cfg) as consumer:
        with Publisher("127.0.0.1", broker.port, "pub-gap") as pub:
            await asyncio.to_thread(pub.publish_all, f"{root}/devices/gw-gap/reports",
                                    [dsp.encode_batch("gw-gap", encoded_reports(
                                        "gw-gap", 3, [s])) for s in seqs])
        await until(lambda: consumer.stats()["gaps"]["reports"] == 5, 20, "the gap")
        (g,) = consumer.gaps
        assert (g.device, g.epoch, g.first, g.last) == ("gw-gap", 3, 10, 14)

