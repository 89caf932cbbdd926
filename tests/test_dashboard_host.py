"""The dashboard's Host check against the real `pumpwatch dashboard` process (DNS-rebinding
defence), and the stack's token whenever the dashboard binds beyond loopback."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.store import make_store
from pumpwatch.stack.plan import StackOptions, ensure_dashboard_token
from tests.infra.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]


def empty_store(db: Path) -> str:
    url = f"sqlite:///{db}"

    async def create() -> None:
        s = make_store(url)
        await s.open()
        await s.close()

    asyncio.run(create())
    return url


def dashboard(url: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumpwatch", "dashboard", "--store", url, *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert re.search(r"listening on http://", line), line
    return proc


def get(port: int, path: str, host: str | None, token: str | None = None) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    c.putrequest("GET", path, skip_host=True)
    if host is not None:
        c.putheader("Host", host)
    for k, v in headers.items():
        c.putheader(k, v)
    c.endheaders()
    status = c.getresponse().status
    c.close()
    return status


@pytest.fixture
def store(tmp_path: Path) -> str:
    return empty_store(tmp_path / "r.db")


@pytest.fixture
def loopback(store: str) -> Iterator[int]:
    port = free_port()
    proc = dashboard(store, "--port", str(port), "--allowed-host", "pumps.example.net")
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("path", ["/api/pumps", "/api/stream", "/", "/api/alarms"])
def test_a_foreign_host_is_refused(loopback: int, path: str) -> None:
    for host in ("evil.example", f"evil.example:{loopback}", "127.0.0.1.evil.example",
                 "localhost.evil.example", "10.1.2.3"):
        assert get(loopback, path, host) == 421, host
    assert get(loopback, path, None) in (400, 421)  # no Host at all: aiohttp's own 400


def test_loopback_and_allowed_names_are_served(loopback: int) -> None:
    for host in (f"127.0.0.1:{loopback}", f"localhost:{loopback}", "localhost",
                 f"[::1]:{loopback}", "pumps.example.net", f"PUMPS.example.net.:{loopback}"):
        assert get(loopback, "/api/pumps", host) == 200, host


def test_bound_to_every_interface_ip_literals_are_served_names_are_not(store: str) -> None:
    port = free_port()
    proc = dashboard(store, "--host", "0.0.0.0", "--port", str(port))
    try:
        assert get(port, "/api/pumps", f"10.1.2.3:{port}") == 200
        assert get(port, "/api/pumps", "evil.example") == 421
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        assert "without a token" in proc.stderr.read()  # the warning, beyond loopback


def test_the_stack_sets_a_token_whenever_the_dashboard_binds_beyond_loopback(
    tmp_path: Path, store: str
) -> None:
    local = StackOptions(state=tmp_path / "a")
    assert ensure_dashboard_token(local) is None and "--token-file" not in local.dashboard_args()
    for host in ("0.0.0.0", "192.0.2.7", "::", "pumps.example.net"):
        o = StackOptions(state=tmp_path / host.replace(":", "_"), dashboard_host=host)
        token = ensure_dashboard_token(o)
        assert token is not None and stat.S_IMODE(token.stat().st_mode) == 0o600
        args = o.dashboard_args()
        assert args[args.index("--token-file") + 1] == str(token)
        assert args[args.index("--host") + 1] == host
        assert ensure_dashboard_token(o) == token and len(token.read_text().strip()) >= 40
    # and the dashboard started with those arguments requires it
    o = StackOptions(state=tmp_path / "0.0.0.0", dashboard_host="0.0.0.0",
                     dashboard_port=free_port())
    args = o.dashboard_args()[2:]  # its own --store replaced by ours
    i = args.index("--mqtt-config")  # the stack writes that file; this test has no broker
    del args[i:i + 2]
    proc = dashboard(store, *args)
    try:
        secret = o.dashboard_token_path.read_text().strip()
        assert get(o.dashboard_port, "/api/pumps", "127.0.0.1") == 401
        assert get(o.dashboard_port, "/api/pumps", "127.0.0.1", secret) == 200
    finally:
        proc.terminate()
        proc.wait(10)
