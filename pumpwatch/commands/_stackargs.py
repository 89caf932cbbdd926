"""Options shared by ``pumpwatch up`` and ``pumpwatch demo``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ._roles import Role

if TYPE_CHECKING:
    from pumpwatch.stack.plan import StackOptions

# The local stack runs every role: broker clients, consumer, model server, training.
STACK_ROLE = Role("all", ("paho", "aiobotocore", "aiohttp", "cryptography", "sklearn"))


def add_stack_args(p: argparse.ArgumentParser) -> None:
    from pumpwatch.stack.plan import StackOptions

    d = StackOptions()
    p.add_argument("--pumps", type=int, default=d.pumps,
                   help=f"simulated pumps (default {d.pumps})")
    p.add_argument("--axes", type=int, default=d.axes, choices=[1, 2, 3],
                   help=f"sensor axes per pump, 25.6 kHz each (default {d.axes})")
    p.add_argument("--pumps-per-agent", type=int, default=d.pumps_per_agent,
                   help=f"pumps per edge agent process / device (default {d.pumps_per_agent})")
    p.add_argument("--dashboard-port", type=int, default=d.dashboard_port)
    p.add_argument("--dashboard-host", default=d.dashboard_host,
                   help=f"dashboard bind address (default {d.dashboard_host}); beyond loopback "
                   "the stack requires a bearer token, kept in STATE/dashboard.token")
    p.add_argument("--broker-port", type=int, default=d.broker_port,
                   help="Mosquitto mTLS listener on 127.0.0.1")
    p.add_argument("--endpoint-port", type=int, default=d.endpoint_port,
                   help="model server on 127.0.0.1")
    p.add_argument("--state", type=Path, default=None,
                   help="state directory: certificates, models, store, spools, logs "
                   "(default $PUMPWATCH_STATE or ./state; a second start reuses it)")
    p.add_argument("--seed", type=int, default=d.seed, help="simulated fleet seed")
    p.add_argument("--edge-transport", choices=["paho", "awsiot"], default=d.edge_transport,
                   help="the agents' MQTT library: paho, or awsiotsdk as against AWS IoT Core "
                   "(default paho)")
    p.add_argument("--train-pumps-per-class", type=int, default=None, help=argparse.SUPPRESS)


def options_from_args(args: argparse.Namespace, **changes: object) -> StackOptions:
    from pumpwatch.stack.plan import StackOptions
    from pumpwatch.stack.runner import default_state

    return StackOptions(
        state=args.state or default_state(), pumps=args.pumps, axes=args.axes,
        pumps_per_agent=args.pumps_per_agent, dashboard_port=args.dashboard_port,
        dashboard_host=args.dashboard_host,
        broker_port=args.broker_port, endpoint_port=args.endpoint_port, seed=args.seed,
        train_pumps_per_class=args.train_pumps_per_class,
        edge_transport=args.edge_transport,
        log_format=args.log_format, **changes,  # type: ignore[arg-type]
    )
