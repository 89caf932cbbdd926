"""Starting, watching and stopping the local stack's processes.

Theory of operation
-------------------
Every component is a real subprocess in its **own process group** (a new
session), with stdout and stderr appended to ``state/logs/{name}.log``. So a
terminal's Ctrl-C reaches only the supervisor, which then stops the
components itself, in order (sources first, the broker last), each with
SIGTERM to its whole group, then SIGKILL to the group after a grace period.
Each child also gets ``PR_SET_PDEATHSIG`` = SIGTERM (Linux), so even a
SIGKILLed supervisor leaves no component running.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """The stack cannot start (a port in use, a component that died); the message says which."""


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    return env


def pumpwatch_argv(*args: str) -> list[str]:
    """``pumpwatch ARGS`` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "pumpwatch", *args]


@dataclass
class Component:
    name: str
    argv: Sequence[str]
    log: Path
    stop_timeout_s: float = 10.0
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    exit_code: int | None = None
    stopping: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        if self.proc is not None and self.exit_code is None:
            self.exit_code = self.proc.poll()
        return self.exit_code

    @property
    def running(self) -> bool:
        return self.proc is not None and self.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


def log_name(component: str) -> str:
    """``edge gw-01`` -> ``edge-gw-01.log``: no spaces in file names (shell-friendly)."""
    return "-".join(component.split()) + ".log"


@dataclass
class Supervisor:
    """Owns the components' processes; :meth:`stop_all` leaves none behind."""

    log_dir: Path
    components: list[Component] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], *, stop_timeout_s: float = 10.0) -> Component:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        comp = Component(name=name, argv=list(argv), log=self.log_dir / log_name(name),
                         stop_timeout_s=stop_timeout_s)
        with comp.log.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            comp.proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=child_env(), preexec_fn=_pdeathsig,
            )
        comp.started = time.monotonic()
        self.components.append(comp)
        return comp

    def get(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def died(self) -> list[Component]:
        """Components that exited without being asked to."""
        return [c for c in self.components if not c.stopping and c.poll() is not None]

    def stop(self, comp: Component) -> None:
        self.stop_many([comp])

    def stop_many(self, comps: Sequence[Component]) -> None:
        """SIGTERM each group at once, wait, then SIGKILL what is left (group-wide)."""
        live = [c for c in comps if c.proc is not None]
        for c in live:
            c.stopping = True
            _signal_group(c, signal.SIGTERM)
        deadline = time.monotonic() + max((c.stop_timeout_s for c in live), default=0.0)
        for c in live:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.0, min(deadline, time.monotonic() + c.stop_timeout_s)
                                        - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(c, signal.SIGKILL)
                c.proc.wait(timeout=5.0)
            # a process the group leader left behind (none of ours fork, but be sure)
            _signal_group(c, signal.SIGKILL)
            c.poll()

    def stop_all(self, order: Sequence[str] = ()) -> None:
        """Stop in ``order`` (name prefixes; each prefix's components together), then the rest."""
        for prefix in order:
            self.stop_many([c for c in self.components
                            if c.name.startswith(prefix) and not c.stopping])
        self.stop_many([c for c in self.components if not c.stopping])


def _signal_group(comp: Component, sig: signal.Signals) -> None:
    if comp.proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(comp.proc.pid, sig)


# --- readiness and ports --------------------------------------------------------------------

def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def check_ports(ports: dict[str, tuple[int, str]]) -> None:
    """Raise :class:`StackError` naming every port in use and the flag that moves it."""
    busy = [f"port {port} ({what}) is already in use: stop whatever holds it "
            f"(another `pumpwatch up`?) or choose another with {flag}"
            for what, (port, flag) in ports.items() if port_in_use(port)]
    if busy:
        raise StackError("; ".join(busy))


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own URL
            return 200 <= int(r.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(comp: Component, ready: Callable[[], bool], *, timeout_s: float,
               what: str) -> None:
    """Wait until ``ready()``; a component that exits, or a timeout, is a :class:`StackError`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if comp.poll() is not None:
            raise StackError(f"{comp.name} exited with code {comp.exit_code} before {what}; "
                             f"last lines of {comp.log}:\n{comp.log_tail()}")
        time.sleep(0.2)
    raise StackError(f"{comp.name} not {what} after {timeout_s:.0f} s; last lines of "
                     f"{comp.log}:\n{comp.log_tail()}")
