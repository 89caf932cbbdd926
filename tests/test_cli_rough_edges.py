"""What a new user hits first: options after the action, selftest's verdict, the live status.

The stack's lock, Ctrl-C and log names are tested on the real stack in
tests/test_stack.py; ``results``' default store in tests/test_consumer_cli.py.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from pumpwatch.cli import main
from pumpwatch.commands.train import eta_text
from pumpwatch.stack.plan import StackOptions
from pumpwatch.stack.runner import Stack, redraw

ROOT = Path(__file__).resolve().parents[1]


def test_a_commands_options_are_accepted_after_its_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = str(tmp_path / "registry")
    for argv in (["models", "list", "--json", "--registry", reg],
                 ["models", "--json", "list", "--registry", reg],
                 ["models", "--registry", reg, "--json", "list"]):
        assert main(argv) == 0, argv
        assert json.loads(capsys.readouterr().out) == {"groups": [], "deployments": {}}, argv
    # given after the action, as `models list pumps --json` is typed
    assert main(["models", "list", "pumps", "--json", "--registry", reg]) == 1
    said = capsys.readouterr()
    assert "no model package group 'pumps'" in said.out + said.err


def test_selftest_passes_with_a_verdict_and_fails_when_the_fault_is_missed() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pumpwatch", "selftest", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    ok = run()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].startswith("verdict: PASS")
    # an impact train too weak to show: the DSP misses what was injected
    weak = run("--severity", "0.02")
    assert weak.returncode == 1
    assert weak.stdout.splitlines()[-1].startswith("verdict: FAIL - the DSP missed")
    js = run("--json", "--severity", "0.02")
    assert js.returncode == 1 and "verdict: FAIL" in js.stderr
    assert json.loads(js.stdout)["features"]


def test_eta_from_the_stages_pace() -> None:
    assert eta_text(10.0, 0, 20) == "ETA --"
    assert eta_text(10.0, 5, 20) == "ETA 30s"
    assert eta_text(60.0, 10, 30) == "ETA 2m00s"


def test_redraw_repaints_in_place_and_cuts_lines_to_the_width() -> None:
    text = "short\n" + "x" * 300 + "\nlast"
    out = redraw(text, 80)
    assert "\x1b[2J" not in out  # no full-screen clear: no flicker
    assert out.startswith("\x1b[H") and out.endswith("\x1b[J")
    lines = out.removeprefix("\x1b[H").removesuffix("\x1b[J").splitlines()
    assert [ln.removesuffix("\x1b[K") for ln in lines] == ["short", "x" * 79 + "~", "last"]
    assert all(ln.endswith("\x1b[K") for ln in lines)


class _FixedStatus(Stack):
    """A stack whose status text is given (its components are not started here)."""

    text = ""

    def render(self) -> str:
        return self.text


def test_the_live_status_fits_the_terminal_of_a_pty(tmp_path: Path) -> None:
    # the width comes from the terminal the status is drawn on (a pty of 60 columns)
    main_fd, child_fd = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    saved = os.dup(1)
    try:
        os.dup2(child_fd, 1)  # shutil.get_terminal_size asks stdout's terminal
        env_cols = os.environ.pop("COLUMNS", None)
        buf = io.StringIO()
        stack = _FixedStatus(StackOptions(state=tmp_path), out=buf, live=True)
        stack.text = "pumpwatch up   " + "y" * 200 + "\nconsumer up"
        stack._show()
        stack._show()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(child_fd)
        os.close(main_fd)
        if env_cols is not None:
            os.environ["COLUMNS"] = env_cols
    frames = buf.getvalue().split("\x1b[H")[1:]
    assert len(frames) == 2 and "\x1b[2J" not in buf.getvalue()
    for frame in frames:
        for line in frame.removesuffix("\x1b[J").splitlines():
            assert len(line.removesuffix("\x1b[K")) <= 60, line
