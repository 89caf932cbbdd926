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
import copy
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


def _inherit_options(parser: argparse.ArgumentParser) -> None:
    """Let a command's options follow its action too: ``models list pumps --json``.

    Each option of a parser with actions (``models``, ``certs``, ...) is added
    to every action's parser (recursively), with a suppressed default, so it is
    accepted before or after the action and one given before is not reset by
    the action's parser. An action's own option of the same name wins.
    """
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return
    skip = (argparse._HelpAction, argparse._VersionAction)
    shared = [a for a in parser._actions if a.option_strings and not isinstance(a, skip)]
    for child in {id(c): c for s in subs for c in s.choices.values()}.values():
        taken = set(child._option_string_actions)
        for action in shared:
            if taken.isdisjoint(action.option_strings):
                inherited = copy.copy(action)
                inherited.default = argparse.SUPPRESS
                inherited.required = False
                child._add_action(inherited)
        _inherit_options(child)


def _command_named(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (after the global options), if one is given."""
    it = iter(argv)
    for tok in it:
        if tok in ("--log-level", "--log-format"):
            next(it, None)
        elif not tok.startswith("-"):
            return tok
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or with ``only`` just that command module's: a running
    command then imports nothing of the others (``pumpwatch edge`` on a gateway loads
    no training, stack or serving code)."""
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
        if not info.name.startswith("_") and only in (None, info.name):
            _register(sub, info.name)
    for command in sub.choices.values():
        _inherit_options(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = _command_named(words)
    modules = {m.name for m in pkgutil.iter_modules(commands.__path__)}
    parser = build_parser(command if command in modules and "-h" not in words
                          and "--help" not in words else None)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        # one line, not a traceback; 130 = 128 + SIGINT, as a shell reports it
        print(f"{parser.prog} {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
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
