"""Link failures the operator must see: a closed port, a broker with another CA, a
certificate the broker refuses (real Mosquitto with TLS from cloud.pki), and the rule
that logs them once per change and then with backoff (edge.link, sans-IO)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud import pki
from edge.agent import Agent
from edge.link import LinkLog
from edge.metrics import render
from edge.mqtt_paho import refusal_reason
from edge.sources import synthetic_source

from ..infra.mosquitto import Mosquitto, free_port
from ._helpers import build, edge_config, write_toml
from .test_agent_broker import Running

ROOT = Path(__file__).resolve().parents[2]
REALTIME = {"pace": "realtime"}  # no broker takes the reports: compute no faster than needed


# -- the rule (sans-IO) -----------------------------------------------------------------------


def test_same_failure_is_logged_once_then_with_backoff() -> None:
    ll = LinkLog(first_repeat_s=10.0, max_repeat_s=40.0)
    lines = [(t, ll.failure("refused", t)) for t in range(200)]  # one attempt a second
    logged = [(t, line) for t, line in lines if line is not None]
    assert [t for t, _ in logged] == [0, 10, 30, 70, 110, 150, 190]  # 10, 20, 40, 40...
    assert logged[0][1] == "refused"
    assert "10 attempts since the last report" in str(logged[1][1])
    assert "20 attempts since the last report, 30 s since the first" in str(logged[2][1])
    assert ll.failures == 200 and ll.last_error == "refused"


def test_a_changed_reason_is_logged_at_once_and_recovery_ends_the_episode() -> None:
    ll = LinkLog()
    assert ll.failure("refused", 0.0) == "refused"
    assert ll.failure("refused", 1.0) is None
    assert ll.failure("TLS handshake failed", 2.0) == "TLS handshake failed"
    assert ll.connected(5.0) == "after 3 failed attempts over 5 s"
    assert ll.connected(6.0) is None  # nothing failed since
    assert ll.failure("TLS handshake failed", 7.0) == "TLS handshake failed"  # a new episode
    assert ll.last_error == "TLS handshake failed" and ll.failures == 4


ALERT = "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)"
EOF_ = "EOF occurred in violation of protocol (_ssl.c:2427)"


def test_a_bare_eof_after_an_alert_is_the_same_refusal() -> None:
    """A broker refusing our certificate: one attempt reads its alert, a later one only
    the closed connection (the alert lost in the reset). Reported in the alert's words,
    so the link log sees one state; a bare EOF with no alert before it, or another
    error, is reported as it is."""
    why, alert = refusal_reason(ALERT, None)
    assert why == ALERT and alert == ALERT
    assert refusal_reason(EOF_, alert) == (ALERT, ALERT)
    assert refusal_reason(EOF_, None) == (EOF_, None)
    assert refusal_reason("[Errno 104] Connection reset by peer", alert) == (
        "[Errno 104] Connection reset by peer", ALERT)
    other = "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)"
    assert refusal_reason(other, alert) == (other, other)  # a new alert is a new reason
    ll = LinkLog()
    lines = [ll.failure(refusal_reason(e, a)[0], float(t))
             for t, (e, a) in enumerate([(ALERT, None), (ALERT, ALERT), (EOF_, ALERT)])]
    assert lines == [ALERT, None, None]


# -- real failures ------------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "edge.agent"]


def _until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _run_failing(agent: Agent, caplog: pytest.LogCaptureFixture, attempts: int) -> dict[str, Any]:
    """Run until ``attempts`` connection attempts failed; the agent's status then."""
    with caplog.at_level(logging.DEBUG, logger="edge"), Running(agent):
        assert _until(lambda: agent.link_log.failures >= attempts, 20), agent.status()["link"]
        with agent._lock:
            return agent.status()


def test_closed_port_is_a_warning_with_the_reason_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = build(edge_config(tmp_path, free_port(), channels=1, source=REALTIME,
                            mqtt_extra={"reconnect_min_s": 0.1, "reconnect_max_s": 0.2}))
    agent = Agent(cfg, synthetic_source(cfg), overflow="block")
    st = _run_failing(agent, caplog, attempts=4)
    warned = _warnings(caplog)
    assert len(warned) == 1, warned  # four attempts inside the first 10 s: one line
    assert f"connection refused by 127.0.0.1:{cfg.mqtt.port}" in warned[0]
    assert warned[0].startswith("mqtt: cannot connect:")
    link = st["link"]
    assert link["state"] == "disconnected" and link["failures"] >= 4
    assert "connection refused" in link["last_error"] and "refused" in st["last_error"]
    text = render(st, dsp_seconds=0.0)
    assert f"pumpwatch_edge_mqtt_link_failures_total {link['failures']}" in text
    assert 'pumpwatch_edge_mqtt_last_error_info{reason="connection refused by' in text


def test_unresolvable_host_says_dns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = edge_config(tmp_path, 1883, channels=1, source=REALTIME)
    d["mqtt"]["host"] = "broker.invalid"  # RFC 6761: never resolves
    cfg = build(d)
    st = _run_failing(Agent(cfg, synthetic_source(cfg), overflow="block"), caplog, attempts=1)
    assert "DNS: cannot resolve 'broker.invalid'" in st["link"]["last_error"]
    assert any("DNS" in w for w in _warnings(caplog))


