"""A real Mosquitto broker for tests: own config, own port, stoppable and restartable.

Theory of operation
-------------------
:class:`Mosquitto` writes ``mosquitto.conf`` into its own directory, picks a
free TCP port once, and keeps that port across :meth:`stop` / :meth:`start`,
so clients can reconnect to "the same broker" after an injected outage.

Persistence is on by default and saved every ``autosave_interval`` seconds
(default 1). Mosquitto persists periodically, not per message: a broker
killed with SIGKILL loses whatever it acknowledged since its last save (up to
``autosave_interval`` seconds of traffic). SIGTERM saves before exiting, so a
clean stop loses nothing.

Facts this encodes (see DESIGN.md, "Broker and test-infrastructure facts"):

* Started as root, Mosquitto drops to the ``mosquitto`` user (``user
  mosquitto``, as the generated production config says) before it opens its
  log, its persistence and its TLS files; a persistence directory it cannot
  write silently saves nothing. pytest's ``tmp_path`` sits under a 0700 root
  directory that user cannot traverse, so as root the broker's run directory
  (:attr:`run_dir`: data, log, security file, TLS copies) is a fresh directory
  under the system temp dir owned by ``mosquitto`` (as tests/infra/postgres.py
  does for PostgreSQL), removed when the object goes. Not root, it is
  ``workdir`` and the broker runs as the current user.
* ``tls_pki``: an mTLS-only broker configured exactly like production
  (:mod:`pumpwatch.mosquitto_conf`): the dynamic-security plugin with the
  identities issued in that PKI directory (or ``tls_roles``) when the broker
  object is made, and the retain guard plugin before it (:attr:`retain_guard`,
  None where there is no C compiler). Issue every certificate a test needs
  before that.
* ``max_inflight_messages`` (default 20) and ``max_queued_messages`` (default
  1000, excess silently dropped) are raised so backlogs after outages survive.

Extra listeners or security settings (TLS, ACLs) go in ``extra_conf``; the
plain listener can be turned off with ``plain_listener=False`` for
TLS-only brokers (then give the listener in ``extra_conf`` using
:attr:`port`). Files the broker reads (an ACL, ...) go in :attr:`run_dir`, written
as ``{run_dir}`` in ``extra_conf``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from cloud.roles import Role

MOSQUITTO = os.environ.get("PUMPWATCH_MOSQUITTO", "/usr/sbin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_available() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


class BrokerError(RuntimeError):
    """The broker did not start (the message carries the tail of its log)."""


class Mosquitto:
    """One Mosquitto process on ``host:port`` with its config and data in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        persistence: bool = True,
        autosave_interval: int = 1,
        max_inflight_messages: int = 100,
        max_queued_messages: int = 1_000_000,
        max_packet_size: int | None = None,
        allow_anonymous: bool = True,
        plain_listener: bool = True,
        extra_conf: str = "",
        acl: str | None = None,
        log_types: tuple[str, ...] = ("error", "warning", "notice", "information"),
        tls_pki: Path | None = None,
        tls_roles: Mapping[str, Role] | None = None,
        tls_root: str = "pumpwatch",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.conf_path = self.workdir / "mosquitto.conf"
        if os.geteuid() == 0:
            self.run_dir = Path(tempfile.mkdtemp(prefix="pumpwatch-mosquitto-"))
            weakref.finalize(self, shutil.rmtree, self.run_dir, True)
        else:
            self.run_dir = self.workdir
        self.log_path = self.run_dir / "mosquitto.log"
        self.data_dir = self.run_dir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.retain_guard: Path | None = None
        if tls_pki is not None:
            plain_listener = False
            extra_conf = self._tls_conf(tls_pki, tls_roles, tls_root) + "\n" + extra_conf
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        lines = [
            f"# written by tests/infra/mosquitto.py for a test broker on {host}:{self.port}",
            f"pid_file {self.run_dir / 'mosquitto.pid'}",
            f"log_dest file {self.log_path}",
            *(f"log_type {t}" for t in log_types),
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
            f"max_inflight_messages {max_inflight_messages}",
            f"max_queued_messages {max_queued_messages}",
            "max_queued_bytes 0",
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            lines.append("user mosquitto")  # what it drops to; it owns run_dir
        if max_packet_size is not None:
            lines.append(f"max_packet_size {max_packet_size}")
        if persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.data_dir}/",
                "persistence_file mosquitto.db",
                f"autosave_interval {autosave_interval}",
                "autosave_on_changes false",
            ]
        if plain_listener:
            lines += [
                f"listener {self.port} {host}",
                f"allow_anonymous {str(allow_anonymous).lower()}",
            ]
        if acl is not None:  # an acl_file's text, kept where the broker's user can read it
            (self.run_dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.run_dir / 'acl'}")
        if extra_conf:  # "{run_dir}" names files the broker's user can read (see above)
            lines.append(extra_conf.strip().replace("{run_dir}", str(self.run_dir)))
        self.conf_path.write_text("\n".join(lines) + "\n")
        if self.run_dir != self.workdir:
            from pumpwatch.mosquitto_conf import hand_to_broker_user

            hand_to_broker_user(self.run_dir)

    def _tls_conf(self, pki_dir: Path, roles: Mapping[str, Role] | None, root: str) -> str:
        from cloud.pki import identities
        from pumpwatch.mosquitto_conf import build_retain_guard, security_json, tls_listener_conf

        tls = self.run_dir / "tls"
        tls.mkdir(exist_ok=True)
        for name in ("ca.crt", "broker.crt", "broker.key"):
            shutil.copyfile(pki_dir / name, tls / name)
        security = self.run_dir / "dynamic-security.json"
        who = roles if roles is not None else identities(pki_dir)
        security.write_text(security_json(who, root=root))
        self.retain_guard = build_retain_guard(self.run_dir)  # None: no C compiler here
        return tls_listener_conf(
            port=self.port, host=self.host, pki_dir=tls, security_path=security,
            retain_guard=self.retain_guard, root=root,
        )

    # -- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start (or restart) the broker on the same port; return once it accepts TCP."""
        if self.running:
            return self
        out = open(self.workdir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as proc
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with code {self.proc.returncode}: {self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.02)
        self.stop(signal.SIGKILL)
        raise BrokerError(
            f"mosquitto did not listen on {self.port} in {timeout} s: {self.log_tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop with ``sig`` (SIGTERM saves persistence first; SIGKILL does not)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.proc = None
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> Mosquitto:
        self.stop(sig)
        return self.start()

    def save(self) -> None:
        """Ask the broker to write its persistence file now (SIGUSR1)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, n: int = 30) -> str:
        text = ""
        for p in (self.log_path, self.workdir / "stdout.log"):
            with contextlib.suppress(OSError):
                text += p.read_text(errors="replace")
        return "\n".join(text.splitlines()[-n:])

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"Mosquitto({self.host}:{self.port}, {state}, dir={self.workdir})"


def granting_acl(root: str, *, consumers: tuple[str, ...] = ("consumer",)) -> str:
    """An ``acl_file`` as pumpwatch wrote it before the perimeter (issue 18).

    Mosquitto 2.0.11 with an ``acl_file`` grants every SUBSCRIBE, ``$share/...``
    included, and silently withholds what the ACL forbids: a device that joins the
    consumers' shared group is dealt its share of reports, which are then dropped.
    The stack now uses dynamic security, which refuses that SUBSCRIBE; delivery tests
    and the soak keep this broker to show the confirmations repair such a loss.
    """
    lines = [f"pattern write {root}/devices/%u/#", f"pattern read {root}/acks/%u", ""]
    for name in consumers:
        lines += [f"user {name}", f"topic read {root}/devices/+/reports",
                  f"topic read $share/+/{root}/devices/+/reports",
                  f"topic write {root}/sites/#", f"topic write {root}/acks/#", ""]
    return "\n".join(lines)
