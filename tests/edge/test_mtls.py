"""Mutual TLS and topic ACLs against a real Mosquitto configured by pumpwatch.mosquitto_conf,
with certificates from cloud.pki, through both transports (paho and awsiotsdk)."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud import pki
from edge.agent import Agent
from edge.mqtt_awsiot import AwsIotTransport
from edge.mqtt_paho import PahoTransport
from edge.sources import synthetic_source
from edge.transport import Acked, Connected, Disconnected, Event

from ..infra.mosquitto import Mosquitto
from ..infra.mqtt_identity import Identity
from ._helpers import Collector, build, edge_config
from .test_agent_broker import OUTAGE_S, Running

pytestmark = pytest.mark.usefixtures("require_mosquitto")

TRANSPORTS = ["paho", "awsiot"]
#: every device these tests use: the broker grants only identities issued before it starts
DEVICES = ("gw-tls", "gw-a", "gw-b", "gw-acl", "gw-good", "gw-metrics")


@pytest.fixture(scope="module")
def pkidir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    pki.init_ca(d)
    pki.issue(d, "consumer", "consumer")
    pki.issue(d, "dashboard", "dashboard")
    for name in DEVICES:
        pki.issue(d, "device", name)
    return d


@pytest.fixture
def broker(tmp_path: Path, pkidir: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "mosquitto", tls_pki=pkidir)
    b.start()
    yield b
    b.stop()


def device_cert(pkidir: Path, name: str) -> dict[str, str]:
    crt, key = pki.issued_path(pkidir, "device", name)
    if not crt.exists():
        pki.issue(pkidir, "device", name)
    return {"ca": str(pkidir / "ca.crt"), "cert": str(crt), "key": str(key)}


class TlsCollector(Collector):
    """The report collector, connected as the `consumer` identity (reads reports only)."""

    def __init__(self, broker: Mosquitto, device: str, pkidir: Path) -> None:
        super().__init__(broker, device)
        crt, key = pki.issued_path(pkidir, "consumer", "consumer")
        self.client.tls_set(ca_certs=str(pkidir / "ca.crt"), certfile=str(crt), keyfile=str(key))

    def _on_connect(self, c: mqtt.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        if not flags.session_present:
            c.subscribe(f"pumpwatch/devices/{self.device}/reports", qos=1)
        else:
            self._subscribed.set()


def agent_config(
    tmp_path: Path,
    broker: Mosquitto,
    pkidir: Path,
    transport: str,
    *,
    cert_of: str | None = None,
    **kw: Any,
) -> Any:
    kw.setdefault("device", "gw-tls")
    d = edge_config(tmp_path, broker.port, **kw)
    d["mqtt"]["transport"] = transport
    d["mqtt"]["tls"] = device_cert(pkidir, cert_of or d["device"])
    return build(d)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reports_arrive_intact_over_mtls(
    tmp_path: Path, broker: Mosquitto, pkidir: Path, transport: str
) -> None:
    cfg = agent_config(tmp_path, broker, pkidir, transport, channels=3, source={"duration_s": 4})
    assert cfg.mqtt.inflight == (100 if transport == "awsiot" else 20)
    col = TlsCollector(broker, cfg.device, pkidir).start()
    try:
        agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
        with Running(agent) as run:
            assert run.wait(30) == 0
            assert col.wait_for(12, 10)
    finally:
        col.stop()
    assert sorted(set(col.identities())) == [(agent.epoch, s) for s in range(12)]
    for r in col.reports:  # decoded: device, pump, spectra all there
        assert r.device == cfg.device and r.pump == "p1"
        assert r.spectrum.n == cfg.report.lines and len(r.spectrum.db()) == r.spectrum.n
    assert agent.publisher.stats.failed_messages == 0
    assert f"u'{cfg.device}'" in broker.log_tail(200)  # the broker took the CN as username


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_publishing_to_another_devices_topic_is_refused(
    tmp_path: Path,
    broker: Mosquitto,
    pkidir: Path,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """gw-b's config holding gw-a's certificate: the broker answers PUBACK 0x87, the agent
    logs the reason, keeps every report spooled and shows the error in its status."""
    victim = "gw-b"
    cfg = agent_config(
        tmp_path,
        broker,
        pkidir,
        transport,
        cert_of="gw-a",
        device=victim,
        channels=2,
        source={"duration_s": 3},
        mqtt_extra={"failure_backoff_s": 30.0},
    )
    col = TlsCollector(broker, victim, pkidir).start()
    agent = Agent(cfg, synthetic_source(cfg), overflow="block")
    try:
        with caplog.at_level(logging.ERROR, logger="edge.publisher"), Running(agent):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (
                agent.publisher.stats.failed_messages and agent._compute_done.is_set()
            ):
                time.sleep(0.1)
            time.sleep(0.5)
            st = agent.status()
    finally:
        col.stop()
    assert "Not authorized (0x87)" in caplog.text
    assert st["last_error"] and "0x87" in st["last_error"]
    # each batch in flight is refused once, then the failure hold: no hot retry loop. Three
    # intervals of 2 channels are at most 3 messages (how many are in flight before the
    # first refusal returns depends on the machine's load), so more than 3 is a retry.
    assert 1 <= st["failed_messages"] <= 3
    assert st["acked"] == 0 and st["spool"]["reports"] == 6
    assert col.identities() == []


def _paho_connect(broker: Mosquitto, tls: dict[str, str] | None) -> str:
    """Try an MQTT 5 connect; returns 'connected' or what stopped it."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex, protocol=mqtt.MQTTv5)
    if tls is not None:
        c.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"))
    done = threading.Event()
    result: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append("connected" if not rc.is_failure else f"refused {rc}")
        done.set()

    c.on_connect = on_connect
    try:
        c.connect(broker.host, broker.port, keepalive=5)
        for _ in range(50):
            c.loop(0.1)
            if done.is_set():
                break
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        c.disconnect()
    return result[0] if result else "no CONNACK"


