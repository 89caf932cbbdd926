"""A throwaway PostgreSQL server for tests and benchmarks.

    with PostgresServer() as pg:          # initdb + pg_ctl start, ~1 s with fsync off
        url = pg.create_database("t1")    # postgresql://postgres@127.0.0.1:PORT/t1

As root, initdb and the server refuse to run: they run as the ``postgres``
user (``runuser``), in a fresh directory under the system temp dir that the
user owns (pytest's ``tmp_path`` sits under a 0700 root directory the
``postgres`` user cannot traverse). ``fsync=off``: the data is thrown away, and
the tests' durability claims are about commit-before-ack ordering, not disks.
Trust authentication on 127.0.0.1 and a free port; stopped with ``pg_ctl stop -m
immediate`` and removed on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

PG_MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: run `bash scripts/system-deps.sh` "
    "as root (or `sudo apt-get install postgresql`)"
)


def pg_bin(name: str) -> str | None:
    """Path of a PostgreSQL server binary (PATH, else Debian's versioned directory)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def postgres_available() -> str | None:
    """None if a throwaway server can be started here, else the reason it cannot."""
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        return PG_MISSING
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no `postgres` user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root but `runuser` is missing"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """See the module docstring."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.dir: Path | None = None
        self._as: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, text=True,
                       timeout=120)

    def start(self) -> PostgresServer:
        reason = postgres_available()
        if reason is not None:
            raise RuntimeError(reason)
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        assert initdb is not None and pg_ctl is not None
        self.dir = Path(tempfile.mkdtemp(prefix="pumpwatch-pg-"))
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        try:
            self._run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--locale=C")
            opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c full_page_writes=off -c max_connections=200 "
                    "-c shared_buffers=64MB")
            self._run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(self.dir / "log"),
                      "-w", "-t", "60", "start")
        except subprocess.CalledProcessError as exc:
            log = ""
            if (self.dir / "log").exists():
                log = (self.dir / "log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"postgres did not start: {exc.stderr or exc.stdout}\n{log}") \
                from None
        return self

    def create_database(self, name: str) -> str:
        """A fresh database; its URL."""
        psql = pg_bin("psql")
        if psql is None:
            import asyncio

            import asyncpg

            async def create() -> None:
                conn = await asyncpg.connect(self.url)
                try:
                    await conn.execute(f'CREATE DATABASE "{name}"')
                finally:
                    await conn.close()

            asyncio.run(create())
        else:
            subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                            "-d", "postgres", "-qc", f'CREATE DATABASE "{name}"'],
                           check=True, capture_output=True, timeout=60)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.dir is None:
            return
        pg_ctl = pg_bin("pg_ctl")
        data = self.dir / "data"
        if pg_ctl and (data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
