"""Stopping the real servers and agents the tests start."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> int | None:
    """SIGTERM (a clean stop, as systemd or ECS sends), SIGKILL after ``timeout`` s;
    the exit code (negative: the signal that ended it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
