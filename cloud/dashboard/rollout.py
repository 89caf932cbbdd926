"""``GET /api/rollout``: the model server's running rollout, relayed over HTTP for the Models page.

The comparison of a candidate with production (shadow or canary) and the
automatic-rollback events live in the model server's memory and are served at
its ``GET /rollout`` (docs/models.md, "Rolling out a model"). The cloud never
imports the models package, so the dashboard reads that route over HTTP: one
request per ``/api/rollout`` (concurrent requests share one fetch), with a short
timeout, and answers an envelope whose ``state`` says what it got:

- ``ok``: the server answered; ``endpoint``, ``production``, ``rollout`` (the
  running trial or null), ``last`` (the last finished one) and ``events`` are
  the server's, unchanged;
- ``not_configured``: the dashboard was started without ``--model-server``;
- ``unreachable``: no answer within the timeout (refused, DNS, timeout);
- ``error``: an answer that is not a rollout (a status other than 200, not a
  JSON object, larger than :data:`MAX_BYTES`): say, a server without rollouts.

Every state is a 200 with ``error`` naming the cause, so the page shows it
rather than failing; the figures are never invented or cached past the request.

**Rollbacks on the live stream.** While a model server is configured, a
watcher reads its ``/rollout`` every ``watch_s`` and sends each event it has not
seen before to the live stream's subscribers as an SSE ``rollout`` event (the
server's event object, unchanged). The first answer the watcher gets is old
news (a dashboard that starts, or a model server that comes back, announces
nothing already listed); the stream's cursor does not cover these events, so a
client that was disconnected reads what it missed at ``/api/rollout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
from aiohttp import web

log = logging.getLogger(__name__)
State = Literal["ok", "not_configured", "unreachable", "error"]
MAX_BYTES = 4 << 20  # a /rollout body beyond this is not a rollout
_json = msgspec.json.Encoder().encode


def check_model_server_url(url: str) -> str:
    """``url`` without a trailing slash, or ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"model server URL must be http(s)://HOST[:PORT], got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"model server URL takes no query or fragment, got {url!r}")
    return url.rstrip("/")


def envelope(state: State, url: str | None, *, error: str | None = None,
             body: dict[str, Any] | None = None) -> dict[str, Any]:
    b = body or {}
    events = b.get("events")
    return {
        "state": state, "model_server": url, "error": error,
        "checked_ms": time.time_ns() / 1e6,
        "endpoint": b.get("endpoint") if isinstance(b.get("endpoint"), str) else None,
        "production": b.get("production") if isinstance(b.get("production"), str) else None,
        "rollout": b.get("rollout") if isinstance(b.get("rollout"), dict) else None,
        "last": b.get("last") if isinstance(b.get("last"), dict) else None,
        "events": [e for e in events if isinstance(e, dict)] if isinstance(events, list) else [],
        "shadow_results": b.get("shadow_results")
        if isinstance(b.get("shadow_results"), dict) else None,
    }


class Relay:
    """Fetches ``{url}/rollout``; concurrent callers share the fetch in flight."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.session: aiohttp.ClientSession | None = None
        self._inflight: asyncio.Task[dict[str, Any]] | None = None

    async def get(self) -> dict[str, Any]:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._fetch(), name="dashboard-rollout-fetch")
        return await asyncio.shield(self._inflight)

    async def _fetch(self) -> dict[str, Any]:
        assert self.session is not None
        where = f"{self.url}/rollout"
        try:
            async with self.session.get(where, allow_redirects=False) as resp:
                status = resp.status
                parts: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 << 10):  # to EOF, bounded
                    parts.append(chunk)
                    size += len(chunk)
                    if size > MAX_BYTES:
                        break
                raw = b"".join(parts)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = f"no answer within {self.timeout_s:g} s" if isinstance(
                exc, TimeoutError) else (str(exc) or type(exc).__name__)
            return envelope("unreachable", self.url,
                            error=f"cannot reach the model server at {where}: {why}")
        if status != 200:
            hint = " (a model server without rollouts?)" if status == 404 else ""
            return envelope("error", self.url, error=f"the model server at {where} answered "
                            f"HTTP {status}{hint}")
        if len(raw) > MAX_BYTES:
            return envelope("error", self.url, error=f"the model server's {where} answered "
                            f"more than {MAX_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return envelope("error", self.url, error=f"the model server's {where} did not "
                            "answer a JSON object")
        return envelope("ok", self.url, body=body)


def new_events(seen: set[str] | None, events: list[dict[str, Any]]
               ) -> tuple[set[str], list[dict[str, Any]]]:
    """(what is seen now, the events to announce): none on the first read (``seen`` None).
    The server's list is a sliding window, so what left it never comes back."""
    keys = [json.dumps(e, sort_keys=True) for e in events]
    fresh = [] if seen is None else [e for k, e in zip(keys, events, strict=True)
                                     if k not in seen]
    return set(keys), fresh


async def watch(relay: Relay, announce: Callable[[str, bytes], None], *,
                every_s: float) -> None:
    """Announce the server's new events as ``rollout`` stream events, until cancelled."""
    seen: set[str] | None = None
    while True:
        body = await relay.get()
        if body["state"] == "ok":
            seen, fresh = new_events(seen, body["events"])
            for ev in fresh:
                log.info("model server event %s: %s", ev.get("event"), ev.get("reason"))
                announce("rollout", _json(ev))
        await asyncio.sleep(every_s)


def install(app: web.Application, url: str | None, *, timeout_s: float = 2.0,
            check: Callable[[web.Request], None] = lambda request: None,
            announce: Callable[[str, bytes], None] | None = None,
            watch_s: float = 2.0) -> None:
    """Add ``GET /api/rollout`` (relaying ``url``'s ``/rollout``; None: not configured);
    ``check`` vets the query parameters (raises the app's parameter error); with
    ``announce`` (the live stream's), new rollback events go out as ``rollout`` events."""
    relay = None if url is None else Relay(check_model_server_url(url), timeout_s=timeout_s)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        if relay is None:
            yield
            return
        relay.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s), raise_for_status=False)
        watcher = None if announce is None else asyncio.create_task(
            watch(relay, announce, every_s=watch_s), name="dashboard-rollout-watch")
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            task = relay._inflight
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await relay.session.close()

    async def get_rollout(request: web.Request) -> web.Response:
        check(request)
        if relay is None:
            body = envelope("not_configured", None, error="the dashboard was started without "
                            "--model-server (or $PUMPWATCH_MODEL_SERVER)")
        else:
            body = await relay.get()
        return web.Response(body=_json(body), content_type="application/json")

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/rollout", get_rollout)


__all__ = ["MAX_BYTES", "Relay", "check_model_server_url", "envelope", "install", "new_events",
           "watch"]
