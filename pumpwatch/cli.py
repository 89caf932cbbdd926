"""The ``pumpwatch`` console command.

Each subcommand lives in its own module under :mod:`pumpwatch.commands` and
exposes ``register(subparsers) -> None``, which adds its parser and sets
``func`` (a callable taking the parsed namespace, returning an exit code).
Modules are discovered, so adding a command touches no shared file.

A command module may say which extra installs it (``ROLE``, see
:mod:`pumpwatch.commands._roles`) and imports that role's libraries only when
it runs. A command whose role is not installed still shows in ``pumpwatch
--help``; running it (``--help`` included) prints one line naming the extra and
exits 2. So does a role dependency that is missing when the command imports it
later, or when a command module (or its registration) imports it up front.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, cast

from . import __version__, commands
from .commands._roles import ALL, Role, extra_for, missing_dependency, missing_extra_line
from .logfmt import LOG_FORMATS
from .logfmt import configure as configure_logging

MISSING_EXTRA = 2
_ROLE_DEST = "_pumpwatch_role"  # the chosen command's extra, for errors raised while it runs


class _CommandParser(argparse.ArgumentParser):
    """A parser that refuses to parse when its command's role is not installed."""

    role: Role | None = None

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        if self.role is not None and (module := self.role.missing()) is not None:
            self.exit(MISSING_EXTRA, missing_extra_line(self.prog, module, self.role.extra) + "\n")
        return super().parse_known_args(args, namespace)


def _import_command(name: str) -> ModuleType | str:
    """The command module, or the role dependency whose absence stops it from importing."""
    try:
        return importlib.import_module(f"{commands.__name__}.{name}")
    except ModuleNotFoundError as exc:
        if (missing := missing_dependency(exc)) is None:
            raise
        return missing


def _register(sub: argparse._SubParsersAction[_CommandParser], name: str) -> None:
    """Add command module ``name``'s parsers, each marked with the command's role.

    A module that cannot be imported, or cannot register, because a role
    dependency is missing still gets its command listed (its own parser when it
    got as far as adding it, else a stand-in under the module's name), marked
    as needing that dependency.
    """
    module = _import_command(name)
    role: Role | None = None
    lacking = module if isinstance(module, str) else None
    before = set(sub.choices)
    if isinstance(module, ModuleType):
        role = getattr(module, "ROLE", None)
        try:
            module.register(cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub))
        except ModuleNotFoundError as exc:
            if (lacking := missing_dependency(exc)) is None:
                raise
    added = [p for n, p in sub.choices.items() if n not in before]
    if lacking is not None:
        extra = role.extra if role is not None else extra_for(lacking, None) or ALL
        role = Role(extra, (lacking,))
        if not added:
            added = [sub.add_parser(name, help=f"(needs the '{extra}' extra)")]
    for p in added:
        p.role = role
        if role is not None:
            p.set_defaults(**{_ROLE_DEST: role.extra})


def build_parser() -> argparse.ArgumentParser:
    parser = _CommandParser(
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
        if not info.name.startswith("_"):
            _register(sub, info.name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        # A role dependency imported while the command runs (boto3 for --sagemaker, ...).
        missing = missing_dependency(exc)
        if missing is None:
            raise
        line = missing_extra_line(
            f"{parser.prog} {args.command}", missing, getattr(args, _ROLE_DEST, None)
        )
        print(line, file=sys.stderr)
        return MISSING_EXTRA
    return code


if __name__ == "__main__":
    sys.exit(main())
