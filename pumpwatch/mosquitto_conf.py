"""Mosquitto configuration for the local stack: an mTLS listener and per-identity ACLs.

Theory of operation
-------------------
The listener requires a client certificate signed by the local CA
(``require_certificate``) and takes its common name as the MQTT username
(``use_identity_as_username``); no certificate, a certificate from another CA,
or a plain-TCP client never gets to MQTT at all. The ACL then keys every
permission on that username (see :mod:`cloud.pki` for how names are issued):

* every identity may write only ``{prefix}/devices/{its CN}/#`` (a ``pattern``
  line, ``%u`` = CN): a device's reports, its retained status and its will;
* a **consumer** may read ``{prefix}/devices/+/reports`` (also as a shared
  subscription, ``$share/{group}/...``) and write below ``{prefix}/sites/``
  (results: condition, alarms);
* a **dashboard** may read ``{prefix}/sites/#`` and ``{prefix}/devices/+/status``;
* every identity may read its own confirmations, ``{prefix}/acks/{its CN}``, and
  a consumer may write them (``{prefix}/acks/#``; see docs/consumer.md).

Anything else is denied: under MQTT 5 a QoS 1 publish to a forbidden topic is
answered with PUBACK reason 0x87 (Not authorized); a forbidden subscription
with SUBACK 0x87. The same rules as the AWS IoT policy in ``aws/iot-policy.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class BrokerFiles:
    conf: Path
    acl: Path


def acl_text(
    *,
    consumers: Sequence[str] = ("consumer",),
    dashboards: Sequence[str] = ("dashboard",),
    prefix: str = "pumpwatch",
) -> str:
    """The ``acl_file`` contents (Mosquitto 2.0 syntax)."""
    lines = [
        "# written by pumpwatch (pumpwatch/mosquitto_conf.py); usernames are certificate CNs",
        "# every identity: write only below its own device tree (reports, status, will)",
        f"pattern write {prefix}/devices/%u/#",
        "# every identity: read its own confirmations (written by consumers)",
        f"pattern read {prefix}/acks/%u",
        "",
    ]
    for name in consumers:
        lines += [
            f"user {name}",
            f"topic read {prefix}/devices/+/reports",
            f"topic read $share/+/{prefix}/devices/+/reports",
            f"topic write {prefix}/sites/#",
            f"topic write {prefix}/acks/#",
            "",
        ]
    for name in dashboards:
        lines += [
            f"user {name}",
            f"topic read {prefix}/sites/#",
            f"topic read {prefix}/devices/+/status",
            "",
        ]
    return "\n".join(lines)


def tls_listener_conf(*, port: int, host: str, pki_dir: str | Path, acl_path: str | Path) -> str:
    """The mTLS listener and the security settings (append to a base config)."""
    d = Path(pki_dir).resolve()
    return "\n".join(
        [
            "# mutual TLS: a certificate from our CA is the only way in; its CN is the username",
            "per_listener_settings false",
            "allow_anonymous false",
            f"acl_file {Path(acl_path).resolve()}",
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
    acl_path: str | Path,
    data_dir: str | Path,
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
    if os.geteuid() == 0:
        lines.append("user root")  # else it drops to `mosquitto`, which cannot write here
    return (
        "\n".join(lines)
        + "\n"
        + tls_listener_conf(port=port, host=host, pki_dir=pki_dir, acl_path=acl_path)
    )


def write_broker_config(
    out_dir: str | Path,
    *,
    pki_dir: str | Path,
    port: int = 8883,
    host: str = "127.0.0.1",
    consumers: Sequence[str] = ("consumer",),
    dashboards: Sequence[str] = ("dashboard",),
    prefix: str = "pumpwatch",
) -> BrokerFiles:
    """Write ``mosquitto.conf`` and ``acl`` into ``out_dir`` (data under ``out_dir/data``)."""
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    acl = out / "acl"
    acl.write_text(acl_text(consumers=consumers, dashboards=dashboards, prefix=prefix))
    conf = out / "mosquitto.conf"
    conf.write_text(
        mosquitto_conf(port=port, host=host, pki_dir=pki_dir, acl_path=acl, data_dir=out / "data")
    )
    return BrokerFiles(conf=conf, acl=acl)
