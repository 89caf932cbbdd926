"""Operators' alarm changes on the result topics: a real ``pumpwatch dashboard`` process with
``--mqtt-config`` (its own certificate, role ``dashboard``) publishes every stored change on
``pumpwatch/sites/{site}/pumps/{pump}/alarms`` of a real Mosquitto with mTLS and the role
table's dynamic security; an operator's client (reads everything) receives who, when and the
new state. With the broker down the change is still stored and the answer says it was not
published."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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

        # broker down: the change is stored, the answer says it is not published
        broker.stop()
        wait_for(lambda: "mqtt disconnected" in log.read_text(), 20, "the disconnect")
        other = asset_of(base, "p2")["id"]
        status, body = call(base, "POST", f"/api/alarms/{other}/assign",
                            {"by": "ann", "assignee": "dan"})
        assert status == 200 and body["published"] is False, body
        assert call(base, "GET", f"/api/alarms/{other}")[1]["lifecycle"]["assignee"] == "dan"
        status, metrics = call(base, "GET", "/metrics", token=None)
        text = metrics.decode()
        assert "pumpwatch_dashboard_alarm_changes_published_total 2.0" in text
        assert "pumpwatch_dashboard_alarm_changes_unpublished_total 1.0" in text
        assert len(changes(ops, "p1")) == 2 and changes(ops, "p2") == []
    finally:
        ops.close()
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
