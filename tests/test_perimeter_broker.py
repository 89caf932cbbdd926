"""The broker perimeter against a real Mosquitto 2.0.11 configured as in production
(pumpwatch.mosquitto_conf: mTLS, the dynamic-security plugin, grants from cloud.roles).

Every wrong role gets PUBACK / SUBACK 0x87 and nothing is delivered; a device cannot
join the consumers' shared subscription, so not one report is dealt to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import pki
from cloud.roles import Role
from tests.infra.mosquitto import Mosquitto
from tests.infra.mqtt_identity import Identity

pytestmark = pytest.mark.usefixtures("require_mosquitto")

REFUSED = 0x87
SHARE = "$share/pumpwatch/pumpwatch/devices/+/reports"  # the consumer's default subscription
ROLES: dict[str, Role] = {
    "gw-a": "device", "gw-b": "device", "consumer": "consumer", "dashboard": "dashboard",
    "ops": "operator",
}


@pytest.fixture(scope="module")
def pkidir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    pki.init_ca(d)
    for name, role in ROLES.items():
        pki.issue(d, role, name)
    return d


@pytest.fixture
def broker(tmp_path: Path, pkidir: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "mosquitto", tls_pki=pkidir).start()
    yield b
    b.stop()


@pytest.fixture
def ids(broker: Mosquitto, pkidir: Path) -> Iterator[dict[str, Identity]]:
    made = {name: Identity(broker, pkidir, role, name) for name, role in ROLES.items()}
    yield made
    for c in made.values():
        c.close()


def settle(ids: dict[str, Identity], topic: str, payload: bytes) -> None:
    """Wait until the operator (reads everything below the root) has ``payload`` on ``topic``:
    anything published before it has been routed by then (one connection, in order)."""
    deadline = time.monotonic() + 5
    while (topic, payload, False) not in ids["ops"].messages():
        assert time.monotonic() < deadline, f"{topic} never arrived"
        time.sleep(0.01)


def test_non_device_roles_cannot_publish_reports_and_nothing_is_delivered(
    ids: dict[str, Identity],
) -> None:
    assert ids["ops"].sub("pumpwatch/#") == 1
    assert ids["consumer"].sub(SHARE) == 1
    for name in ("consumer", "dashboard", "ops"):
        c = ids[name]
        for topic in (f"pumpwatch/devices/{name}/reports", "pumpwatch/devices/gw-a/reports",
                      f"pumpwatch/devices/{name}/status"):
            assert c.pub(topic, b"forged") == REFUSED, (name, topic)
    assert ids["gw-a"].pub("pumpwatch/devices/gw-b/reports", b"forged") == REFUSED
    assert ids["gw-a"].pub("pumpwatch/devices/gw-a/reports", b"real") == 0
    settle(ids, "pumpwatch/devices/gw-a/reports", b"real")
    for c in ids.values():
        assert not [m for m in c.messages() if m[1] == b"forged"], c.name
    assert [m[:2] for m in ids["consumer"].messages()] == [
        ("pumpwatch/devices/gw-a/reports", b"real")
    ]


def test_roles_read_and_write_only_what_the_table_grants(ids: dict[str, Identity]) -> None:
    dev, con, dash, ops = ids["gw-a"], ids["consumer"], ids["dashboard"], ids["ops"]
    # devices subscribe to nothing but their own confirmations
    for topic in (SHARE, "$share/other/pumpwatch/devices/+/reports", "pumpwatch/devices/+/reports",
                  "pumpwatch/#", "#", "pumpwatch/sites/#", "pumpwatch/acks/gw-b",
                  "pumpwatch/acks/+", "$share/x/pumpwatch/acks/gw-a"):
        assert dev.sub(topic) == REFUSED, topic
    assert dev.sub("pumpwatch/acks/gw-a") == 1
    # the dashboard and the operator read, but can never join the consumers' group
    assert dash.sub(SHARE) == REFUSED and ops.sub(SHARE) == REFUSED
    assert dash.sub("pumpwatch/devices/+/reports") == REFUSED
    assert dash.sub("pumpwatch/sites/#") == 1 and dash.sub("pumpwatch/devices/+/status") == 1
    # results and confirmations are written by consumers only
    for c in (dev, dash, ops):
        assert c.pub("pumpwatch/sites/lab/pumps/p1/condition") == REFUSED, c.name
        assert c.pub("pumpwatch/acks/gw-a") == REFUSED, c.name
    assert con.pub("pumpwatch/sites/lab/pumps/p1/condition", b"c1") < 0x80
    assert dev.pub("pumpwatch/devices/gw-a/status", b"s1") < 0x80
    assert con.pub("pumpwatch/devices/gw-a/status") == REFUSED


def test_a_device_reads_only_its_own_confirmations(ids: dict[str, Identity]) -> None:
    a, b, con = ids["gw-a"], ids["gw-b"], ids["consumer"]
    assert a.sub("pumpwatch/acks/gw-a") == 1
    assert b.sub("pumpwatch/acks/gw-a") == REFUSED
    assert b.sub("pumpwatch/acks/+") == REFUSED and b.sub("pumpwatch/acks/#") == REFUSED
    assert b.sub("pumpwatch/acks/gw-b") == 1
    assert ids["ops"].sub("pumpwatch/acks/#") == 1
    assert con.pub("pumpwatch/acks/gw-a", b"ack-a") == 0
    assert con.pub("pumpwatch/acks/gw-b", b"ack-b") == 0
    settle(ids, "pumpwatch/acks/gw-b", b"ack-b")
    deadline = time.monotonic() + 5
    while not a.messages() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m[:2] for m in a.messages()] == [("pumpwatch/acks/gw-a", b"ack-a")]
    assert [m[:2] for m in b.messages()] == [("pumpwatch/acks/gw-b", b"ack-b")]


def test_retained_messages_below_a_device_are_only_its_own_status(
    ids: dict[str, Identity], broker: Mosquitto, pkidir: Path
) -> None:
    """The ACLs cannot see the retain flag; the retain guard plugin (loaded before dynamic
    security) refuses a retained publish outside the role table's retain grants."""
    assert broker.retain_guard is not None, "no C compiler: the retain guard was not built"
    dev, other, con = ids["gw-a"], ids["gw-b"], ids["consumer"]
    assert dev.pub("pumpwatch/devices/gw-a/status", b"up", retain=True) < 0x80
    # its own reports topic: it may publish there, but not retained (nor clear a retained one)
    assert dev.pub("pumpwatch/devices/gw-a/reports", b"kept?", retain=True) == REFUSED
    assert dev.pub("pumpwatch/devices/gw-a/reports", b"", retain=True) == REFUSED
    assert dev.pub("pumpwatch/devices/gw-a/reports", b"live") < 0x80  # the guard defers
    for leaf in ("x", "status/x", "reports/x", "a/b/c", "alarms"):
        assert dev.pub(f"pumpwatch/devices/gw-a/{leaf}", b"junk", retain=True) == REFUSED, leaf
    # %u matches only the client's own name: another device's status is not its to retain
    assert other.pub("pumpwatch/devices/gw-a/status", b"forged", retain=True) == REFUSED
    # consumers retain results, never confirmations (they may publish those unretained)
    assert con.pub("pumpwatch/sites/lab/pumps/p1/condition", b"c1", retain=True) < 0x80
    assert con.pub("pumpwatch/acks/gw-a", b"a1", retain=True) == REFUSED
    assert con.pub("pumpwatch/acks/gw-a", b"a2") < 0x80
    late = Identity(broker, pkidir, "operator", "ops")
    try:
        assert late.sub("pumpwatch/#") == 1
        # retained messages are queued at the SUBSCRIBE, before anything published after it
        assert con.pub("pumpwatch/sites/lab/pumps/p1/alarms", b"marker") < 0x80
        deadline = time.monotonic() + 5
        while not any(m[1] == b"marker" for m in late.messages()):
            assert time.monotonic() < deadline, "the marker never arrived"
            time.sleep(0.01)
        retained = sorted((t, p) for t, p, r in late.messages() if r)
    finally:
        late.close()
    assert retained == [("pumpwatch/devices/gw-a/status", b"up"),
                        ("pumpwatch/sites/lab/pumps/p1/condition", b"c1")]
    log = broker.log_tail(200)
    assert "refused a retained publish by gw-a on pumpwatch/devices/gw-a/reports" in log, log


