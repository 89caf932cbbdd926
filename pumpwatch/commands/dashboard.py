"""``pumpwatch dashboard --store URL [--port 8000]``: the API, live stream and web page."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from ._roles import Role
from ._storeargs import add_store_args, store_url

ROLE = Role("cloud", ("aiohttp",))

TOKEN_ENV = "PUMPWATCH_DASHBOARD_TOKEN"  # noqa: S105 -- the variable's name, not a secret
MODEL_SERVER_ENV = "PUMPWATCH_MODEL_SERVER"  # as `pumpwatch models compare --url`


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dashboard", help="serve the dashboard API, live stream and web page")
    add_store_args(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only); beyond "
                   "loopback, set a token (--token-file)")
    p.add_argument(
        "--allowed-host", action="append", default=[], dest="allowed_hosts", metavar="NAME",
        help="a Host name browsers use for this dashboard (repeatable); requests naming any "
        "other host than these, loopback, the bind address (or, bound to 0.0.0.0, an IP "
        "address) get 421: a DNS-rebinding page cannot read the API",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--token-file", type=Path,
        help=f"require this bearer token on /api/ (default: ${TOKEN_ENV} if set, else none)",
    )
    p.add_argument("--poll", type=float, default=0.25, metavar="SECONDS",
                   help="how often the live stream checks the store for commits")
    p.add_argument(
        "--model-server", metavar="URL", default=None,
        help=f"the local model server whose running rollout (shadow/canary comparison, "
        f"automatic rollbacks) the Models page shows, read from its GET /rollout "
        f"(default ${MODEL_SERVER_ENV} if set, else none: the page says so)",
    )
    p.add_argument(
        "--mqtt-config", type=Path, metavar="TOML",
        help="publish the operators' alarm changes (ack, assign, close) QoS 1 on the result "
        "topics' {root}/sites/{site}/pumps/{pump}/alarms: a file with an [mqtt] section (the "
        "consumer's keys; client_id default pumpwatch-dashboard; a certificate of the "
        "dashboard role). Default: not published (the store and live stream carry them)",
    )
    p.set_defaults(func=run)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from cloud.dashboard import DashboardSettings, serve
    from cloud.dashboard.rollout import check_model_server_url
    from cloud.store import StoreError

    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip() or None
        except OSError as exc:
            print(f"pumpwatch dashboard: cannot read token file: {exc}", file=sys.stderr)
            return 2
    model_server = args.model_server or os.environ.get(MODEL_SERVER_ENV) or None
    if model_server is not None:
        try:
            model_server = check_model_server_url(model_server)
        except ValueError as exc:
            print(f"pumpwatch dashboard: --model-server: {exc}", file=sys.stderr)
            return 2
    mqtt = None
    if args.mqtt_config is not None:
        from cloud.consumer.errors import ConfigError
        from cloud.dashboard.publish import load_mqtt_config

        try:
            mqtt = load_mqtt_config(args.mqtt_config)
        except ConfigError as exc:
            print(f"pumpwatch dashboard: --mqtt-config: {exc}", file=sys.stderr)
            return 2
    settings = DashboardSettings(
        store_url=store_url(args), host=args.host, port=args.port, token=token,
        poll_s=args.poll, allowed_hosts=tuple(args.allowed_hosts), model_server=model_server,
        mqtt=mqtt,
    )
    if token is None and not _loopback(args.host):
        print(f"pumpwatch dashboard: warning: bound to {args.host} without a token: anyone who "
              f"can reach it reads every result (set --token-file or ${TOKEN_ENV})",
              file=sys.stderr)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except StoreError as exc:
        print(f"pumpwatch dashboard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"pumpwatch dashboard: cannot listen on {args.host}:{args.port}: {exc}",
              file=sys.stderr)
        return 1
    return 0
