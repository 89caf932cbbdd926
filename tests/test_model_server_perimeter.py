"""The model server's perimeter, against the real server process over real sockets:
loopback by default, slow-loris heads and slow bodies closed within the stated timeouts,
a connection cap, idle keep-alive connections closed, a port in use is one line + exit 2."""

from __future__ import annotations

import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
HEADER_S, BODY_S, IDLE_S = 2.0, 3.0, 5.0  # idle > header + slack: the guard closes them,
# not aiohttp's keep-alive timer (which also runs before a first request)
SLACK_S = 1.0  # the guard sweeps every min(header, body) / 20; plus scheduling on 2 busy cores


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess(extra=[
        "--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S),
        "--idle-timeout", str(IDLE_S), "--max-connections", "400",
    ]) as srv:
        yield srv


def ping(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return int(s.recv(4096).split(b" ", 2)[1])


def trickle(socks: list[socket.socket], chunks: Iterator[bytes] | None, every_s: float,
            limit_s: float) -> dict[int, float]:
    """Send to every socket one chunk per ``every_s`` until the server closes it; returns
    ``{index: time.monotonic() when it was closed}``. ``chunks`` None: one byte of a never-ending
    request head each time."""
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    t0 = time.monotonic()
    closed: dict[int, float] = {}
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
    pos = 0
    next_send = t0
    while len(closed) < len(socks) and time.monotonic() - t0 < limit_s:
        now = time.monotonic()
        if now >= next_send:
            data = head[pos:pos + 1] if chunks is None else next(chunks, b"")
            pos += 1
            for i, s in enumerate(socks):
                if i not in closed and data:
                    try:
                        s.send(data)
                    except OSError:
                        closed[i] = time.monotonic()
            next_send = now + every_s
        for key, _ in sel.select(timeout=max(0.0, min(0.05, next_send - time.monotonic()))):
            i = key.data
            try:
                got = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except OSError:
                got = b""
            if not got and i not in closed:
                closed[i] = time.monotonic()
                sel.unregister(key.fileobj)
    sel.close()
    return closed


def test_300_slow_loris_sockets_are_closed_within_the_header_timeout(
    server: ModelServerProcess,
) -> None:
    socks, opened = [], []
    for _ in range(300):
        socks.append(socket.create_connection(("127.0.0.1", server.port)))
        opened.append(time.monotonic())
    try:
        closed = trickle(socks, None, every_s=0.2, limit_s=HEADER_S + 10)
    finally:
        for s in socks:
            s.close()
    assert len(closed) == 300, f"{300 - len(closed)} slow-loris sockets still open"
    held = [closed[i] - opened[i] for i in range(300)]
    assert max(held) <= HEADER_S + SLACK_S, f"one was held {max(held):.2f} s"
    assert min(held) >= HEADER_S * 0.9  # by the header timeout, not at once
    assert ping(server.port) == 200  # and the server still answers


def test_a_slow_5mb_body_is_closed_within_the_body_timeout(server: ModelServerProcess) -> None:
    size = 5 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-msgpack\r\n"
              b"Content-Length: %d\r\n\r\n" % size)
    head_sent = time.monotonic()
    chunks = iter([b"\x00" * 65536] * (size // 65536))  # 64 KiB every 0.5 s: ~40 s in all
    try:
        closed = trickle([s], chunks, every_s=0.5, limit_s=BODY_S + 10)
    finally:
        s.close()
    assert 0 in closed, "the slow body was held open"
    assert BODY_S * 0.9 <= closed[0] - head_sent <= BODY_S + SLACK_S, closed[0] - head_sent
    assert ping(server.port) == 200


def test_an_idle_kept_alive_connection_is_closed(server: ModelServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert s.recv(4096) == b""  # closed by the server
        assert time.monotonic() - t0 <= IDLE_S + SLACK_S + 1.0


def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    with ModelServerProcess(extra=["--max-connections", "20", "--header-timeout", "3"]) as srv:
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(30)]
        try:
            t0 = time.monotonic()
            closed = trickle(socks, iter([b"G"]), every_s=10, limit_s=1.5)
            assert len(closed) == 10 and max(closed.values()) - t0 < 1.5
        finally:
            for s in socks:
                s.close()
        deadline = time.monotonic() + 10
        while True:  # the held ones time out, then the server answers again
            try:
                assert ping(srv.port) == 200
                break
            except (OSError, IndexError, ValueError):
                assert time.monotonic() < deadline
                time.sleep(0.1)


def _listening_addresses(port: int) -> set[str]:
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # LISTEN
            out.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return out


def test_binds_loopback_unless_told_and_a_port_in_use_is_one_line() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "models.serving.server", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
        assert _listening_addresses(port) == {"127.0.0.1"}
        # a second server on the same port: one line naming it, exit 2, no traceback
        r = subprocess.run([sys.executable, "-m", "models.serving.server", "--port", str(port)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2
        assert r.stderr.strip().splitlines() == [
            f"model server: cannot listen on 127.0.0.1:{port}: the port is in use (choose "
            "another with --port; 0 picks a free one)"
        ]
    finally:
        proc.terminate()
        proc.wait(30)


def test_help_states_the_defaults() -> None:
    r = subprocess.run([sys.executable, "-m", "pumpwatch", "endpoint", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    text = " ".join(r.stdout.split())
    for s in ("default 127.0.0.1", "--header-timeout", "(default 10)", "--body-timeout",
              "(default 30)", "--idle-timeout", "(default 60)", "--max-connections",
              "(default 256)", "no authentication"):
        assert s in text, s
