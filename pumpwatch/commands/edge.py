"""``pumpwatch edge --config edge.toml``: run the gateway agent."""

from __future__ import annotations

import argparse

from ._roles import Role

ROLE = Role("edge", ("paho",))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "edge",
        help="run the edge agent: source -> spectra -> spool -> MQTT",
        description="Run the edge agent with one TOML config (see docs/edge.md). "
        "An invalid config exits with code 2 listing every problem.",
    )
    p.add_argument("--config", required=True, help="the agent's TOML config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge.run import edge_main

    return edge_main(args.config)