@pytest.fixture(scope="module")
def two_pkis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The broker's PKI (with a device gw-tls) and another CA's (also with a gw-tls)."""
    out = []
    for name in ("ours", "other"):
        d = tmp_path_factory.mktemp(name)
        pki.init_ca(d)
        pki.issue(d, "device", "gw-tls")
        out.append(d)
    return out[0], out[1]


@pytest.fixture
def tls_broker(tmp_path: Path, two_pkis: tuple[Path, Path]) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "mosquitto", tls_pki=two_pkis[0])
    b.start()
    yield b
    b.stop()


def _tls_agent(tmp_path: Path, broker: Mosquitto, ca_dir: Path, cert_dir: Path,
               transport: str = "paho") -> Agent:
    d = edge_config(tmp_path, broker.port, device="gw-tls", channels=1, source=REALTIME,
                    mqtt_extra={"reconnect_min_s": 0.1, "reconnect_max_s": 0.2,
                                "transport": transport})
    crt, key = pki.issued_path(cert_dir, "device", "gw-tls")
    d["mqtt"]["tls"] = {"ca": str(ca_dir / "ca.crt"), "cert": str(crt), "key": str(key)}
    cfg = build(d)
    return Agent(cfg, synthetic_source(cfg), overflow="block")


@pytest.mark.usefixtures("require_mosquitto")
def test_broker_with_another_ca_is_a_tls_warning(
    tmp_path: Path, tls_broker: Mosquitto, two_pkis: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _ours, other = two_pkis
    agent = _tls_agent(tmp_path, tls_broker, ca_dir=other, cert_dir=other)
    st = _run_failing(agent, caplog, attempts=3)
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert "TLS: the broker's certificate" in warned[0] and "not trusted" in warned[0]
    assert st["link"]["last_error"] in warned[0]  # the verifier's words, e.g. "self-signed
    # certificate in certificate chain" (the broker sends its CA along)


@pytest.mark.usefixtures("require_mosquitto")
def test_certificate_the_broker_refuses_is_a_warning(
    tmp_path: Path, tls_broker: Mosquitto, two_pkis: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """We trust the broker, the broker does not trust our certificate (another CA): it
    aborts the handshake with an alert, which is the reason the agent shows, once. (An
    attempt may read only the closed connection, the alert lost in the reset: after the
    alert that is the same refusal, see refusal_reason; before it, a first attempt that
    saw no alert is a line of its own, and the alert a change.)"""
    ours, other = two_pkis
    agent = _tls_agent(tmp_path, tls_broker, ca_dir=ours, cert_dir=other)
    st = _run_failing(agent, caplog, attempts=3)
    warned = _warnings(caplog)
    alerted = [i for i, w in enumerate(warned) if "alert" in w.lower()]
    assert len(alerted) == 1 and alerted[0] == len(warned) - 1, warned
    assert all("EOF occurred" in w for w in warned[:-1]), warned
    reason = st["link"]["last_error"]
    assert "alert" in reason.lower() and ("unknown ca" in reason.lower()
                                          or "certificate" in reason.lower()), reason
    assert f"127.0.0.1:{tls_broker.port}" in reason


@pytest.mark.usefixtures("require_mosquitto")
def test_certificate_the_broker_refuses_over_awsiot_is_a_warning_with_a_hint(
    tmp_path: Path, tls_broker: Mosquitto, two_pkis: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The AWS IoT transport (awscrt) gets no alert text, only "Failure during TLS
    read": the line says what that most likely means, once."""
    ours, other = two_pkis
    agent = _tls_agent(tmp_path, tls_broker, ca_dir=ours, cert_dir=other, transport="awsiot")
    st = _run_failing(agent, caplog, attempts=3)
    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert "AWS_IO_TLS_ERROR_READ_FAILURE" in warned[0], warned
    assert "certificate it does not accept" in warned[0], warned
    assert st["link"]["last_error"] in warned[0]


def test_edge_startup_loads_no_scipy_signal_or_stats(tmp_path: Path) -> None:
    """`pumpwatch edge` as a process, up until its first link warning (a closed port):
    the modules it imported (``-X importtime``) hold no scipy.signal or scipy.stats, nor
    the synthesizer."""
    d = edge_config(tmp_path, free_port(), channels=2, source=REALTIME)
    cfg_path = write_toml(tmp_path / "edge.toml", d)
    log = tmp_path / "edge.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "pumpwatch", "edge", "--config",
             str(cfg_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:
        assert _until(lambda: "cannot connect" in log.read_text(errors="replace"), 60), (
            log.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    loaded = {ln.rsplit("|", 1)[1].strip() for ln in text.splitlines()
              if ln.startswith("import time:") and "|" in ln}
    assert "dsp.envelope" in loaded and "edge.agent" in loaded  # the parse saw the run
    heavy = sorted(m for m in loaded if m.startswith((
        "scipy.signal", "scipy.stats", "simulator.synth", "simulator.simulated",
        "simulator.pump")))
    assert heavy == []
