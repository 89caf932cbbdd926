"""`pumpwatch certs`: the local CA, device and client certificates, key permissions,
and the generated Mosquitto config (the broker tests are in tests/edge/test_mtls.py)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cloud import pki
from pumpwatch.cli import main
from pumpwatch.mosquitto_conf import acl_text

ROOT = Path(__file__).resolve().parent.parent


def load(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def test_cli_issues_ca_broker_device_and_client(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 0
    assert main(["certs", "client", "consumer", "--dir", str(d)]) == 0
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


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "pki"
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 2  # no CA yet
    assert main(["certs", "init", "--dir", str(d)]) == 0
    assert main(["certs", "init", "--dir", str(d)]) == 2  # never overwrites a CA
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 0
    assert main(["certs", "device", "gw-1", "--dir", str(d)]) == 2
    assert main(["certs", "device", "gw-1", "--dir", str(d), "--force"]) == 0
    assert main(["certs", "client", "gw-1", "--dir", str(d)]) == 2  # one namespace
    assert main(["certs", "device", "a/b", "--dir", str(d)]) == 2
    err = capsys.readouterr().err
    assert "run `pumpwatch certs init" in err and "share one namespace" in err


def test_broker_config_and_acl(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert main(["certs", "init", "--dir", str(d)]) == 0
    out = tmp_path / "broker"
    assert (
        main(["certs", "broker-config", "--dir", str(d), "--out", str(out), "--port", "8884"]) == 0
    )
    conf = (out / "mosquitto.conf").read_text()
    for line in (
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "listener 8884 127.0.0.1",
    ):
        assert line in conf
    acl = (out / "acl").read_text()
    assert "pattern write pumpwatch/devices/%u/#" in acl
    assert "topic read $share/+/pumpwatch/devices/+/reports" in acl
    assert acl == acl_text()
    # mosquitto accepts the file (it would exit at once on a syntax error)
    proc = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(out / "mosquitto.conf")], stderr=subprocess.PIPE
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.0)
    finally:
        proc.terminate()
        proc.wait(5)


def test_no_secrets_are_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not [f for f in tracked.splitlines() if f.endswith((".key", ".pem"))]
