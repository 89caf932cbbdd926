"""Operators' alarm changes on the result topics: a real ``pumpwatch dashboard`` process with
``--mqtt-config`` (its own certificate, role ``dashboard``) publishes every stored change on
``pumpwatch/sites/{site}/pumps/{pump}/alarms`` of a real Mosquitto with mTLS and the role
table's dynamic security; an operator's client (reads everything) receives who, when and the
new state. With the broker down the change is stored and waits in the outbox: it arrives
once, in order, when the broker is back (also across a restart of the dashboard)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud import pki
from cloud.roles import Role
from tests.infra.mosquitto import Mosquitto
from tests.infra.mqtt_identity import Identity
from tests.test_alarm_lifecycle import TOKEN, asset_of, call, seed
from tests.test_dashboard_browser import DashboardProcess

pytestmark = pytest.mark.usefixtures("require_mosquitto")
ROLES: dict[str, Role] = {"dashboard": "dashboard", "ops": "operator"}


def wait_for(pred: Callable[[], Any], within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while not (got := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return got


def dashboard_toml(path: Path, broker: Mosquitto, pkidir: Path) -> Path:
    crt, key = pki.issued_path(pkidir, "dashboard", "dashboard")
    path.write_text(
        "[mqtt]\n"
        f'host = "localhost"\nport = {broker.port}\nreconnect_min_s = 0.2\n'
        'reconnect_max_s = 1.0\nclient_id = "pumpwatch-dashboard-test"\n'
        "[mqtt.tls]\n"
        f'ca = "{pkidir / "ca.crt"}"\ncert = "{crt}"\nkey = "{key}"\n')
    return path


def changes(ops: Identity, pump: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, retained in ops.messages()
            if t.endswith(f"/pumps/{pump}/alarms") and not retained]


def test_each_change_is_published_with_who_when_and_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkidir = tmp_path / "pki"
    pki.init_ca(pkidir)
    for name, role in ROLES.items():
        pki.issue(pkidir, role, name)
    broker = Mosquitto(tmp_path / "mosquitto", tls_pki=pkidir, tls_roles=ROLES).start()
    db = f"sqlite:///{tmp_path / 'results.db'}"
    asyncio.run(seed(db))
    monkeypatch.setenv("PUMPWATCH_DASHBOARD_TOKEN", TOKEN)
    log = tmp_path / "dash.log"
    dash = DashboardProcess(db, log, ("--mqtt-config",
                                      str(dashboard_toml(tmp_path / "d.toml", broker, pkidir))))
    base = dash.start()
    ops = Identity(broker, pkidir, "operator", "ops")
    try:
        assert ops.sub("pumpwatch/sites/+/pumps/+/alarms") == 1
        wait_for(lambda: "mqtt connected" in log.read_text(), 20, "the dashboard's connection")
        asset = asset_of(base, "p1")
        site, aid = asset["site"], asset["id"]

        before = time.time_ns()
        status, body = call(base, "POST", f"/api/alarms/{aid}/ack", {"by": "ann"})
        after = time.time_ns()
        assert status == 200 and body["published"] is True, body
        (msg,) = wait_for(lambda: changes(ops, "p1"), 10, "the ack on the alarm topic")
        assert msg["v"] == 1
        ev, alarm = msg["event"], msg["alarm"]
        assert (ev["alarm_id"], ev["actor"], ev["action"]) == (aid, "ann", "ack")
        assert before <= ev["at_ns"] <= after and ev["at_ns"] == alarm["updated_ns"]
        assert (alarm["id"], alarm["site"], alarm["pump"], alarm["kind"]) == (
            aid, site, "p1", "asset")
        lc = alarm["lifecycle"]
        assert (lc["status"], lc["acknowledged_by"]) == ("acknowledged", "ann")
        assert before <= lc["acknowledged_ns"] <= after
        topic = next(t for t, _p, _r in ops.messages() if t.endswith("/p1/alarms"))
        assert topic == f"pumpwatch/sites/{site}/pumps/p1/alarms"

        status, body = call(base, "POST", f"/api/alarms/{aid}/close", {
            "by": "bob", "verdict": "bearing_outer", "action_taken": "replaced DE bearing"})
        assert status == 200 and body["published"] is True, body
        got = wait_for(lambda: m if len(m := changes(ops, "p1")) == 2 else None, 10,
                       "the close on the alarm topic")
        ev, alarm = got[1]["event"], got[1]["alarm"]
        assert (ev["actor"], ev["action"]) == ("bob", "close")
        assert json.loads(ev["detail"])["verdict"] == "bearing_outer"
        assert alarm["state"] == "cleared" and alarm["lifecycle"]["status"] == "closed"
        assert alarm["lifecycle"]["verdict"] == "bearing_outer"
        assert alarm["lifecycle"]["closed_by"] == "bob"
        # a refused change is neither stored nor published
        assert call(base, "POST", f"/api/alarms/{aid}/ack", {"by": "cy"})[0] == 409

        # broker down: the change is stored, the answer says it is not published yet
        broker.stop()
        wait_for(lambda: "mqtt disconnected" in log.read_text(), 20, "the disconnect")
        other = asset_of(base, "p2")["id"]
        status, body = call(base, "POST", f"/api/alarms/{other}/assign",
                            {"by": "ann", "assignee": "dan"})
        assert status == 200 and body["published"] is False, body
        assert call(base, "GET", f"/api/alarms/{other}")[1]["lifecycle"]["assignee"] == "dan"
        text = call(base, "GET", "/metrics", token=None)[1].decode()
        assert "pumpwatch_dashboard_alarm_changes_published_total 2.0" in text
        assert "pumpwatch_dashboard_alarm_outbox_depth 1.0" in text
        assert changes(ops, "p2") == []
    finally:
        ops.close()
        dash.stop()
        broker.stop()


class Watcher:
    """An operator's client with a persistent session (it survives the broker's restart:
    Mosquitto saves the session on SIGTERM), recording every alarm-topic message."""

    def __init__(self, broker: Mosquitto, pkidir: Path, name: str) -> None:
        crt, key = pki.issued_path(pkidir, "operator", name)
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex}",
                        protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(pkidir / "ca.crt"), certfile=str(crt), keyfile=str(key))
        # paho annotates the delays int; it computes with them as seconds, fractions too
        c.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, clean_start=False, properties=props)
        c.loop_start()
        assert self.subscribed.wait(10), "the watcher could not subscribe"
        self.c = c

    def _on_connect(self, c: mqtt.Client, *_a: Any) -> None:
        c.subscribe("pumpwatch/sites/+/pumps/+/alarms", qos=1)

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append(json.loads(m.payload))

    def events(self, pump: str) -> list[tuple[str, int, str]]:
        with self.lock:
            return [(m["event"]["alarm_id"], m["event"]["at_ns"], m["event"]["action"])
                    for m in self.got if m["alarm"]["pump"] == pump]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def unique(events: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """In arrival order, once per id (alarm_id, at_ns)."""
    return list(dict.fromkeys(events))


def metric(base: str, name: str) -> float:
    text = call(base, "GET", "/metrics", token=None)[1].decode()
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


def test_changes_made_while_the_broker_is_down_arrive_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox: changes stored while Mosquitto is stopped are published when it is back,
    in order, each once (id: event.alarm_id + event.at_ns), also across a restart of the
    dashboard itself; the store marks them published, the depth goes back to 0."""
    pkidir = tmp_path / "pki"
    pki.init_ca(pkidir)
    for name, role in ROLES.items():
        pki.issue(pkidir, role, name)
    broker = Mosquitto(tmp_path / "mosquitto", tls_pki=pkidir, tls_roles=ROLES).start()
    db = f"sqlite:///{tmp_path / 'results.db'}"
    asyncio.run(seed(db, pumps=("p1", "p2", "p3")))
    monkeypatch.setenv("PUMPWATCH_DASHBOARD_TOKEN", TOKEN)
    log = tmp_path / "dash.log"
    dash = DashboardProcess(db, log, ("--mqtt-config",
                                      str(dashboard_toml(tmp_path / "d.toml", broker, pkidir))))
    base = dash.start()
    watch = Watcher(broker, pkidir, "ops")
    try:
        wait_for(lambda: "mqtt connected" in log.read_text(), 20, "the dashboard's connection")
        a1, a2, a3 = (asset_of(base, p)["id"] for p in ("p1", "p2", "p3"))
        assert call(base, "POST", f"/api/alarms/{a1}/ack", {"by": "ann"})[1]["published"]
        wait_for(lambda: watch.events("p1"), 10, "the first change")

        # 1. the broker goes down; three changes on two alarms; it comes back
        broker.stop()
        wait_for(lambda: log.read_text().count("mqtt disconnected") >= 1, 20, "the disconnect")
        made: list[tuple[str, str]] = []
        for aid, action, body in (
            (a2, "ack", {"by": "ann"}),
            (a1, "close", {"by": "bob", "verdict": "bearing_outer", "action_taken": "fixed"}),
            (a2, "assign", {"by": "ann", "assignee": "dan"}),
        ):
            status, got = call(base, "POST", f"/api/alarms/{aid}/{action}", body)
            assert status == 200 and got["published"] is False, got
            made.append((aid, action))
        assert metric(base, "pumpwatch_dashboard_alarm_outbox_depth") == 3
        assert metric(base, "pumpwatch_dashboard_alarm_outbox_oldest_seconds") > 0
        broker.start()
        wait_for(lambda: len(unique(watch.events("p1"))) == 2
                 and len(unique(watch.events("p2"))) == 2, 30,
                 "the changes made while the broker was down")
        wait_for(lambda: metric(base, "pumpwatch_dashboard_alarm_outbox_depth") == 0, 10,
                 "the outbox to empty")
        # exactly once from the dashboard: four PUBACKs for four changes, none handed twice
        assert metric(base, "pumpwatch_dashboard_alarm_changes_published_total") == 4
        with watch.lock:  # arrival order: the order they were made
            arrived = unique([(m["event"]["alarm_id"], m["event"]["at_ns"],
                               m["event"]["action"]) for m in watch.got])
            by_id = {(m["event"]["alarm_id"], m["event"]["at_ns"]): m for m in watch.got}
            # a copy the broker delivers again to the watcher (its PUBACK cut by the stop)
            # is the same message: receivers dedupe on the id
            same = all(m == by_id[(m["event"]["alarm_id"], m["event"]["at_ns"])]
                       for m in watch.got)
        assert [(a, act) for a, _t, act in arrived[1:]] == made and same
        assert len(by_id) == 4
        ack2 = next(m for (a, _t), m in by_id.items()
                    if a == a2 and m["event"]["action"] == "ack")
        assert ack2["alarm"]["lifecycle"]["assignee"] is None
        assert ack2["alarm"]["lifecycle"]["status"] == "acknowledged"
        assert ack2["alarm"]["updated_ns"] == ack2["event"]["at_ns"]

        # 2. broker down, a change, the dashboard stops too; the broker and then the
        # dashboard come back: the stored change is published by the new process
        broker.stop()
        wait_for(lambda: log.read_text().count("mqtt disconnected") >= 2, 20, "the disconnect")
        status, got = call(base, "POST", f"/api/alarms/{a3}/ack", {"by": "cy"})
        assert status == 200 and got["published"] is False, got
        dash.stop()
        broker.start()
        base = dash.start()
        wait_for(lambda: watch.events("p3"), 30, "the change stored before the restart")
        wait_for(lambda: metric(base, "pumpwatch_dashboard_alarm_outbox_depth") == 0, 10,
                 "the outbox to empty")
        assert [(a, act) for a, _t, act in unique(watch.events("p3"))] == [(a3, "ack")]
        # the new process published it once; the watcher may get an earlier message again:
        # one whose PUBACK to the broker was cut by the stop is redelivered (QoS 1, same
        # payload, same id: the id is what dedupes)
        assert metric(base, "pumpwatch_dashboard_alarm_changes_published_total") == 1
        with watch.lock:
            ids = [(m["event"]["alarm_id"], m["event"]["at_ns"]) for m in watch.got]
            same = all(m == by_id[k] for k, m in zip(ids, watch.got, strict=True) if k in by_id)
        assert len(set(ids)) == 5 and same
    finally:
        watch.close()
        dash.stop()
        broker.stop()


def test_without_mqtt_config_nothing_is_published(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'results.db'}"
    asyncio.run(seed(db, pumps=("p1",)))
    monkeypatch.setenv("PUMPWATCH_DASHBOARD_TOKEN", TOKEN)
    dash = DashboardProcess(db, tmp_path / "dash.log")
    base = dash.start()
    try:
        aid = asset_of(base, "p1")["id"]
        status, body = call(base, "POST", f"/api/alarms/{aid}/ack", {"by": "ann"})
        assert status == 200 and body["published"] is None, body
    finally:
        dash.stop()


def test_the_dashboards_mqtt_file_is_checked(tmp_path: Path) -> None:
    from cloud.consumer.errors import ConfigError
    from cloud.dashboard.publish import DEFAULT_CLIENT_ID, load_mqtt_config, mqtt_config

    assert mqtt_config({"mqtt": {"port": 1884}}).client_id == DEFAULT_CLIENT_ID
    with pytest.raises(ConfigError, match="store"):
        mqtt_config({"mqtt": {}, "store": {}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nport = 0\ncolour = 'red'\n")
    with pytest.raises(ConfigError) as exc:
        load_mqtt_config(bad)
    assert "port" in str(exc.value) and "colour" in str(exc.value)
