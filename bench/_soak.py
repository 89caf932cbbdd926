"""The soak run of ``bench.pipeline``: mixed load and a fault schedule, with accounting.

    python -m bench.pipeline --json --soak --messages 100000 [--minutes M]

Real parts: Mosquitto (persistence on, ``autosave_interval 60``, ``max_packet_size``
128 KiB), the model server process, one ``pumpwatch cloud`` consumer process
(SQLite, confirmations on, a short MQTT session expiry), and ``--devices``
edge devices, each the edge's own :class:`~edge.spool.Spool`,
:class:`~edge.publisher.Publisher` and :class:`~edge.mqtt_paho.PahoTransport`
(confirmations on, confirm timeout 3 s; the agent's DSP is left out: reports
are pre-encoded, so the machine's cores go to the pipeline).

Load: good reports, 8 per message, until ``--messages`` messages (or
``--minutes``); plus a mixed batch of bad messages on their own device topics
(random bytes, truncated, bit-flipped, wrong-typed, spoofed, a name with a
control character, a message of 5,001 nil reports, duplicates of a good message).

Fault schedule (at fractions of the run): the broker SIGKILLed (its queue for
the consumer lost: the autosave window is 60 s) and restarted; the consumer
stopped past its session expiry and restarted; a client without read permission
subscribed into the consumers' shared group for a while (the ACL from
:mod:`pumpwatch.mosquitto_conf`).

Accounting, independent of the consumer's own counters: ``lost`` = good identities
without a result row at the end; ``duplicates_stored`` = result rows beyond one per
identity; ``unaccounted`` = bad messages with neither a dead letter (by their key)
nor a counted budget drop; ``republished`` = the devices' re-publications;
``republished_passed`` / ``republished_probed`` / ``probe_rounds``: how the
re-publish schedule chose them; ``republished_already_stored``: copies the store
already had (the consumer's ``already_stored``: re-publications it did not need, and
the broker's own redeliveries); ``gaps_reported`` = missing reports
the store's gap query still sees at the end
(``gaps_reported_good_devices``: of which in the edge devices' streams; the rest
are the holes the bad messages leave in their senders' streams);
``dead_letter_rows``; ``consumer_rss_peak_mb`` / ``broker_rss_peak_mb`` sampled
every 0.5 s (the consumer's over its restarts).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import dsp
from cloud.consumer import parse_message
from cloud.consumer._validate import message_key
from cloud.store import make_store
from edge.config import MqttConfig
from edge.mqtt_paho import PahoTransport
from edge.publisher import Publisher
from edge.spool import Spool
from edge.transport import Acked, Connected, Disconnected, Event, Message, TransportError
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto, granting_acl
from tests.infra.pipeline import (
    ConsumerProcess,
    Publisher as RawPublisher,
)
from tests.infra.pipeline import (
    consumer_config,
    encoded_reports,
    write_toml,
)

PER_MESSAGE = 8
ROOT = "soak"
CONFIRM_TIMEOUT_S = 3.0
Identity = tuple[str, int, int]


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class Device:
    """One edge device without DSP: the edge's spool, publisher and paho transport."""

    def __init__(self, name: str, work: Path, port: int, epoch: int) -> None:
        self.name = name
        self.epoch = epoch
        self.topic = f"{ROOT}/devices/{name}/reports"
        self.spool = Spool(work / f"spool-{name}", max_bytes=1 << 30, fsync=False)
        cfg = MqttConfig(host="127.0.0.1", port=port, username=name, inflight=50,
                         reconnect_min_s=0.2, reconnect_max_s=1.0, keepalive_s=10)
        self.transport = PahoTransport(cfg, client_id=name, subscribe=f"{ROOT}/acks/{name}")
        self.pub = Publisher(self.spool, name, rate=2000.0, inflight=50,
                             confirm_timeout_s=CONFIRM_TIMEOUT_S, now=time.monotonic())
        self.pub.transport_resends = self.transport.resends_inflight
        self.events: collections.deque[Event] = collections.deque()
        self.next_seq = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        self.transport.start(self.events.append)

    def feed(self, raws: list[bytes]) -> None:
        with self.lock:
            recs = [(self.epoch, self.next_seq + i, r) for i, r in enumerate(raws)]
            self.spool.append(recs, stamp_ns=time.time_ns())
            self.next_seq += len(raws)

    def step(self, now: float) -> None:
        with self.lock:
            while self.events:
                ev = self.events.popleft()
                if isinstance(ev, Acked):
                    self.pub.on_ack(ev.token, ev.ok, ev.reason, now)
                elif isinstance(ev, Message):
                    self.pub.on_confirm(ev.payload, now)
                elif isinstance(ev, Connected):
                    self.pub.on_connect(now, ev.max_packet, self.topic)
                elif isinstance(ev, Disconnected):
                    self.pub.on_disconnect(now, ev.reason)
            outs = self.pub.poll(now)
            for k, out in enumerate(outs):
                try:
                    token = self.transport.publish(self.topic, out.payload)
                except TransportError:
                    for rest in outs[k:]:
                        self.pub.requeue(rest)
                    break
                self.pub.sent(out, token)

    @property
    def drained(self) -> bool:
        return self.spool.stats.records == 0

    def close(self) -> None:
        self.transport.stop()
        self.spool.close()


