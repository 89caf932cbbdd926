"""The README's command table matches ``pumpwatch --help``.

Every command the CLI has is in the table and every command in the table
exists; a command with actions lists exactly its actions; every option the
table names exists (on the command or on the action it is shown with), and
every required option is shown, so a user copying a row gets a command line
the parser accepts (``certs broker-config`` needs ``--out``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pumpwatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _table_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `pumpwatch")]
    assert rows, "no command table under '## Commands' in README.md"
    return rows


def _usages() -> list[str]:
    """Each code span of each row's first cell that starts with ``pumpwatch``."""
    out: list[str] = []
    for row in _table_rows():
        cell = row[1:].split(" | ", 1)[0]  # the first column (its code may contain '|')
        out += [c for c in re.findall(r"`([^`]+)`", cell) if c.startswith("pumpwatch ")]
    return out


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _actions(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subs[0].choices) if subs else {}


def _required(p: argparse.ArgumentParser) -> set[str]:
    return {a.option_strings[-1] for a in p._actions if a.option_strings and a.required}


def _parsed() -> list[tuple[str, list[str], set[str]]]:
    """(command, actions shown, options shown) per usage in the table."""
    out = []
    for usage in _usages():
        words = usage.replace("\\|", "|").split()
        command = words[1]
        rest = words[2:]
        actions: list[str] = []
        cmd = _commands().get(command)
        if cmd is not None and _actions(cmd) and rest:
            # `init|device NAME|client NAME|broker-config` -> the action names
            head = " ".join(w for w in rest if not w.startswith(("-", "[-", "(")))
            actions = [part.split()[0] for part in head.split("|") if part.split()
                       and part.split()[0] in _actions(cmd)]
        options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", usage))
        out.append((command, actions, options))
    return out


def test_every_command_is_in_the_readme_table_and_every_row_is_a_command() -> None:
    shown = {c for c, _a, _o in _parsed()}
    assert shown == set(_commands()), (
        f"missing from README: {sorted(set(_commands()) - shown)}; "
        f"not commands: {sorted(shown - set(_commands()))}")


@pytest.mark.parametrize("command", sorted(_commands()))
def test_the_table_lists_a_commands_actions_options_and_required_options(command: str) -> None:
    rows = [(a, o) for c, a, o in _parsed() if c == command]
    assert rows, f"{command} is not in the README's command table"
    parser = _commands()[command]
    actions = _actions(parser)
    shown_actions = [a for acts, _o in rows for a in acts]
    shown_options = set().union(*(o for _a, o in rows))
    if actions:
        assert set(shown_actions) == set(actions), (
            f"{command}: README lists actions {shown_actions}, --help has {sorted(actions)}")
    known = set(parser._option_string_actions)
    for sub in actions.values():
        known |= set(sub._option_string_actions)
    assert shown_options <= known, f"{command}: README names unknown options " \
        f"{sorted(shown_options - known)}"
    required = _required(parser)
    for name in shown_actions or []:
        required |= _required(actions[name])
    assert required <= shown_options, (
        f"{command}: required options missing from the README row: "
        f"{sorted(required - shown_options)}")
