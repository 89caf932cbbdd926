"""``pumpwatch cloud --config cloud.toml``: run the cloud consumer until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import msgspec

from cloud.consumer import ConfigError, Consumer, ConsumerConfig, load_config
from cloud.store import StoreError

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
    p.set_defaults(func=run)


async def _serve(config: ConsumerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await Consumer(config).run(stop)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if args.print_config:
        print(msgspec.json.encode(config).decode())
        return 0
    try:
        asyncio.run(_serve(config))
    except StoreError as exc:
        log.error("results store failed: %s", exc)
        return 1
    return 0
