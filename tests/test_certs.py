"""`pumpwatch certs`: the local CA, device and client certificates, key permissions,
and the generated Mosquitto config (the broker tests are in tests/edge/test_mtls.py)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cloud import pki
from cloud.roles import dynsec_config
from pumpwatch.cli import main
from tests.infra.mosquitto import free_port

ROOT = Path(__file__).resolve().parent.parent


def load(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def test_cli_issues_ca_broker_device_and_client(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 0
    assert main(["certs", "consumer", "consumer", "--dir", str(d)]) == 0
    assert main(["certs", "operator", "ops", "--dir", str(d)]) == 0
    for key in ("ca.key", "broker.key", "devices/gw-1.key", "clients/consumer.key"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600, key
    ca = load(d / "ca.crt")
    broker = load(d / "broker.crt")
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    dev = load(d / "devices" / "gw-1.crt")
    assert pki.common_name(d / "devices" / "gw-1.crt") == "gw-1"
    eku = dev.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert dev.issuer == ca.subject
    dev.verify_directly_issued_by(ca)
    assert pki.common_name(d / "clients" / "consumer.crt") == "consumer"
    assert pki.role_of(d / "devices" / "gw-1.crt") == "device"
    assert pki.identities(d) == {"gw-1": "device", "consumer": "consumer", "ops": "operator"}


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 2  # no CA yet
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "init", "--dir", str(d)]) == 2  # never overwrites a CA
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 0
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 2
    assert main(["certs", "device", "gw-1", "--dir", str(d), "--force"]) == 0
    assert main(["certs", "consumer", "gw-1", "--dir", str(d)]) == 2  # one namespace
    assert main(["certs", "dashboard", "gw-1", "--dir", str(d)]) == 2
    err = capsys.readouterr().err
    assert "run `pumpwatch certs init" in err and "share one namespace" in err


@pytest.mark.parametrize(
    "name", ["+", "#", "a/b", "x#", "a\x00b", "../../etc/passwd", "<b>x</b>", "a b", "",
             "é", "x" * 65, "gw\n1", "gw1\n"],
)
def test_device_names_outside_the_rule_are_refused(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "pki"
    pki.init_ca(d)
    assert main(["certs", "device", name, "--dir", str(d)]) == 2
    assert "1-64 characters" in capsys.readouterr().err
    assert not list((d / "devices").glob("*")) if (d / "devices").exists() else True
    assert main(["certs", "device", "gw-1.a_b:c-" + "x" * 53, "--dir", str(d)]) == 0


def test_broker_config_and_acl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    for role, name in (("device", "gw-1"), ("consumer", "consumer"), ("dashboard", "dash")):
        assert main(["certs", role, name, "--dir", str(d)]) == 0
    if os.geteuid() == 0:  # the broker user cannot enter pytest's 0700 tmp root: refused
        argv = ["certs", "broker-config", "--dir", str(d), "--out", str(tmp_path / "b")]
        assert main(argv) == 2
        assert "cannot enter" in capsys.readouterr().err
        assert not (tmp_path / "b").exists()  # refused before writing anything
    top = tempfile.TemporaryDirectory(prefix="pumpwatch-test-broker-")
    os.chmod(top.name, 0o711)  # noqa: S103 - traversable, as /etc/mosquitto or /var/lib are
    out = Path(top.name) / "broker"
    port = free_port()
    assert (
        main(["certs", "broker-config", "--dir", str(d), "--out", str(out), "--port", str(port)])
        == 0
    )
    conf = (out / "mosquitto.conf").read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        f"listener {port} 127.0.0.1",
    ):
        assert line in conf
    assert "user mosquitto" in conf and "user root" not in conf
    assert "mosquitto_dynamic_security.so" in conf and "acl_file" not in conf
    sec = json.loads((out / "dynamic-security.json").read_text())
    assert sec == dynsec_config({"gw-1": "device", "consumer": "consumer", "dash": "dashboard"})
    assert stat.S_IMODE((out / "tls" / "broker.key").stat().st_mode) == 0o600
    # mosquitto accepts the file (it would exit at once on a syntax error)
    proc = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(out / "mosquitto.conf")], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        if os.geteuid() == 0:  # it dropped root: runs as `mosquitto`, which owns its directory
            uid = int(next(x for x in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                           if x.startswith("Uid:")).split()[1])
            assert uid == pwd.getpwnam("mosquitto").pw_uid
            assert (out / "data").stat().st_uid == uid
    finally:
        proc.terminate()
        proc.wait(5)
        top.cleanup()


def test_no_secrets_are_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not [f for f in tracked.splitlines() if f.endswith((".key", ".pem"))]
