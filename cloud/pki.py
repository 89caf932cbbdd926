"""A small local certificate authority for the self-hosted stack (operator side).

Theory of operation
-------------------
Every MQTT client authenticates with its own X.509 certificate, signed by one
CA that the broker trusts (``require_certificate``). The broker takes the
certificate's common name as the MQTT username (``use_identity_as_username``),
and the dynamic-security configuration grants by the role held by that name,
so **the CN is the identity**: a device's CN is its device name (= AWS IoT
thing name), a consumer's, dashboard's or operator's CN is its client name.
Every certificate also carries its role (device, consumer, dashboard,
operator; :mod:`cloud.roles`) as its subject's organizational unit, which is
what the broker configuration is generated from (:func:`identities`). All
names share one namespace; :func:`issue` refuses a name already issued under
another role, so no device can ever hold a client's permissions, and refuses
names outside DESIGN.md's name rule (they become topic levels).

Layout of a PKI directory (``DIR``)::

    ca.crt  ca.key                        the CA (keep ca.key offline in production)
    broker.crt  broker.key                the broker's server certificate
    devices/NAME.crt  devices/NAME.key    one per device (clientAuth)
    clients/NAME.crt  clients/NAME.key    one per consumer / dashboard / operator (clientAuth)

Keys are ECDSA P-256 (accepted by Mosquitto/OpenSSL, awscrt/s2n and AWS IoT),
written with mode 0600 and never overwritten unless ``force``. Certificates
are public (0644). The edge never imports this module: gateways only *use*
certificate files; issuing them is a CA task (and needs ``cryptography``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.roles import ROLE_NAMES, Role
from dsp.report import NAME_RE, NAME_RULE

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS = 3650
LEAF_DAYS = 825
_DIRS: dict[str, str] = {"device": "devices", "consumer": "clients", "dashboard": "clients",
                         "operator": "clients"}


class PkiError(RuntimeError):
    """The operator asked for something the PKI cannot do (bad name, missing CA, exists)."""


@dataclass(frozen=True, slots=True)
class Issued:
    """Where one certificate and its key were written."""

    cert: Path
    key: Path
    subject: str
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, force: bool) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if force:
        path.unlink(missing_ok=True)
    # created 0600 from the first byte: never world-readable, not even briefly
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)  # the umask cannot widen it, but an old file could be wider


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(path, 0o644)


def _refuse_existing(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise PkiError(f"refusing to overwrite {existing} (use --force to replace)")


def _name(cn: str, org: str = "pumpwatch", role: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if role is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def init_ca(
    pki_dir: str | Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    ca_name: str = "pumpwatch local CA",
    days: int = CA_DAYS,
    force: bool = False,
) -> tuple[Issued, Issued]:
    """Create ``ca.crt|key`` and ``broker.crt|key`` (``hosts`` in subjectAltName)."""
    d = Path(pki_dir)
    paths = [d / "ca.crt", d / "ca.key", d / "broker.crt", d / "broker.key"]
    _refuse_existing(paths, force)
    if not hosts:
        raise PkiError("the broker certificate needs at least one host name or IP")
    key = _key()
    now = _now()
    subject = _name(ca_name)
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(d / "ca.key", key, force=force)
    _write_cert(d / "ca.crt", ca)
    ca_issued = Issued(d / "ca.crt", d / "ca.key", ca_name, ca.not_valid_after_utc)
    broker = _issue_leaf(
        d, "broker", d / "broker.crt", d / "broker.key", server_hosts=hosts, force=force
    )
    return ca_issued, broker


def load_ca(pki_dir: str | Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    d = Path(pki_dir)
    try:
        cert = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((d / "ca.key").read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(
            f"no CA in {d} (ca.crt and ca.key): run `pumpwatch certs init --dir {d}` first"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{d / 'ca.key'} is not an EC key")
    return cert, key


def _issue_leaf(
    d: Path,
    cn: str,
    cert_path: Path,
    key_path: Path,
    *,
    server_hosts: Sequence[str] | None = None,
    role: Role | None = None,
    days: int = LEAF_DAYS,
    force: bool = False,
) -> Issued:
    ca_cert, ca_key = load_ca(d)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    key = _key()
    now = _now()
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, role=role))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([eku]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_hosts:
        b = b.add_extension(_san(server_hosts), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    _write_key(key_path, key, force=force)
    _write_cert(cert_path, cert)
    return Issued(cert_path, key_path, cn, cert.not_valid_after_utc)


def issued_path(pki_dir: str | Path, role: Role, name: str) -> tuple[Path, Path]:
    """``(cert, key)`` paths of ``name`` of ``role`` in ``pki_dir``."""
    base = Path(pki_dir) / _DIRS[role]
    return base / f"{name}.crt", base / f"{name}.key"


def issue(
    pki_dir: str | Path, role: Role, name: str, *, days: int = LEAF_DAYS, force: bool = False
) -> Issued:
    """Issue a clientAuth certificate with CN = ``name`` and OU = ``role``."""
    if role not in ROLE_NAMES:
        raise PkiError(f"role must be one of {', '.join(ROLE_NAMES)}, got {role!r}")
    if not NAME_RE.match(name):
        raise PkiError(
            f"{role} name must be {NAME_RULE}: it becomes the MQTT username and a topic "
            f"level; got {name!r}"
        )
    if name == "broker":
        raise PkiError("'broker' is the broker's own certificate name")
    cert_path, key_path = issued_path(pki_dir, role, name)
    held = identities(pki_dir).get(name)
    if held is not None and held != role:
        raise PkiError(
            f"{name!r} is already issued as a {held}: all roles share one namespace "
            "(the CN is the broker username)"
        )
    if held is None and cert_path.exists() and not force:
        raise PkiError(f"{cert_path} exists without a role; remove it or use another name")
    _refuse_existing([cert_path, key_path], force)
    return _issue_leaf(
        Path(pki_dir), name, cert_path, key_path, role=role, days=days, force=force
    )


def _subject(cert_path: Path, oid: x509.ObjectIdentifier) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    attrs = cert.subject.get_attributes_for_oid(oid)
    return str(attrs[0].value) if attrs else ""


def common_name(cert_path: str | Path) -> str:
    """The CN of a PEM certificate (what the broker takes as the username)."""
    return _subject(Path(cert_path), NameOID.COMMON_NAME)


def role_of(cert_path: str | Path) -> Role | None:
    """The role a certificate carries (its OU), or None for one issued without a role."""
    ou = _subject(Path(cert_path), NameOID.ORGANIZATIONAL_UNIT_NAME)
    for r in ROLE_NAMES:
        if r == ou:
            return r
    return None


def identities(pki_dir: str | Path) -> dict[str, Role]:
    """Every identity issued in ``pki_dir`` with a role: CN -> role.

    Certificates without a role (issued before roles existed) are left out, so the
    broker grants them nothing; a CN held under two roles is refused."""
    found: dict[str, Role] = {}
    for sub in sorted(set(_DIRS.values())):
        for crt in sorted((Path(pki_dir) / sub).glob("*.crt")):
            role, cn = role_of(crt), common_name(crt)
            if role is None or _DIRS[role] != sub:
                continue
            if found.get(cn, role) != role:
                raise PkiError(f"{cn!r} is issued as both {found[cn]} and {role} in {pki_dir}")
            found[cn] = role
    return found
