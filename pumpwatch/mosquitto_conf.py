"""Mosquitto configuration for the local stack: an mTLS listener and grants by role.

Theory of operation
-------------------
The listener requires a client certificate signed by the local CA
(``require_certificate``) and takes its common name as the MQTT username
(``use_identity_as_username``); no certificate, a certificate from another CA,
or a plain-TCP client never gets to MQTT at all.

Authorization is Mosquitto's **dynamic-security plugin**, configured from the
one role table in :mod:`cloud.roles` (:func:`cloud.roles.dynsec_config`): every
identity issued in the PKI directory (CN -> role, read from the certificates,
:func:`cloud.pki.identities`) becomes a client with its role's grants, and
default access is deny. Unlike an ``acl_file`` (whose ``pattern`` lines apply
to every client and which grants every SUBSCRIBE), the plugin refuses a
subscription that no grant matches: a device's ``$share/...`` subscription gets
SUBACK 0x87, so it is never dealt a share of the fleet's reports. A publish to
a forbidden topic gets PUBACK 0x87 and is not delivered or stored. A CN the
configuration does not list can do nothing: issue the certificate, then write
the configuration again and restart the broker.

The ACLs cannot see the retain flag, so the **retain guard**
(``pumpwatch/retain_guard.c``, built here with the machine's C compiler by
:func:`build_retain_guard`, no C library or Mosquitto headers needed) is loaded
before the dynamic-security plugin: a retained publish outside the role table's
``retain`` grants (:func:`cloud.roles.retain_filters`) gets PUBACK 0x87 and is
neither stored nor delivered, and the broker logs a warning naming the client.
Without a C compiler the configuration is written without it (said on stderr):
a device can then leave one retained message on its reports topic, at most
``max_packet_size`` bytes (it may publish on no other topic).

Started as root, Mosquitto drops to the ``mosquitto`` user (``user mosquitto``)
before it reads its TLS key and the plugin's file; :func:`write_broker_config`
then hands the broker's own directory (persistence, security file, a copy of
the broker key) to that user.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloud.roles import Role, dynsec_config, retain_filters

BROKER_USER = "mosquitto"
#: where :func:`broker_dir_for` puts a broker directory its user could not reach where
#: it was asked for (a checkout under root's 0700 home, say)
BROKER_FALLBACK_ROOT = Path("/var/lib/pumpwatch")
#: where distributions put the plugin (Debian/Ubuntu multiarch, then the upstream layout)
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


@dataclass(frozen=True, kw_only=True)
class BrokerFiles:
    conf: Path
    security: Path
    identities: dict[str, Role]
    retain_guard: Path | None = None


RETAIN_GUARD_SOURCE = Path(__file__).with_name("retain_guard.c")
RETAIN_GUARD_NAME = "pumpwatch_retain_guard.so"


def build_retain_guard(out_dir: str | Path) -> Path | None:
    """Compile the retain guard plugin into ``out_dir``; None when there is no C compiler
    (``$CC``, else ``cc``) or it fails (the compiler's output goes to stderr).

    Without a compiler, a plugin built beforehand is copied from ``$PUMPWATCH_RETAIN_GUARD``
    when that names a file (the pumpwatch image builds one in a stage of its own, so the
    compose stack's init container needs no compiler)."""
    out = Path(out_dir) / RETAIN_GUARD_NAME
    tmp = out.with_suffix(".so.tmp")
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        prebuilt = os.environ.get("PUMPWATCH_RETAIN_GUARD")
        if not prebuilt or not os.path.isfile(prebuilt):
            return None
        shutil.copyfile(prebuilt, tmp)
        tmp.chmod(0o644)
        tmp.replace(out)
        return out
    p = subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-nostdlib", "-o", str(tmp), str(RETAIN_GUARD_SOURCE)],
        capture_output=True, text=True, check=False,
    )
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        tmp.unlink(missing_ok=True)
        return None
    tmp.chmod(0o644)
    tmp.replace(out)
    return out


def dynsec_plugin() -> str:
    """The path of ``mosquitto_dynamic_security.so`` on this machine (the first that exists)."""
    for p in DYNSEC_PLUGIN_PATHS:
        if os.path.exists(p):
            return p
    return DYNSEC_PLUGIN_PATHS[0]


def security_json(identities: Mapping[str, Role], *, root: str = "pumpwatch") -> str:
    """The dynamic-security plugin's file for ``identities`` (CN -> role)."""
    return json.dumps(dynsec_config(identities, root=root), indent=2) + "\n"


def tls_listener_conf(
    *,
    port: int,
    host: str,
    pki_dir: str | Path,
    security_path: str | Path,
    plugin: str | None = None,
    retain_guard: str | Path | None = None,
    root: str = "pumpwatch",
) -> str:
    """The mTLS listener and the security settings (append to a base config).

    ``retain_guard`` (the built plugin, :func:`build_retain_guard`) is loaded first:
    Mosquitto asks the plugins in load order and takes the first answer that is not
    "defer", and the guard defers on everything but a retained publish it refuses."""
    d = Path(pki_dir).resolve()
    guard = (
        [
            "# retained publishes only where the role table grants retain (cloud/roles.py)",
            f"plugin {Path(retain_guard).resolve()}",
            f"plugin_opt_retain {' '.join(retain_filters(root=root))}",
        ]
        if retain_guard is not None
        else []
    )
    return "\n".join(
        [
            "# mutual TLS: a certificate from our CA is the only way in; its CN is the username",
            "per_listener_settings false",
            "allow_anonymous false",
            *guard,
            "# grants by role (cloud/roles.py), default deny",
            f"plugin {plugin or dynsec_plugin()}",
            f"plugin_opt_config_file {Path(security_path).resolve()}",
            f"listener {port} {host}",
            "protocol mqtt",
            f"cafile {d / 'ca.crt'}",
            f"certfile {d / 'broker.crt'}",
            f"keyfile {d / 'broker.key'}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "",
        ]
    )


def mosquitto_conf(
    *,
    port: int,
    host: str,
    pki_dir: str | Path,
    security_path: str | Path,
    data_dir: str | Path,
    plugin: str | None = None,
    retain_guard: str | Path | None = None,
    root: str = "pumpwatch",
    autosave_interval: int = 1,
    max_inflight_messages: int = 100,
    max_queued_messages: int = 1_000_000,
) -> str:
    """A complete broker config for the local stack.

    Persistence is saved every ``autosave_interval`` seconds: a SIGKILLed broker
    loses at most that much acknowledged traffic (SIGTERM saves first). The
    in-flight and queue limits are raised from Mosquitto's defaults (20 and 1000,
    excess silently dropped) so a fleet's backlog after an outage survives.
    ``max_packet_size`` is AWS IoT Core's 128 KiB: a client that sends a bigger
    packet is disconnected (MQTT 5 reason 0x95 Packet too large), as on AWS."""
    lines = [
        "# written by pumpwatch (pumpwatch/mosquitto_conf.py)",
        f"user {BROKER_USER}",
        "persistence true",
        f"persistence_location {Path(data_dir).resolve()}/",
        "persistence_file mosquitto.db",
        f"autosave_interval {autosave_interval}",
        "autosave_on_changes false",
        f"max_inflight_messages {max_inflight_messages}",
        f"max_queued_messages {max_queued_messages}",
        "max_queued_bytes 0",
        "max_packet_size 131072",
        "log_dest stderr",
        "connection_messages true",
    ]
    return (
        "\n".join(lines)
        + "\n"
        + tls_listener_conf(
            port=port, host=host, pki_dir=pki_dir, security_path=security_path, plugin=plugin,
            retain_guard=retain_guard, root=root,
        )
    )


class BrokerConfigError(RuntimeError):
    """The broker could not run from here as its user (the message says why)."""


def hand_to_broker_user(top: Path, uid: int | None = None) -> None:
    """As root: make ``top`` (and everything below it) owned by the broker's user, and
    refuse a place that user cannot reach (a parent directory it cannot traverse).

    ``uid``: the broker runs elsewhere (a container) as this uid (and gid): chown only,
    the parents there are not these. Not root, or no ``mosquitto`` user here and no
    ``uid``: nothing to do."""
    if os.geteuid() != 0:
        return
    if uid is not None:
        for p in [top, *top.rglob("*")]:
            os.chown(p, uid, uid)
        return
    pw = _broker_user()
    if pw is None:
        return
    check_reachable(top)
    for p in [top, *top.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


def _broker_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(BROKER_USER)
    except KeyError:
        return None


def check_reachable(top: Path) -> None:
    """As root, with a ``mosquitto`` user here: refuse a ``top`` it cannot traverse to."""
    pw = _broker_user() if os.geteuid() == 0 else None
    if pw is None:
        return
    top = top.resolve()
    for parent in top.parents:
        st = parent.stat()
        if not (st.st_mode & 0o001 or (st.st_gid == pw.pw_gid and st.st_mode & 0o010)
                or (st.st_uid == pw.pw_uid and st.st_mode & 0o100)):
            raise BrokerConfigError(
                f"the broker runs as {BROKER_USER!r}, which cannot enter {parent} (mode "
                f"{st.st_mode & 0o777:o}): put the broker directory {top} somewhere it can"
            )


def broker_dir_for(wanted: Path) -> tuple[Path, str | None]:
    """The directory the broker runs from for ``wanted`` (resolved), and a line to tell
    the user when it is not ``wanted`` itself.

    ``wanted`` is used when the broker's user can reach it (or there is nothing to
    check: not root, no ``mosquitto`` user). Otherwise (as root, ``wanted`` below a
    directory that user cannot traverse, such as ``/root``) the broker gets
    ``BROKER_FALLBACK_ROOT/broker-<digest of wanted>`` and ``wanted`` becomes a symlink
    to it, so a second start finds the same persistence (through the link, which
    resolves to a place that user reaches: nothing to say then); an empty directory already at
    ``wanted`` is replaced by the link, anything else there is refused
    (:class:`BrokerConfigError`), as is a fallback the user cannot reach either."""
    try:
        check_reachable(wanted)
        return wanted.resolve(), None
    except BrokerConfigError as exc:
        refused = exc
    digest = hashlib.sha256(str(wanted.absolute()).encode()).hexdigest()[:12]
    target = BROKER_FALLBACK_ROOT / f"broker-{digest}"
    if wanted.is_dir() and not wanted.is_symlink():
        if any(wanted.iterdir()):
            raise BrokerConfigError(f"{refused}; {wanted} is not empty, so it was not "
                                    f"moved to {target}") from None
        wanted.rmdir()
    elif wanted.exists() or wanted.is_symlink():
        raise BrokerConfigError(f"{refused}; {wanted} is in the way of a link to "
                                f"{target}") from None
    target.mkdir(parents=True, exist_ok=True)
    try:
        check_reachable(target)
    except BrokerConfigError as exc:
        raise BrokerConfigError(f"{refused}; the fallback {target} is out of its reach too "
                                f"({exc})") from None
    wanted.parent.mkdir(parents=True, exist_ok=True)
    wanted.symlink_to(target, target_is_directory=True)
    return target.resolve(), (f"the broker runs as {BROKER_USER!r}, which cannot reach "
                              f"{wanted.parent}: its directory is {target} "
                              f"(linked from {wanted})")


def write_broker_config(
    out_dir: str | Path,
    *,
    pki_dir: str | Path,
    port: int = 8883,
    host: str = "127.0.0.1",
    roles: Mapping[str, Role] | None = None,
    prefix: str = "pumpwatch",
    extra_identities: Sequence[tuple[str, Role]] = (),
    plugin: str | None = None,
    broker_uid: int | None = None,
) -> BrokerFiles:
    """Write ``mosquitto.conf`` and ``dynamic-security.json`` into ``out_dir``.

    The identities are those issued in ``pki_dir`` (``roles`` replaces that scan,
    ``extra_identities`` adds to it). The broker's certificate, key and the CA
    certificate are copied to ``out_dir/tls``. As root, ``out_dir`` is handed to the
    ``mosquitto`` user the broker runs as (:func:`hand_to_broker_user`).
    """
    from cloud.pki import identities as issued

    out = Path(out_dir)
    if broker_uid is None:
        check_reachable(out)  # before writing anything
    (out / "data").mkdir(parents=True, exist_ok=True)
    who = dict(roles) if roles is not None else issued(pki_dir)
    who.update(dict(extra_identities))
    security = out / "dynamic-security.json"
    security.write_text(security_json(who, root=prefix))
    os.chmod(security, 0o600)
    tls = out / "tls"
    tls.mkdir(exist_ok=True)
    for name, mode in (("ca.crt", 0o644), ("broker.crt", 0o644), ("broker.key", 0o600)):
        (tls / name).unlink(missing_ok=True)
        # created with its final mode: the key is never readable by others, not even briefly
        fd = os.open(tls / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write((Path(pki_dir) / name).read_bytes())
    guard = build_retain_guard(out)
    if guard is None:
        print(
            "pumpwatch: no C compiler and no prebuilt $PUMPWATCH_RETAIN_GUARD: the broker "
            "config is written without the retain guard (a device can leave one retained "
            "message on its reports topic)",
            file=sys.stderr,
        )
    conf = out / "mosquitto.conf"
    conf.write_text(
        mosquitto_conf(
            port=port, host=host, pki_dir=tls, security_path=security, data_dir=out / "data",
            plugin=plugin, retain_guard=guard, root=prefix,
        )
    )
    hand_to_broker_user(out, broker_uid)
    return BrokerFiles(conf=conf, security=security, identities=who, retain_guard=guard)
