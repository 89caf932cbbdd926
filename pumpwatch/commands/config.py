"""``pumpwatch config check FILE`` / ``pumpwatch config schema KIND``: config files, not run.

``check`` validates an edge, consumer (cloud) or pump file exactly as the
command that reads it would (:mod:`dsp.config`: every problem in one message,
each with its TOML path; exit 2), without starting anything. The kind is
detected from the file's keys, or given with ``--kind``. ``schema`` prints the
JSON Schema generated from the same structs, for editors (e.g. the Even
Better TOML extension's ``#:schema`` directive or taplo's schema settings).
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any, Literal

Kind = Literal["edge", "cloud", "pump"]
KINDS: tuple[Kind, ...] = ("edge", "cloud", "pump")
INVALID = 2

# Top-level keys only one kind has.
_EDGE_KEYS = {"device", "site", "pumps", "report", "spool", "status", "source", "pipeline"}
_CLOUD_KEYS = {"endpoint", "batch", "store", "consumer", "alarms", "route", "routes", "metrics"}
_PUMP_KEYS = {"name", "fs", "speed", "rpm", "vanes", "bearings", "sensors", "resonances",
              "noise_floor", "shaft_level", "structure_rms", "iso_group", "foundation",
              "kind", "faults"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="check a config file (edge, cloud, pump) or print its "
                       "JSON Schema")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = cs.add_parser("check", help="validate a config file without running anything "
                      "(exit 2 listing every problem)")
    c.add_argument("file", type=Path)
    c.add_argument("--kind", choices=KINDS, default=None,
                   help="edge, cloud (the consumer) or pump (default: from the file's keys)")
    c.set_defaults(func=_check)
    s = cs.add_parser("schema", help="print the JSON Schema of a config kind")
    s.add_argument("schema_kind", choices=KINDS, metavar="KIND", help="edge, cloud or pump")
    s.set_defaults(func=_schema)


def detect_kind(data: dict[str, Any]) -> Kind | None:
    """The kind a parsed file is, from keys only one kind has; None when it cannot tell."""
    keys = set(data)
    found = [k for k, own in (("edge", _EDGE_KEYS), ("cloud", _CLOUD_KEYS),
                              ("pump", _PUMP_KEYS - {"kind"})) if keys & own]
    if len(found) == 1:
        return found[0]  # type: ignore[return-value]
    if not found and keys == {"mqtt"}:
        return "cloud"  # the consumer is the one kind whose every section is optional
    return None


def _schema_class(kind: Kind) -> type:
    if kind == "edge":
        from edge.config import EdgeFile

        return EdgeFile
    if kind == "cloud":
        from cloud.consumer.config import ConsumerConfig

        return ConsumerConfig
    from simulator.pump import PumpFile

    return PumpFile


def _summary(kind: Kind, path: Path) -> str:
    """Load ``path`` as ``kind`` as its command would; a one-line summary, then one
    ``note:`` line per setting a user may not have meant (raises if invalid)."""
    if kind == "edge":
        from edge.config import config_notes, load_config

        cfg = load_config(path)
        notes = [f"\n  note: {n}" for n in config_notes(cfg)]
        return (f"valid edge config: device {cfg.device}, {len(cfg.pumps)} pump(s), "
                f"{len(cfg.channels)} channel(s), {cfg.mqtt.transport} to "
                f"{cfg.mqtt.host}:{cfg.mqtt.port}" + "".join(notes))
    if kind == "cloud":
        from cloud.consumer.config import load_config as load_cloud

        c = load_cloud(path)
        return (f"valid consumer config: broker {c.mqtt.host}:{c.mqtt.port}, endpoint "
                f"{c.endpoint.name}, store {c.store.url}")
    from simulator.pump import load_pump_config

    pump = load_pump_config(path)
    return (f"valid pump config: {pump.name}, {pump.speed.rpm:g} rpm, {len(pump.sensors)} "
            f"sensor(s), {len(pump.faults)} fault(s)")


def _check(args: argparse.Namespace) -> int:
    from dsp.config import InvalidConfigError

    path: Path = args.file
    kind: Kind | None = args.kind
    if kind is None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
            return INVALID
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            print(f"{path}: not valid TOML: {exc}", file=sys.stderr)
            return INVALID
        kind = detect_kind(data)
        if kind is None:
            print(f"{path}: cannot tell which kind of config this is (keys: "
                  f"{', '.join(sorted(data)) or 'none'}); give --kind edge|cloud|pump",
                  file=sys.stderr)
            return INVALID
    try:
        line = _summary(kind, path)
    except InvalidConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return INVALID
    print(f"{path}: {line}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from dsp.config import json_schema

    print(json.dumps(json_schema(_schema_class(args.schema_kind)), indent=2))
    return 0