def test_a_device_cannot_join_the_share_and_not_one_report_goes_missing(
    ids: dict[str, Identity],
) -> None:
    """Mosquitto deals a shared subscription round-robin and drops a member's share when it
    may not read it; the plugin refuses the SUBSCRIBE, so the device is never a member."""
    con, dev, victim = ids["consumer"], ids["gw-b"], ids["gw-a"]
    assert con.sub(SHARE) == 1
    codes: list[int] = []
    stop = threading.Event()

    def keep_trying() -> None:
        while not stop.is_set():
            codes.append(dev.sub(SHARE))

    t = threading.Thread(target=keep_trying)
    t.start()
    try:
        for i in range(300):
            assert victim.pub("pumpwatch/devices/gw-a/reports", b"r%d" % i) == 0
    finally:
        stop.set()
        t.join()
    deadline = time.monotonic() + 10
    while len(con.messages()) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert codes and set(codes) == {REFUSED}
    assert sorted(p for _, p, _ in con.messages()) == sorted(b"r%d" % i for i in range(300))
    assert not dev.messages()


def test_a_name_the_broker_config_does_not_list_can_do_nothing(
    broker: Mosquitto, pkidir: Path
) -> None:
    late = Identity(broker, pkidir, "device", "gw-issued-later")  # issued after the config
    try:
        assert late.pub("pumpwatch/devices/gw-issued-later/reports") == REFUSED
        assert late.sub("pumpwatch/acks/gw-issued-later") == REFUSED
    finally:
        late.close()


def test_the_grants_follow_the_topic_root(tmp_path: Path, pkidir: Path) -> None:
    with Mosquitto(tmp_path / "m", tls_pki=pkidir, tls_root="plant/7") as b:
        dev = Identity(b, pkidir, "device", "gw-a")
        con = Identity(b, pkidir, "consumer", "consumer")
        try:
            assert dev.pub("plant/7/devices/gw-a/reports") == 16  # granted, no subscriber yet
            assert dev.pub("pumpwatch/devices/gw-a/reports") == REFUSED
            assert con.sub("$share/g/plant/7/devices/+/reports") == 1
            assert con.sub(SHARE) == REFUSED
            assert dev.sub("plant/7/acks/gw-a") == 1
        finally:
            dev.close()
            con.close()
