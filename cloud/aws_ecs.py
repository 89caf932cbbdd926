"""The consumer's start on ECS: secrets and config injected as environment, written as files.

ECS injects the SSM parameter (the consumer's TOML config) and the Secrets
Manager values (the TLS identity, the store password as ``PGPASSWORD``) as
environment variables (deploy/aws/consumer.yaml). The consumer reads files, so
:func:`materialize` writes them below one private directory (0700; keys 0600):
``tls/ca.pem``, ``tls/consumer.crt``, ``tls/consumer.key`` and ``cloud.toml``,
with ``[mqtt.tls]`` pointing at those files, ``[store] url`` set from
``PUMPWATCH_STORE_URL`` and the task's host name (``HOSTNAME``, unique per
Fargate task) appended to ``[mqtt] client_id``, so the service's tasks never
share a client id. Every missing variable is
named in one error, before anything is written.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

CONFIG_ENV = "PUMPWATCH_CONSUMER_CONFIG"
STORE_ENV = "PUMPWATCH_STORE_URL"
TLS_ENV = {"PUMPWATCH_TLS_CA": "ca.pem", "PUMPWATCH_TLS_CERT": "consumer.crt",
           "PUMPWATCH_TLS_KEY": "consumer.key"}


class MaterializeError(ValueError):
    """The task's environment lacks what the consumer needs."""


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise MaterializeError(f"cannot write {type(value).__name__} {value!r} to TOML")


def _dump(data: Mapping[str, object], prefix: str = "") -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}{k}"
            out += f"\n[{name}]\n" + _dump(v, f"{name}.")
    return out


def materialize(env: Mapping[str, str], out_dir: str | Path) -> Path:
    """Write the consumer's config and TLS files from ``env``; the config's path."""
    missing = [k for k in (CONFIG_ENV, *TLS_ENV) if not env.get(k)]
    if missing:
        raise MaterializeError(f"the task environment lacks {', '.join(missing)}")
    try:
        data = tomllib.loads(env[CONFIG_ENV])
    except tomllib.TOMLDecodeError as exc:
        raise MaterializeError(f"{CONFIG_ENV} is not valid TOML: {exc}") from None
    if env.get(STORE_ENV):
        data.setdefault("store", {})["url"] = env[STORE_ENV]
    d = Path(out_dir)
    tls = d / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    os.chmod(tls, 0o700)
    for var, name in TLS_ENV.items():
        path = tls / name
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(env[var])
    mqtt = data.setdefault("mqtt", {})
    host = re.sub(r"[^A-Za-z0-9_-]", "-", env.get("HOSTNAME", "").split(".")[0])
    if host:
        # every task connects at once: one client id each (IoT drops a duplicate's twin)
        mqtt["client_id"] = f"{mqtt.get('client_id', 'pumpwatch-consumer')}-{host}"[:128]
    tls_conf = mqtt.setdefault("tls", {})
    for key, name in zip(("ca", "cert", "key"), TLS_ENV.values(), strict=True):
        tls_conf[key] = str(tls / name)
    config = d / "cloud.toml"
    config.write_text(_dump(data))
    return config
