"""One stack per state directory: an exclusive ``fcntl`` lock on ``state/stack.lock``.

Two stacks on one state directory would rewrite each other's broker config
and share one broker persistence file (the first broker aborts). The lock is
held for the life of the process (the kernel drops it when the process dies,
so a crash leaves no stale lock); the file names the holder's pid and ports
so the refusal can say which stack is running.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

LOCK_NAME = "stack.lock"


class StateLockedError(RuntimeError):
    """Another live process holds the state directory's lock."""

    def __init__(self, state_dir: Path, holder: dict[str, Any]) -> None:
        self.state_dir = state_dir
        self.holder = holder
        ports = holder.get("ports") or {}
        where = ", ".join(f"{k} {v}" for k, v in ports.items())
        who = f"pid {holder['pid']}" if "pid" in holder else "another process"
        super().__init__(
            f"state directory {state_dir} is in use by a running stack ({who}"
            + (f"; {where}" if where else "") + "): stop it first, or give another --state"
        )


class StateLock:
    """Hold ``state_dir``'s lock; :meth:`acquire` raises :class:`StateLockedError` if taken."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self, ports: dict[str, int]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # not truncated before the lock is ours: the holder's pid and ports stay readable
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read()
            fh.close()
            try:
                holder = json.loads(text)
            except ValueError:
                holder = {}
            raise StateLockedError(self.state_dir, holder if isinstance(holder, dict) else {}) \
                from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "ports": ports}) + "\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock; the file stays (harmless)
            self._fh = None