def _awsiot_connects(cfg: Any, seconds: float = 3.0) -> list[Event]:
    events: list[Event] = []
    t = AwsIotTransport(cfg.mqtt, client_id=cfg.device)
    t.start(events.append)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not any(isinstance(e, Connected) for e in events):
        time.sleep(0.05)
    t.stop()
    return events


def test_clients_without_a_valid_certificate_cannot_connect(
    tmp_path: Path, broker: Mosquitto, pkidir: Path
) -> None:
    good = device_cert(pkidir, "gw-good")
    assert _paho_connect(broker, good) == "connected"
    # another CA's certificate, with our CA trusted for the server
    other = tmp_path / "other-pki"
    pki.init_ca(other, ca_name="someone else's CA")
    ocrt, okey = pki.issued_path(other, "device", "gw-good")
    pki.issue(other, "device", "gw-good")
    forged = {"ca": good["ca"], "cert": str(ocrt), "key": str(okey)}
    assert _paho_connect(broker, forged) != "connected"
    # no client certificate at all
    assert _paho_connect(broker, {"ca": good["ca"]}) != "connected"
    # plain TCP MQTT on the TLS port
    assert _paho_connect(broker, None) != "connected"
    # the awsiot transport with the forged certificate never connects either
    d = edge_config(tmp_path, broker.port, device="gw-good")
    d["mqtt"] |= {"transport": "awsiot", "tls": forged}
    events = _awsiot_connects(build(d))
    assert events and not any(isinstance(e, Connected) for e in events)
    assert all(isinstance(e, Disconnected) for e in events)
    # ...while the genuine certificate does
    d["mqtt"]["tls"] = good
    assert any(isinstance(e, Connected) for e in _awsiot_connects(build(d)))
    log = broker.log_tail(200)
    assert "certificate" in log.lower() or "ssl" in log.lower()