def bad_messages(seed: int) -> list[tuple[str, bytes]]:
    """The mixed load's bad part (and two duplicates of a good message)."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []

    def topic(dev: str) -> str:
        return f"{ROOT}/devices/{dev}/reports"

    for i in range(40):
        dev = f"bad-{i % 8}"
        batch = dsp.encode_batch(dev, encoded_reports(dev, 77, range(i * 4, i * 4 + 4)))
        kind = i % 8
        if kind == 0:
            out.append((topic(dev), rng.randbytes(rng.randrange(1, 4000))))
        elif kind == 1:
            out.append((topic(dev), batch[: rng.randrange(1, len(batch) - 1)]))
        elif kind == 2:
            b = bytearray(batch)
            for _ in range(3):
                b[rng.randrange(min(len(b), 24))] ^= 1 << rng.randrange(8)
            out.append((topic(dev), bytes(b)))
        elif kind == 3:
            out.append((topic(dev), msgspec.msgpack.encode({"v": 1, "device": dev,
                                                            "reports": [1, "x", None]})))
        elif kind == 4:
            out.append((topic(dev), dsp.encode_batch("someone-else", [])))
        elif kind == 5:
            r = dsp.decode_report(encoded_reports(dev, 78, [i])[0])
            evil = dsp.encode_report(msgspec.structs.replace(r, pump="p\x12"))
            out.append((topic(dev), dsp.encode_batch(dev, [evil])))
        elif kind == 6:
            out.append((topic(dev), dsp.encode_batch(dev, [msgspec.msgpack.encode(None)] * 5001)))
        else:
            out.append((topic(dev), dsp.encode_batch(dev, [bytes([0xc1])] * 3)))
    return out


def soak_run(*, work: Path, messages: int, minutes: float | None, devices: int,
             say: Callable[[str], None], rate: float = 150.0) -> dict[str, Any]:
    # the bad part of the mixed load comes from one identity allowed to write any device's
    # topic (a compromised gateway would be limited to its own; the consumer cannot tell)
    acl = granting_acl(ROOT) + f"\nuser soak-bad\ntopic write {ROOT}/devices/#\n"
    broker = Mosquitto(work / "mosquitto", autosave_interval=60, max_inflight_messages=1000,
                       max_packet_size=131072, acl=acl,
                       log_types=("error", "warning"))
    db = work / "soak.db"
    peaks = {"consumer": 0.0, "broker": 0.0}
    consumer_stats: list[dict[str, Any]] = []
    with broker, ModelServerProcess() as server:
        cfg = consumer_config(
            broker_port=broker.port, endpoint_url=server.url, db=db, topic_root=ROOT,
            client_id="soak-consumer", group="g1",
            mqtt={"username": "consumer", "session_expiry_s": 2},
            batch={"max_size": 128, "max_delay_ms": 50},
            store={"synchronous": "normal"},
            consumer={"stats_interval_s": 0, "drain_timeout_s": 10.0},
            confirm={"gap_grace_s": 30.0, "gap_check_interval_s": 0},
        )
        toml = write_toml(work / "consumer.toml", cfg)
        log_path = work / "consumer.log"
        consumer = ConsumerProcess(toml, log_path).start()

        def consumer_connected(n: int) -> bool:
            return log_path.read_text(errors="replace").count("mqtt connected") >= n

        _wait(lambda: consumer_connected(1), 30)
        time.sleep(0.5)

        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(0.5):
                cp = consumer.proc.pid if consumer.running and consumer.proc else None
                peaks["consumer"] = max(peaks["consumer"], rss_mb(cp))
                bp = broker.proc.pid if broker.proc is not None else None
                peaks["broker"] = max(peaks["broker"], rss_mb(bp))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        # -- the bad part of the mixed load, first (no fault may eat it: no re-publication)
        bad = bad_messages(0)
        expected_ok: set[Identity] = set()
        expected_dead: set[bytes] = set()
        for t, p in bad:
            parsed = parse_message(t, p, root=ROOT, max_payload=128 * 1024, received_ns=0)
            expected_ok |= {a.identity for a in parsed.accepted}
            if parsed.dead:
                expected_dead.add(message_key(t, p))
        with RawPublisher("127.0.0.1", broker.port, "soak-bad", username="soak-bad") as raw:
            for t, p in bad:
                raw.publish(t, p)
            dup_dev = "bad-dup"
            dup = dsp.encode_batch(dup_dev, encoded_reports(dup_dev, 79, range(8)))
            raw.publish_all(f"{ROOT}/devices/{dup_dev}/reports", [dup, dup])
        expected_ok |= {(dup_dev, 79, s) for s in range(8)}
        _wait(lambda: _dead_keys(db) >= expected_dead, 60)

        # -- the good load, with the fault schedule
        devs = [Device(f"gw-{i:02d}", work, broker.port, epoch=5000 + i) for i in range(devices)]
        for d in devs:
            d.start()
        total_msgs = messages
        deadline = time.monotonic() + minutes * 60 if minutes else None
        sent = 0
        faults_done: list[str] = []
        intruder: mqtt.Client | None = None
        tpl = [dsp.decode_report(t) for t in encoded_reports("tpl", 0, range(4))]
        stepping = threading.Event()

        def step_loop() -> None:
            while not stepping.is_set():
                now = time.monotonic()
                for d in devs:
                    d.step(now)
                time.sleep(0.005)

        stepper = threading.Thread(target=step_loop, daemon=True)
        stepper.start()
        t0 = time.monotonic()
        while True:
            frac = (time.monotonic() - t0) / (minutes * 60) if minutes else sent / total_msgs
            if (deadline and time.monotonic() >= deadline) or (not deadline and sent >= total_msgs):
                break
            d = devs[sent % len(devs)]
            seq0 = d.next_seq
            raws = [dsp.encode_report(msgspec.structs.replace(
                tpl[(seq0 + k) % 4], device=d.name, epoch=d.epoch, seq=seq0 + k,
                pump=f"{d.name}-p{(seq0 + k) % 4}", t0_ns=1_700_000_000_000_000_000
                + (seq0 + k) * 10**9)) for k in range(PER_MESSAGE)]
            d.feed(raws)
            sent += 1
            if sent % 2000 == 0:
                say(f"{sent} messages offered; consumer rss {peaks['consumer']:.0f} MB")
            # fault schedule
            if frac >= 0.25 and "broker_kill" not in faults_done:
                faults_done.append("broker_kill")
                say("fault: broker SIGKILL (autosave 60 s) and restart")
                broker.kill()
                broker.start()
            if frac >= 0.5 and "consumer_expiry" not in faults_done:
                faults_done.append("consumer_expiry")
                say("fault: consumer stopped past its 2 s session expiry")
                n_before = log_path.read_text(errors="replace").count("mqtt connected")
                consumer.stop(30)
                consumer_stats.append(_final_stats(log_path))
                time.sleep(4.0)
                consumer.start()
                _wait(functools.partial(consumer_connected, n_before + 1), 30)
            if frac >= 0.65 and intruder is None:
                say("fault: a device subscribes into the consumers' shared group")
                intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-intruder",
                                       protocol=mqtt.MQTTv5)
                intruder.username_pw_set("gw-intruder")
                intruder.connect("127.0.0.1", broker.port)
                intruder.loop_start()
                intruder.subscribe(f"$share/g1/{ROOT}/devices/+/reports", qos=1)
            if frac >= 0.8 and intruder is not None and "intruder" not in faults_done:
                faults_done.append("intruder")
                intruder.loop_stop()
                intruder.disconnect()
            target = t0 + sent / rate  # messages offered per second across the fleet
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        offered_s = time.monotonic() - t0
        say(f"offered {sent} messages in {offered_s:.0f} s; draining (all confirmed)")
        _wait(lambda: all(d.drained for d in devs), 900)
        stepping.set()
        stepper.join(5)
        drained_s = time.monotonic() - t0
        republished = sum(d.spool.stats.republished for d in devs)
        sched = [d.spool.schedule.stats for d in devs]
        undrained = sum(d.spool.stats.records for d in devs)
        dropped = sum(d.spool.stats.dropped for d in devs)
        good_ids = {(d.name, d.epoch, s) for d in devs for s in range(d.next_seq)}
        for d in devs:
            d.close()
        consumer.stop(30)
        consumer_stats.append(_final_stats(log_path))
        stop_sampling.set()
        sampler.join(2)
        rows = _result_ids(db)
        distinct = set(rows)
        lost = len(good_ids - distinct) + len(expected_ok - distinct)
        duplicates = len(rows) - len(distinct)
        dead_keys = _dead_keys(db)
        dl_dropped = sum(s["counters"].get("dead_letters_dropped", 0) for s in consumer_stats)
        unaccounted = max(0, len(expected_dead - dead_keys) - dl_dropped)
        gaps = asyncio.run(_gaps(db))
        good_devices = {d.name for d in devs}
        gaps_good = sum(n for dev, n in gaps.items() if dev in good_devices)
        return {
            "messages": sent, "reports": len(good_ids), "devices": devices,
            "offered_messages_per_s": rate,
            "offered_s": round(offered_s, 1), "drained_s": round(drained_s, 1),
            "lost": lost, "duplicates_stored": duplicates, "unaccounted": unaccounted,
            "republished": republished, "gaps_reported": sum(gaps.values()),
            # of which: passed over by the confirmations / sent as probes in silent rounds
            # (edge/republish.py); copies the store already had (unneeded, or redelivered)
            "republished_passed": sum(x.passed for x in sched),
            "republished_probed": sum(x.probed for x in sched),
            "probe_rounds": sum(x.rounds for x in sched),
            "republished_already_stored": sum(s["counters"].get("already_stored", 0)
                                              for s in consumer_stats),
            # of which in the edge devices' streams (the rest: holes the bad messages left in
            # their senders' streams, e.g. truncated batches -- real, and reported)
            "gaps_reported_good_devices": gaps_good,
            "dead_letter_rows": _count(db, "dead_letters"),
            "bad_messages": len(bad), "spool_undrained": undrained, "spool_dropped": dropped,
            "consumer_rss_peak_mb": round(peaks["consumer"], 1),
            "broker_rss_peak_mb": round(peaks["broker"], 1),
            "faults": faults_done,
            "confirmations_sent": sum(s["counters"].get("confirmations_sent", 0)
                                      for s in consumer_stats),
        }


async def _gaps(db: Path) -> dict[str, int]:
    """Missing reports per device, from the store's gap query (no grace period)."""
    s = make_store(f"sqlite:///{db}")
    await s.open()
    try:
        out: dict[str, int] = {}
        for g in await s.gaps(before_ns=time.time_ns()):
            out[g.device] = out.get(g.device, 0) + g.count
        return out
    finally:
        await s.close()


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _result_ids(db: Path) -> list[Identity]:
    return [(d, e if e >= 0 else e + (1 << 64), s)
            for d, e, s in _q(db, "SELECT device, epoch, seq FROM results")]


def _dead_keys(db: Path) -> set[bytes]:
    return {bytes(k) for (k,) in _q(db, "SELECT DISTINCT key FROM dead_letters")}


def _count(db: Path, table: str) -> int:
    rows = _q(db, f"SELECT count(*) FROM {table}")  # noqa: S608 -- our own table names
    return int(rows[0][0]) if rows else 0


def _final_stats(log: Path) -> dict[str, Any]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "final stats " in line:
            stats: dict[str, Any] = json.loads(line.split("final stats ", 1)[1])
            return stats
    return {"counters": {}}

