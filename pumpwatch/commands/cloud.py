"""``pumpwatch cloud --config cloud.toml``: run the cloud consumer until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
from typing import TYPE_CHECKING

from ._roles import Role

if TYPE_CHECKING:
    from cloud.consumer import ConsumerConfig

ROLE = Role("cloud", ("aiobotocore", "aiohttp", "paho"))

log = logging.getLogger("pumpwatch.cloud")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cloud",
        help="run the cloud consumer (MQTT -> endpoint -> results store)",
        description="Consume device reports from MQTT, score them on the endpoint and store "
        "results; acknowledges each message only after it is committed.",
    )
    p.add_argument("--config", required=True, help="consumer config (TOML)")
    p.add_argument(
        "--print-config", action="store_true", help="print the effective config as JSON and exit"
    )
    p.add_argument(
        "--retire", action="store_true",
        help="retire this consumer (its mqtt.client_id) from the shared subscription for good: "
        "process what the broker still holds for its session, then end the session",
    )
    p.set_defaults(func=run)


async def _serve(config: ConsumerConfig, *, retire: bool = False) -> None:
    from cloud.consumer import Consumer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Consumer(config).run(stop, retire=retire)


def run(args: argparse.Namespace) -> int:
    import msgspec

    from cloud.consumer import ConfigError, load_config
    from cloud.store import StoreError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", exc.report())  # every problem, one message; nothing started
        return 2
    if args.print_config:
        print(msgspec.json.encode(config).decode())
        return 0
    try:
        asyncio.run(_serve(config, retire=args.retire))
    except StoreError as exc:
        log.error("results store failed: %s", exc)
        return 1
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # the only listener the consumer binds is its /metrics port
        log.error("metrics port %s:%s is in use (%s)", config.metrics.host, config.metrics.port,
                  exc.strerror)
        return 2
    return 0