@pytest.mark.parametrize("mode", ["sigterm", "frozen-sigkill", "frozen-sigkill-session-lost"])
def test_awsiot_broker_restart_mid_stream_every_report_arrives(
    tmp_path: Path, broker: Mosquitto, pkidir: Path, mode: str
) -> None:
    """The SDK's in-memory queue is not relied on: publishes are refused while the link is
    down and the spool sends them after the reconnect. Duplicates are allowed (identity).

    ``frozen-*``: the broker is SIGSTOPped until messages are in flight (published, no
    PUBACK), then SIGKILLed: with its session restored from the last autosave the SDK
    resends them (and so does the agent, from the spool: duplicates); with the session
    lost (``-session-lost``: persistence file removed) the SDK fails them, which must cost
    no failure hold and lose nothing."""
    cfg = agent_config(
        tmp_path, broker, pkidir, "awsiot", channels=8, source={"pace": 4.0, "duration_s": 12}
    )
    col = TlsCollector(broker, cfg.device, pkidir).start()
    broker.save()  # the collector's session is on disk before the restart
    time.sleep(0.3)
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
    total = 12 * 8
    expected = {(agent.epoch, s) for s in range(total)}
    inflight_at_kill = 0
    seen: list[tuple[int, int]] = []  # what a replaced collector had received
    try:
        with Running(agent) as run:
            assert col.wait_for(16, 10)
            if mode == "sigterm":
                broker.stop(signal.SIGTERM)
            else:
                assert broker.proc is not None
                broker.proc.send_signal(signal.SIGSTOP)
                deadline = time.monotonic() + 5
                while agent.publisher.inflight_messages == 0 and time.monotonic() < deadline:
                    time.sleep(0.02)
                inflight_at_kill = agent.publisher.inflight_messages
                t_kill = time.monotonic()
                broker.stop(signal.SIGKILL)
                if mode.endswith("session-lost"):
                    for f in broker.data_dir.iterdir():
                        f.unlink()
            time.sleep(OUTAGE_S)
            broker.start()
            if mode.endswith("session-lost"):  # the collector lost its session too
                col.stop()
                seen += col.identities()
                col = TlsCollector(broker, cfg.device, pkidir).start()
            assert run.wait(60) == 0, "agent did not drain after the outage"
            # a collector whose session the broker lost misses what came before it re-subscribed
            col.wait_for(total, 1 if mode.endswith("session-lost") else 10)
    finally:
        col.stop()
    keys = seen + col.identities()
    print(
        f"awsiot {mode}: {total} reports, {inflight_at_kill} messages in flight at the kill, "
        f"{len(keys) - len(set(keys))} duplicates, {len(expected - set(keys))} not seen by "
        "the collector"
    )
    assert agent.disconnects >= 1 and agent.connects >= 2
    assert agent.publisher.stats.failed_messages == 0, "a lost link is not a failed publish"
    assert agent.spool.stats.records == 0
    # the broker acknowledged every report (the agent's spool acks)
    assert {k for _t, k in run.acked} == expected
    if mode == "sigterm":
        assert set(keys) == expected
    else:
        assert inflight_at_kill > 0, "the kill did not catch messages in flight"
        if mode == "frozen-sigkill":
            # a SIGKILLed broker may lose only what it acknowledged before the kill
            acked_before = {k for t, k in run.acked if t <= t_kill}
            assert expected - set(keys) <= acked_before


def test_transport_choice_and_acked_reason_text() -> None:
    from awscrt import mqtt5

    from edge.mqtt_awsiot import puback_reason
    from edge.transports import make_transport

    assert puback_reason(mqtt5.PubackReasonCode.NOT_AUTHORIZED) == (
        False,
        "Not authorized (0x87)",
    )
    assert puback_reason(mqtt5.PubackReasonCode.SUCCESS)[0]
    assert puback_reason(None) == (True, "Success")
    cfg = build(edge_config(Path("/tmp"), 1883))
    assert isinstance(make_transport(cfg.mqtt, client_id="x"), PahoTransport)
    assert Acked(1, False, "x").ok is False
    assert socket  # used by the broker helpers


