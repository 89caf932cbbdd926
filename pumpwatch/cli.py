"""The ``pumpwatch`` console command.

Each subcommand lives in its own module under :mod:`pumpwatch.commands` and
exposes ``register(subparsers) -> None``, which adds its parser and sets
``func`` (a callable taking the parsed namespace, returning an exit code).
Modules are discovered, so adding a command touches no shared file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__, commands
from .logfmt import LOG_FORMATS
from .logfmt import configure as configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pumpwatch",
        description="Edge-to-cloud condition monitoring for pumps.",
    )
    parser.add_argument("--version", action="version", version=f"pumpwatch {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument(
        "--log-format", default="text", choices=list(LOG_FORMATS),
        help="json: one JSON object per line (journald, CloudWatch); default text",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
