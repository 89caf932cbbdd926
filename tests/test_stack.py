"""``pumpwatch up`` / ``pumpwatch demo``: the local stack as real processes.

The classifier is trained once per module, small (about 10 s), and copied into
each test's state directory (the stack trains only when that is absent). The
end-to-end tests run the real thing: Mosquitto with mTLS, the model server,
the consumer, the dashboard and simulated edge agents, 2 pumps x 3 axes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edge.config import load_config as load_edge_config
from pumpwatch.stack.monitor import ResultRow
from pumpwatch.stack.plan import StackOptions, devices, edge_config, plan_fleet
from pumpwatch.stack.score import alarms_from_table, score, standin_alarms

from .infra.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
needs_broker = pytest.mark.usefixtures("require_mosquitto")


# --- plan, configs, scoring (no processes) ----------------------------------------------------

def test_fleet_schedule_keeps_some_pumps_healthy_and_staggers_faults() -> None:
    opts = StackOptions(pumps=8, healthy_s=60, fault_delay_s=10, onset_spacing_s=30)
    fleet = plan_fleet(opts)
    assert [p.id for p in fleet] == [f"p0{i}" for i in range(1, 9)]
    healthy = [p.id for p in fleet if p.fault is None]
    assert healthy == ["p02", "p06"]
    onsets = [p.fault.onset_s for p in fleet if p.fault is not None]
    assert onsets == [70.0, 100.0, 130.0, 160.0, 190.0, 220.0]
    assert len({p.fault.kind for p in fleet if p.fault is not None}) == 6
    assert {p.device for p in fleet} == {"gw-01", "gw-02", "gw-03", "gw-04"}
    assert all(len(p.config.sensors) == 3 for p in fleet)


@pytest.fixture
def reachable(tmp_path: Path) -> Iterator[Path]:
    """A directory for the stack's state. As root, one the broker's `mosquitto` user can
    traverse (pytest's tmp root is 0700), removed afterwards."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    base = Path(tempfile.mkdtemp(prefix="pumpwatch-stack-test-"))
    os.chmod(base, 0o711)  # noqa: S103 - traversable only, as a home directory would be
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_prepare_writes_certificates_and_configs_the_components_accept(reachable: Path) -> None:
    tmp_path = reachable
    from cloud.consumer import load_config as load_cloud_config
    from pumpwatch.stack import Stack

    opts = StackOptions(state=tmp_path, pumps=3, pumps_per_agent=2, broker_port=18883,
                        duration_s=30.0)
    Stack(opts).prepare()
    cfg = load_cloud_config(tmp_path / "cloud.toml")
    assert cfg.mqtt.port == 18883 and cfg.mqtt.tls is not None
    assert cfg.store.url == opts.store_url
    from cloud.dashboard.publish import load_mqtt_config

    dash = load_mqtt_config(tmp_path / "dashboard.toml")  # alarm changes, dashboard's cert
    assert dash.port == 18883 and dash.tls is not None and dash.tls.cert is not None
    assert dash.tls.cert.endswith("clients/dashboard.crt") and dash.client_id != cfg.mqtt.client_id
    assert opts.dashboard_args()[-2:] == ["--mqtt-config", str(tmp_path / "dashboard.toml")]
    for dev, pumps in devices(plan_fleet(opts)).items():
        path = tmp_path / "edge" / dev / "edge.toml"
        assert path.read_text() == edge_config(opts, dev, pumps)
        ecfg = load_edge_config(path)
        assert ecfg.device == dev and ecfg.source.duration_s == 30.0
        assert [p.id for p in ecfg.pumps] == [p.id for p in pumps]
        assert all(len(p.channels) == 3 for p in ecfg.pumps)
        assert (tmp_path / "pki" / "devices" / f"{dev}.key").stat().st_mode & 0o077 == 0
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text()
    assert "require_certificate true" in conf and "listener 18883 127.0.0.1" in conf
    assert "user mosquitto" in conf and "user root" not in conf
    grants = json.loads((tmp_path / "broker" / "dynamic-security.json").read_text())
    assert {c["username"] for c in grants["clients"]} == {
        "consumer", "dashboard", *devices(plan_fleet(opts))}
    ca = (tmp_path / "pki" / "ca.crt").read_bytes()
    Stack(opts).prepare()  # a second start reuses the CA
    assert (tmp_path / "pki" / "ca.crt").read_bytes() == ca
    # the awsiotsdk transport (as against AWS IoT Core) accepts the same agents' configs
    aws = replace(opts, edge_transport="awsiot")
    Stack(aws).prepare()
    ecfg = load_edge_config(tmp_path / "edge" / "gw-01" / "edge.toml")
    assert ecfg.mqtt.transport == "awsiot" and ecfg.mqtt.port == 18883


@needs_broker
def test_a_state_the_broker_user_cannot_reach_gets_a_broker_directory_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root the broker drops to `mosquitto`, which cannot traverse pytest's tmp root
    (0700), as it cannot a checkout under /root: the stack puts the broker's directory
    under a root it can reach, links it from the state, and the real broker starts from it
    and saves its persistence there as its own user. Not root, the state's own directory
    is used and nothing is linked."""
    from pumpwatch import mosquitto_conf
    from pumpwatch.stack import Stack

    fallback = Path(tempfile.mkdtemp(prefix="pumpwatch-test-fallback-"))
    os.chmod(fallback, 0o711)  # noqa: S103 - traversable, as /var/lib is
    monkeypatch.setattr(mosquitto_conf, "BROKER_FALLBACK_ROOT", fallback / "pumpwatch")
    state = tmp_path / "s"
    said = io.StringIO()
    opts = StackOptions(state=state, pumps=1, broker_port=free_port())
    try:
        Stack(opts, out=said).prepare()
        link = state / "broker"
        conf = (link / "mosquitto.conf").read_text()
        if os.geteuid() == 0:
            assert link.is_symlink()
            home = link.resolve()
            assert home.parent == (fallback / "pumpwatch").resolve()
            assert str(tmp_path) not in conf and str(home) in conf  # paths the broker reaches
            assert "cannot reach" in said.getvalue()
            Stack(opts).prepare()  # a second start finds its link and the same directory
            assert link.resolve() == home
        else:
            assert not link.is_symlink()
            home = link.resolve()
        broker = subprocess.Popen(["mosquitto", "-c", str(link / "mosquitto.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while not _tcp_open(opts.broker_port):
                assert broker.poll() is None, broker.stderr.read() if broker.stderr else ""
                assert time.monotonic() < deadline, "broker not listening after 15 s"
                time.sleep(0.1)
        finally:
            broker.terminate()
            broker.wait(timeout=15)
        assert (home / "data" / "mosquitto.db").is_file()  # written as the broker's user
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


def test_a_broker_link_is_not_made_over_files_already_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pumpwatch import mosquitto_conf

    monkeypatch.setattr(mosquitto_conf, "check_reachable", _unreachable_in(tmp_path))
    monkeypatch.setattr(mosquitto_conf, "BROKER_FALLBACK_ROOT", tmp_path / "fallback")
    wanted = tmp_path / "state" / "broker"
    (wanted / "data").mkdir(parents=True)
    with pytest.raises(mosquitto_conf.BrokerConfigError, match="is not empty"):
        mosquitto_conf.broker_dir_for(wanted)
    assert not (tmp_path / "fallback").exists() and (wanted / "data").is_dir()
    (wanted / "data").rmdir()
    home, said = mosquitto_conf.broker_dir_for(wanted)  # an empty one is replaced by the link
    assert wanted.is_symlink() and wanted.resolve() == home and said is not None
    assert mosquitto_conf.broker_dir_for(wanted) == (home, None)


def _unreachable_in(top: Path) -> Callable[[Path], None]:
    """``check_reachable`` for a broker user who cannot enter ``top/state``."""
    from pumpwatch.mosquitto_conf import BrokerConfigError

    def check(path: Path) -> None:
        if path.resolve().is_relative_to((top / "state").resolve()):
            raise BrokerConfigError(f"cannot enter {top}")
    return check


def _tcp_open(port: int) -> bool:
    from pumpwatch.stack.procs import tcp_open

    return tcp_open(port)


def _rows(pump: str, t0s: range, anomalous: bool, cond: str, baseline: str = "pump") -> list[
        ResultRow]:
    return [ResultRow(device="gw-01", pump=pump, channel=ch, t0_ns=t * 10**9, condition=cond,
                      anomalous=anomalous, baseline=baseline, stored_ns=t * 10**9 + 10**9)
            for t in t0s for ch in ("x", "y", "z")]


def test_standin_needs_three_of_five_flagged_windows_against_the_pumps_baseline() -> None:
    rows = (_rows("p01", range(10), False, "healthy")
            + _rows("p01", range(10, 12), True, "bearing_outer")  # 2 windows: no alarm yet
            + _rows("p01", range(12, 13), False, "healthy")
            + _rows("p01", range(13, 14), True, "bearing_outer")  # third of five: alarm
            + _rows("p02", range(14), True, "imbalance", baseline="fleet"))  # not judged
    alarms = standin_alarms(rows)
    assert [(a.pump, a.raised_ns, a.condition) for a in alarms] == [
        ("p01", 14 * 10**9, "bearing_outer")]


def test_score_counts_detection_classification_and_false_alarms() -> None:
    opts = StackOptions(pumps=2, healthy_s=10, fault_delay_s=0, onset_spacing_s=1)
    fleet = plan_fleet(opts)  # p01: outer_race at 10 s; p02 healthy
    rows = (_rows("p01", range(10), False, "healthy")
            + _rows("p01", range(10, 20), True, "bearing_outer")
            + _rows("p02", range(20), False, "healthy"))
    verdict = score(fleet=fleet, source_start_ns={"gw-01": 0}, alarms=standin_alarms(rows),
                    horizon_ns=20 * 10**9)
    assert verdict["faults_injected"] == verdict["faults_detected"] == 1
    assert verdict["faults_classified"] == 1 and verdict["false_alarms"] == 0
    assert verdict["detection_delay_s"] == {"p01": 3.0}
    early = _rows("p02", range(5), True, "cavitation")
    verdict = score(fleet=fleet, source_start_ns={"gw-01": 0},
                    alarms=standin_alarms(rows + early), horizon_ns=20 * 10**9)
    assert verdict["false_alarms"] == 1


def test_alarm_writer_episodes_are_read_with_the_class_their_reason_names() -> None:
    rows = [
        {"pump": "p01", "kind": "anomaly", "raised_ns": 12 * 10**9, "evidence": "[]",
         "reason": "3 of the last 5 windows anomalous (score 2.3 vs threshold 2, pump "
                   "baseline; condition healthy)"},
        {"pump": "p01", "kind": "anomaly", "raised_ns": 14 * 10**9, "evidence": "[]",
         "reason": "3 of the last 5 windows anomalous (...; condition bearing_outer)"},
        {"pump": "p02", "kind": "iso_zone", "raised_ns": 15 * 10**9, "evidence": "[]",
         "reason": "ISO 20816 zone B -> C (velocity RMS 2.86 mm/s)"},
        # raised before the model named it, rewritten with the diagnosis its windows developed
        {"pump": "p03", "kind": "anomaly", "raised_ns": 16 * 10**9, "evidence": "[]",
         "reason": "3 of the last 5 windows anomalous (...; condition healthy); diagnosis "
                   "imbalance (3 of the last 5 windows); cleared after 5 clean windows"},
    ]
    alarms = alarms_from_table(rows)
    assert [(a.pump, a.kind, a.condition, a.raised_ns) for a in alarms] == [
        ("p01", "anomaly", "healthy", 13 * 10**9),  # end of the raising window
        ("p01", "anomaly", "bearing_outer", 15 * 10**9),
        ("p02", "iso_zone", "unknown", 16 * 10**9),
        ("p03", "anomaly", "imbalance", 17 * 10**9),
    ]
    alarms = alarms[:3]
    fleet = plan_fleet(StackOptions(pumps=2, healthy_s=10, fault_delay_s=0))
    verdict = score(fleet=fleet, source_start_ns={"gw-01": 0}, alarms=alarms,
                    horizon_ns=20 * 10**9)
    # detected by the first episode, classified by a later one naming the class
    assert verdict["faults_detected"] == verdict["faults_classified"] == 1
    assert verdict["detection_delay_s"] == {"p01": 3.0}
    assert verdict["false_alarms"] == 1  # p02 is healthy


# --- the real stack -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stack-model") / "trained"
    subprocess.run(
        [sys.executable, "-m", "pumpwatch", "train", "--out", str(out), "--pumps-per-class",
         "4", "--test-pumps-per-class", "2", "--seconds", "2", "--quiet",
         "--model-version", "stack-test"],
        check=True, capture_output=True, cwd=ROOT, timeout=300,
    )
    return out


@pytest.fixture
def state(reachable: Path, trained: Path) -> Path:
    """The stack's state, with the trained model."""
    shutil.copytree(trained, reachable / "state" / "models" / "trained")
    return reachable / "state"


def _ports() -> list[str]:
    return ["--broker-port", str(free_port()), "--dashboard-port", str(free_port()),
            "--endpoint-port", str(free_port())]


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes mentioning ``marker`` (the test's state dir)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if marker in cmd and ") Z " not in stat:
            out.append(f"{pid}: {cmd}")
    return out


@needs_broker
def test_demo_end_to_end_scores_a_short_run(tmp_path: Path, state: Path) -> None:
    summary = tmp_path / "out.json"
    r = subprocess.run(
        [sys.executable, "-m", "pumpwatch", "--log-format", "json", "demo", "--pumps", "2",
         "--duration", "25",
         "--state", str(state), "--summary", str(summary), *_ports()],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert summary.exists(), r.stdout + r.stderr
    s = json.loads(summary.read_text())
    print(json.dumps(s))
    # 25 s x 2 pumps x 3 axes, every one stored
    assert s["published"] >= 140 and s["stored"] == s["published"] and s["lost"] == 0
    assert s["faults_injected"] == 1 and s["faults_detected"] == 1, s["pumps"]
    assert s["false_alarms"] == 0
    assert s["p50_ms"] is not None and s["p99_ms"] >= s["p50_ms"]
    assert s["detection_source"].startswith(("stand-in", "alarms table"))
    assert set(s["detection_delay_s"]) == {"p01"}
    assert r.returncode in (0, 3), r.stderr
    assert not _leftovers(str(state))
    # state is reused: certificates, trained model, registry, store
    assert (state / "pki" / "devices" / "gw-01.crt").exists()
    assert (state / "pumpwatch.db").exists()
    # --log-format reached the components: their logs are JSON lines (after the
    # supervisor's "--- time argv" header and what a component prints on stdout)
    for name in ("consumer", "edge-gw-01", "endpoint", "dashboard"):
        lines = (state / "logs" / f"{name}.log").read_text().splitlines()
        records = [json.loads(ln) for ln in lines if ln.startswith("{")]
        assert records or name == "dashboard", f"{name}: no JSON log lines"  # it logs little
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
        assert all(ln.startswith(("{", "--- ", "listening on ", "pumpwatch dashboard listening"))
                   for ln in lines), f"{name}: a log line that is not JSON"
    # the dashboard's alarm-change publisher connected with its own certificate (mTLS)
    dash_log = (state / "logs" / "dashboard.log").read_text()
    assert "mqtt connected to localhost" in dash_log and "pumpwatch-stack-dashboard" in dash_log


def _wait_for(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return False


@needs_broker
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_runs_until_a_signal_then_leaves_no_process(
        tmp_path: Path, state: Path, sig: signal.Signals) -> None:
    ports = _ports()
    dash = int(ports[3])
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pumpwatch", "up", "--pumps", "2", "--state", str(state),
             "--healthy-s", "8", *ports],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )
    try:
        # running: the status display shows stored results and the dashboard serves the fleet
        assert _wait_for(lambda: "stored" in log.read_text() and any(
            ln.startswith("consumer") and " stored 0 " not in ln
            for ln in log.read_text().splitlines()), 90), log.read_text()[-3000:]
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/pumps", timeout=5) as resp:
            pumps = json.loads(resp.read())["pumps"]
        assert {p["pump"] for p in pumps} <= {"p01", "p02"} and pumps
        text = log.read_text()
        assert f"http://127.0.0.1:{dash}/" in text and "reports/s" in text
        assert (state / "logs" / "edge-gw-01.log").is_file()  # no spaces in log names
        # a second stack on the same state is refused, naming the running one
        other = [str(free_port()) for _ in range(3)]
        second = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "up", "--state", str(state),
             "--broker-port", other[0], "--dashboard-port", other[1],
             "--endpoint-port", other[2]],
            capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert second.returncode == 2, second.stderr
        assert f"pid {proc.pid}" in second.stderr and f"dashboard {dash}" in second.stderr
        assert proc.poll() is None  # and the first one is unharmed
        proc.send_signal(sig)
        want = 130 if sig == signal.SIGINT else 0
        assert proc.wait(timeout=60) == want, log.read_text()[-3000:]
        if sig == signal.SIGINT:
            said = [ln for ln in log.read_text().splitlines() if "interrupted" in ln]
            assert len(said) == 1 and said[0].startswith("pumpwatch up: interrupted (Ctrl-C)")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "stopped;" in log.read_text()
    assert not _leftovers(str(state)), _leftovers(str(state))


@needs_broker
def test_ctrl_c_during_first_training_exits_130_saying_so(
        tmp_path: Path, reachable: Path) -> None:
    state = reachable / "state"  # no trained model: the stack trains first
    log = tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pumpwatch", "up", "--pumps", "2", "--state", str(state),
             *_ports()],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        assert _wait_for(lambda: "training the condition classifier" in log.read_text(), 60), \
            log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    said = [ln for ln in log.read_text().splitlines() if "interrupted" in ln]
    assert said == ["pumpwatch up: interrupted (Ctrl-C) while training the classifier "
                    "(nothing deployed; the next start trains again); stopping"], said
    assert not (state / "models" / "trained" / "training.json").exists()
    assert not _leftovers(str(state)), _leftovers(str(state))


@needs_broker
def test_a_port_in_use_is_a_clear_error_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "pumpwatch", "up", "--state", str(tmp_path / "state"),
             "--broker-port", str(free_port()), "--dashboard-port", str(busy),
             "--endpoint-port", str(free_port())],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
    assert r.returncode == 1
    assert f"port {busy} (dashboard) is already in use" in r.stderr
    assert "--dashboard-port" in r.stderr
    assert not (tmp_path / "state" / "models").exists()  # failed before training