def test_acl_roles_consumer_and_dashboard(broker: Mosquitto, pkidir: Path) -> None:
    """Consumer: reads reports (also via $share), writes results, nothing else.
    Dashboard: reads results and device status. Devices: write only their own tree."""
    dev = Identity(broker, pkidir, "device", "gw-acl")
    con = Identity(broker, pkidir, "consumer", "consumer")
    dash = Identity(broker, pkidir, "dashboard", "dashboard")
    try:
        con.sub("$share/cloud/pumpwatch/devices/+/reports")
        dash.sub("pumpwatch/sites/#")
        dash.sub("pumpwatch/devices/+/status")
        assert dev.pub("pumpwatch/devices/gw-acl/reports", b"r1") < 0x80
        assert dev.pub("pumpwatch/devices/gw-acl/status", b"s1", retain=True) < 0x80
        assert dev.pub("pumpwatch/devices/gw-other/reports") == 0x87
        assert dev.pub("pumpwatch/sites/lab/pumps/p1/condition") == 0x87  # only the cloud
        assert con.pub("pumpwatch/sites/lab/pumps/p1/condition", b"c1", retain=True) < 0x80
        assert con.pub("pumpwatch/devices/gw-acl/reports") == 0x87  # cannot forge reports
        # The dashboard publishes operators' alarm changes, never conditions or reports.
        assert dash.pub("pumpwatch/sites/lab/pumps/p1/condition") == 0x87
        assert dash.pub("pumpwatch/devices/gw-acl/reports") == 0x87
        assert dash.pub("pumpwatch/sites/lab/pumps/p1/alarms", b"a1") < 0x80
        want_con = {("pumpwatch/devices/gw-acl/reports", b"r1")}
        want_dash = {("pumpwatch/sites/lab/pumps/p1/condition", b"c1"),
                     ("pumpwatch/devices/gw-acl/status", b"s1"),
                     ("pumpwatch/sites/lab/pumps/p1/alarms", b"a1")}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for what must arrive
            con_got = [m[:2] for m in con.messages()]
            dash_got = [m[:2] for m in dash.messages()]
            if want_con <= set(con_got) and want_dash <= set(dash_got):
                break
            time.sleep(0.02)
        assert ("pumpwatch/sites/lab/pumps/p1/alarms", b"a1") in dash_got
        assert ("pumpwatch/devices/gw-acl/reports", b"r1") in con_got
        assert not any(t.endswith("/status") for t, _ in con_got)
        assert ("pumpwatch/sites/lab/pumps/p1/condition", b"c1") in dash_got
        assert ("pumpwatch/devices/gw-acl/status", b"s1") in dash_got
        assert not any(t.endswith("/reports") for t, _ in dash_got)
    finally:
        for c in (dev, con, dash):
            c.close()


def test_awsiot_sends_no_sdk_metrics_username(tmp_path: Path, pkidir: Path) -> None:
    """With enable_metrics_collection=False the SDK leaves the MQTT username empty (it would
    otherwise send "?SDK=Python&Version=..."). Seen on a broker that keeps the username."""
    b = Mosquitto(tmp_path / "m", tls_pki=pkidir)  # then: no plugin, keep any username
    conf = b.conf_path.read_text()
    conf = conf.replace("use_identity_as_username true", "use_identity_as_username false")
    conf = conf.replace("allow_anonymous false", "allow_anonymous true")
    conf = "\n".join(line for line in conf.splitlines() if not line.startswith("plugin"))
    b.conf_path.write_text(conf + "\n")
    b.start()
    try:
        d = edge_config(tmp_path, b.port, device="gw-metrics")
        d["mqtt"] |= {"transport": "awsiot", "tls": device_cert(pkidir, "gw-metrics")}
        assert any(isinstance(e, Connected) for e in _awsiot_connects(build(d)))
        line = next(x for x in b.log_tail(50).splitlines() if "as gw-metrics" in x)
    finally:
        b.stop()
    assert "SDK" not in line and ", u'" not in line, line


def _retained_status(broker: Mosquitto, pkidir: Path, device: str) -> dict[str, Any]:
    """The retained status of ``device``, read as the `dashboard` identity."""
    import json

    crt, key = pki.issued_path(pkidir, "dashboard", "dashboard")
    got: list[bytes] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dash-{uuid.uuid4().hex[:8]}",
                    protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(pkidir / "ca.crt"), certfile=str(crt), keyfile=str(key))

    def on_connect(cl: mqtt.Client, *_a: Any) -> None:
        cl.subscribe(f"pumpwatch/devices/{device}/status", qos=1)

    def on_message(_cl: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(bytes(msg.payload))
            done.set()

    c.on_connect = on_connect
    c.on_message = on_message
    c.connect("localhost", broker.port)
    c.loop_start()
    try:
        assert done.wait(10), "no retained status"
    finally:
        c.loop_stop()
        c.disconnect()
    status: dict[str, Any] = json.loads(got[0])
    return status


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_clean_stop_leaves_shutdown_not_the_will(
    tmp_path: Path, broker: Mosquitto, pkidir: Path, transport: str
) -> None:
    cfg = agent_config(tmp_path, broker, pkidir, transport, channels=1, source={"duration_s": 2})
    agent = Agent(cfg, synthetic_source(cfg), exit_when_drained=True, overflow="block")
    with Running(agent) as run:
        assert run.wait(30) == 0
    time.sleep(0.5)  # a will would be published right after the connection drops
    status = _retained_status(broker, pkidir, cfg.device)
    assert status["state"] == "offline"
    assert status["reason"] == "shutdown", status
