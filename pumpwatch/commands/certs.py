"""``pumpwatch certs init|device|client|broker-config``: the local CA and broker security.

Wiring only: certificate logic lives in :mod:`cloud.pki`, the broker config in
:mod:`pumpwatch.mosquitto_conf`. See docs/security.md.
"""

from __future__ import annotations

import argparse
import sys

from ._roles import Role

ROLE = Role("cloud", ("cryptography",))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "certs",
        help="local CA: broker, device and client certificates; Mosquitto mTLS config",
        description="A local certificate authority for the self-hosted stack. Every device "
        "and client gets its own certificate; its CN is its MQTT identity. Keys are "
        "written 0600 and never overwritten without --force (see docs/security.md).",
    )
    cs = p.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    i = cs.add_parser("init", help="create DIR/ca.crt|key and DIR/broker.crt|key")
    i.add_argument("--dir", required=True, help="the PKI directory")
    i.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME_OR_IP",
        help="broker subjectAltName (repeatable; default: localhost and 127.0.0.1)",
    )
    i.add_argument("--days", type=int, default=3650, help="CA validity (days)")
    i.add_argument("--force", action="store_true", help="replace an existing CA")
    i.set_defaults(func=run_init)

    for kind, what in (
        ("device", "a device (gateway): writes its own reports and status, reads its "
         "confirmations"),
        ("consumer", "a cloud consumer: reads reports, writes results and confirmations"),
        ("dashboard", "a dashboard: reads results and device status"),
        ("operator", "an operator's diagnostic client: reads everything, writes nothing"),
    ):
        d = cs.add_parser(
            kind,
            help=f"issue a certificate for {what.split(':')[0]} (CN = NAME, role {kind})",
            description=f"Issue a certificate for {what}. NAME is the certificate's CN and "
            "MQTT identity: 1-64 characters from A-Z a-z 0-9 _ . : - (other names are "
            "refused). Run `pumpwatch certs broker-config` again afterwards: the broker "
            "grants only the identities its configuration lists.",
        )
        d.add_argument("name", metavar="NAME")
        d.add_argument("--dir", required=True, help="the PKI directory (with ca.crt, ca.key)")
        d.add_argument("--days", type=int, default=825, help="validity (days)")
        d.add_argument("--force", action="store_true", help="replace an existing certificate")
        d.set_defaults(func=run_issue, kind=kind)

    b = cs.add_parser(
        "broker-config",
        help="write a Mosquitto config (mTLS listener, grants by role) for the local stack",
        description="Write mosquitto.conf and dynamic-security.json: every identity issued "
        "in --dir gets its role's grants (cloud/roles.py); anything else is denied.",
    )
    b.add_argument("--dir", required=True, help="the PKI directory (ca.crt, broker.crt|key)")
    b.add_argument("--out", required=True, help="directory for mosquitto.conf, acl, data/")
    b.add_argument("--port", type=int, default=8883)
    b.add_argument("--host", default="127.0.0.1", help="listen address")
    b.add_argument("--topic-root", default="pumpwatch", help="topic root (default pumpwatch)")
    b.add_argument(
        "--dynsec-plugin",
        metavar="PATH",
        help="mosquitto_dynamic_security.so where the broker runs (default: found on this "
        "machine, else Debian's path)",
    )
    b.add_argument(
        "--broker-uid",
        type=int,
        metavar="UID",
        help="as root: the broker runs elsewhere (a container) as this uid/gid; hand --out "
        "to it (default: this machine's `mosquitto` user, whose access is checked)",
    )
    b.set_defaults(func=run_broker_config)


def run_init(args: argparse.Namespace) -> int:
    from cloud.pki import DEFAULT_HOSTS, PkiError, init_ca

    try:
        ca, broker = init_ca(
            args.dir, hosts=args.hosts or DEFAULT_HOSTS, days=args.days, force=args.force
        )
    except PkiError as exc:
        print(f"pumpwatch certs init: {exc}", file=sys.stderr)
        return 2
    print(f"CA      {ca.cert}  (key {ca.key}, valid until {ca.not_after:%Y-%m-%d})")
    hosts = ", ".join(args.hosts or DEFAULT_HOSTS)
    print(f"broker  {broker.cert}  (key {broker.key}, hosts {hosts})")
    return 0


def run_issue(args: argparse.Namespace) -> int:
    from cloud.pki import PkiError, issue

    try:
        got = issue(args.dir, args.kind, args.name, days=args.days, force=args.force)
    except PkiError as exc:
        print(f"pumpwatch certs {args.kind}: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.kind} {got.subject}: {got.cert} (key {got.key}, valid until "
        f"{got.not_after:%Y-%m-%d})"
    )
    return 0


def run_broker_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cloud.pki import PkiError
    from cloud.roles import RoleError

    from ..mosquitto_conf import BrokerConfigError, write_broker_config

    pki = Path(args.dir)
    missing = [n for n in ("ca.crt", "broker.crt", "broker.key") if not (pki / n).exists()]
    if missing:
        print(
            f"pumpwatch certs broker-config: {pki} lacks {missing}; run `pumpwatch certs "
            f"init --dir {pki}` first",
            file=sys.stderr,
        )
        return 2
    try:
        files = write_broker_config(
            args.out, pki_dir=pki, port=args.port, host=args.host, prefix=args.topic_root,
            plugin=args.dynsec_plugin, broker_uid=args.broker_uid,
        )
    except (PkiError, RoleError, BrokerConfigError) as exc:
        print(f"pumpwatch certs broker-config: {exc}", file=sys.stderr)
        return 2
    counts = ", ".join(
        f"{sum(1 for r in files.identities.values() if r == role)} {role}"
        for role in ("device", "consumer", "dashboard", "operator")
    )
    print(f"wrote {files.conf} and {files.security} ({counts}); run: mosquitto -c {files.conf}")
    return 0
