"""A fault-injecting HTTP proxy between the consumer and the real model server.

    with FaultProxy(server.url) as proxy:       # own thread + event loop, free port
        cfg["endpoint"]["endpoint_url"] = proxy.url
        proxy.fault("503", seconds=2.0)         # ServiceUnavailable for 2 s
        proxy.fault("429", seconds=1.0)         # ThrottlingException
        proxy.fault("not_ready", seconds=1.0)   # ModelNotReadyException (also 429)
        proxy.fault("slow", seconds=1.0, delay_s=3.0)  # answers after the client's timeout
        proxy.fault("reset", seconds=1.0)       # connection reset, no response
        proxy.poison(("dev", epoch, seq))       # ModelError for any batch holding it
        proxy.rewrite(fn)   # fn(response object, request headers) -> response object,
                            # applied to every 200 msgpack response body from upstream

Everything else is forwarded to the upstream server unchanged (the request
body, the SageMaker headers, the response). Faults are time-boxed, so a test
says "503 for N seconds" and the proxy returns to forwarding by itself.
``proxy.stats`` counts requests by outcome; ``proxy.poisoned_seen`` the
poison identities that were refused at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal

import aiohttp
import msgspec
from aiohttp import web

Fault = Literal["503", "429", "not_ready", "slow", "reset"]
Identity = tuple[str, int, int]
Rewrite = Callable[[dict[str, Any], Mapping[str, str]], dict[str, Any]]


class _Ident(msgspec.Struct, array_like=True):
    """The leading fields of an array-like dsp.Report (the rest is ignored)."""

    v: int
    device: str
    epoch: int
    seq: int


class _Request(msgspec.Struct):
    v: int
    reports: list[_Ident]


_decode_request = msgspec.msgpack.Decoder(_Request).decode
_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class FaultProxy:
    """See the module docstring. Thread-safe controls; the server runs on its own loop."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = 0
        self.stats: Counter[str] = Counter()
        self.poisoned_seen: set[Identity] = set()
        self._lock = threading.Lock()
        self._faults: list[tuple[Fault, float, float]] = []  # (kind, until monotonic, delay)
        self._poison: set[Identity] = set()
        self._rewrite: Rewrite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- controls ------------------------------------------------------------------------------

    def fault(self, kind: Fault, *, seconds: float, delay_s: float = 0.0) -> None:
        """Inject ``kind`` into every request for the next ``seconds``."""
        with self._lock:
            self._faults.append((kind, time.monotonic() + seconds, delay_s))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._poison.clear()

    def poison(self, *identities: Identity) -> None:
        """Answer ModelError (424) for any batch containing one of these reports."""
        with self._lock:
            self._poison.update(identities)

    def rewrite(self, fn: Rewrite | None) -> None:
        """Rewrite every successful msgpack response (decoded) with ``fn``; None: stop."""
        with self._lock:
            self._rewrite = fn

    def _active(self) -> tuple[Fault, float] | None:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f[1] > now]
            if not self._faults:
                return None
            kind, _, delay = self._faults[-1]
            return kind, delay

    # -- server ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._active()
        if fault is not None:
            kind, delay = fault
            self.stats[kind] += 1
            if kind == "503":
                return web.json_response(
                    {"message": "injected: service unavailable"}, status=503,
                    headers={"x-amzn-ErrorType": "ServiceUnavailable"},
                )
            if kind == "429":
                return web.json_response(
                    {"message": "injected: rate exceeded"}, status=429,
                    headers={"x-amzn-ErrorType": "ThrottlingException"},
                )
            if kind == "not_ready":
                return web.json_response(
                    {"message": "injected: model is loading"}, status=429,
                    headers={"x-amzn-ErrorType": "ModelNotReadyException"},
                )
            if kind == "reset":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError  # nothing more to send on a reset connection
            if kind == "slow":
                await asyncio.sleep(delay)
        with self._lock:
            poison = set(self._poison)
        if poison and request.method == "POST":
            try:
                ids = {(r.device, r.epoch, r.seq) for r in _decode_request(body).reports}
            except msgspec.DecodeError:
                ids = set()
            hit = ids & poison
            if hit:
                self.stats["model_error"] += 1
                with self._lock:
                    self.poisoned_seen |= hit
                return web.json_response(
                    {"message": f"injected: model failed on {sorted(hit)[0]}",
                     "OriginalStatusCode": 500},
                    status=424, headers={"x-amzn-ErrorType": "ModelError"},
                )
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, data=body, headers=headers,
            ) as up:
                data = await up.read()
                self.stats["forwarded"] += 1
                out_headers = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
                with self._lock:
                    rewrite = self._rewrite
                if (rewrite is not None and up.status == 200
                        and up.content_type == "application/x-msgpack"):
                    data = msgspec.msgpack.encode(
                        rewrite(msgspec.msgpack.decode(data), request.headers))
                    self.stats["rewritten"] += 1
                return web.Response(body=data, status=up.status, headers=out_headers)
        except aiohttp.ClientError as exc:
            # The upstream is down (e.g. the model server was killed): what a load
            # balancer in front of a dead container answers.
            self.stats["upstream_down"] += 1
            return web.json_response(
                {"message": f"upstream unreachable: {exc}"}, status=502,
                headers={"x-amzn-ErrorType": "ServiceUnavailable"},
            )

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=120)
        )
        app = web.Application(client_max_size=8 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self._session.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"fault proxy did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
