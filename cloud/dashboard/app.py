"""The dashboard's HTTP server: JSON API (read-only but for the alarm lifecycle), live SSE
stream, and the web page.

Every read goes through the public read interface of :mod:`cloud.store`
(SQLite or PostgreSQL, opened read-only on first use: :mod:`._store`); report
decoding and spectrum JSON run on the default executor; the event loop only
routes and writes. Errors reach clients as ``{"error": ..., "parameter": ...}``
with 400 (bad query parameter, named), 401 (token), 404 (unknown pump) or
503 (store unreadable).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

import dsp
from cloud.consumer.config import MqttConfig
from cloud.metrics import metrics_handler
from cloud.store import ResultRow, Store, StoreError
from dsp.report import NAME_RE, NAME_RULE

from . import lifecycle as alarm_lifecycle
from . import models, rollout
from ._store import StoreHandle
from .metrics import DashboardMetrics
from .openapi import openapi_document
from .publish import AlarmPublisher
from .stream import CursorError, StreamHub, event_stream, parse_cursor
from .views import (
    alarm_json,
    classes_json,
    history_json,
    pump_json,
    spectra_json,
    spectrum_json,
    zone_limits,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_json = msgspec.json.Encoder().encode
_NAME = NAME_RE  # DESIGN.md's name rule (dsp.report)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True, kw_only=True)
class DashboardSettings:
    """How the dashboard runs. ``token``: require ``Authorization: Bearer <token>``
    (or ``?access_token=``, for EventSource) on every ``/api/`` request."""

    store_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    #: names a browser may use for this dashboard besides its bind address and loopback
    allowed_hosts: tuple[str, ...] = ()
    poll_s: float = 0.25
    history_default_s: float = 24 * 3600.0
    max_points_default: int = 600
    pool_size: int = 4  # PostgreSQL connections for the API (the stream has its own)
    #: the local model server whose ``GET /rollout`` ``/api/rollout`` relays (None: not
    #: configured); read over HTTP, as the cloud never imports the models package
    model_server: str | None = None
    model_server_timeout_s: float = 2.0
    model_server_watch_s: float = 2.0  # how often new rollback events are looked for
    #: the broker the operators' alarm changes are published to (None: not published;
    #: cloud/dashboard/publish.py)
    mqtt: MqttConfig | None = None


class ParamError(Exception):
    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


STORE: web.AppKey[StoreHandle] = web.AppKey("store", StoreHandle)
HUB: web.AppKey[StreamHub] = web.AppKey("hub", StreamHub)
PUBLISHER: web.AppKey[AlarmPublisher] = web.AppKey("publisher", AlarmPublisher)
SETTINGS: web.AppKey[DashboardSettings] = web.AppKey("settings", DashboardSettings)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json(body), status=status, content_type="application/json")


def error(status: int, message: str, parameter: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if parameter is not None:
        body["parameter"] = parameter
    return json_response(body, status)


# -- query parameters -------------------------------------------------------------------------


# /api/alarms?kind=: asset alarms (cloud/dashboard/lifecycle.py), channel episodes, or both
ALARM_KINDS = ("all", "asset", "episode")
# The query parameters each route accepts (a test holds the OpenAPI document to these).
QUERY_PARAMS: dict[str, frozenset[str]] = {
    "/api/pumps": frozenset(),
    "/api/pumps/{pump}/history": frozenset({"since", "until", "channel", "max_points"}),
    "/api/pumps/{pump}/spectrum": frozenset({"channel"}),
    "/api/pumps/{pump}/spectra": frozenset({"channel", "n", "kind", "bins"}),
    "/api/alarms": frozenset({"pump", "state", "kind", "limit"}),
    "/api/classes": frozenset(),
    "/api/monitoring": frozenset(),
    "/api/rollout": frozenset(),
    "/api/devices/{device}/gaps": frozenset({"grace_s", "limit"}),
    "/api/openapi.json": frozenset(),
    "/api/stream": frozenset({"last_event_id"}),
    "/api/alarms/{id}": frozenset(),  # cloud/dashboard/lifecycle.py
}


def check_params(request: web.Request, route: str) -> None:
    allowed = QUERY_PARAMS[route]
    for name in request.query:
        if name not in allowed and name != "access_token":
            raise ParamError(name, f"unknown query parameter {name!r}")


def param_time(request: web.Request, name: str) -> int | None:
    """ISO 8601 (naive = UTC) or Unix seconds -> ns."""
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ParamError(
                name, f"{name} must be ISO 8601 or Unix seconds, got {text[:40]!r}"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
        raise ParamError(name, f"{name} out of range, got {text[:40]!r}")
    return int(seconds * 1e9)


def param_name(request: web.Request, name: str) -> str | None:
    text = request.query.get(name)
    if text is None:
        return None
    if not _NAME.match(text):
        raise ParamError(name, f"{name} must be {NAME_RULE}, got {text[:40]!r}")
    return text


def param_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ParamError(name, f"{name} must be an integer, got {text[:40]!r}") from None
    if not lo <= value <= hi:
        raise ParamError(name, f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def param_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    text = request.query.get(name, default)
    if text not in choices:
        raise ParamError(name, f"{name} must be one of {', '.join(choices)}, got {text[:40]!r}")
    return text


def pump_param(request: web.Request) -> str:
    pump = request.match_info["pump"]
    if not _NAME.match(pump):
        raise ParamError("pump", f"pump must be {NAME_RULE}, got {pump[:40]!r}")
    return pump


# -- middleware -------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def host_allowed(host_header: str | None, settings: DashboardSettings) -> bool:
    """Whether a request's ``Host`` names this dashboard (DNS-rebinding defence).

    Allowed: loopback names, the bind address, ``allowed_hosts``, and -- when bound to
    every interface -- any IP literal (a rebinding attack needs a domain name)."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    names = {"localhost", "127.0.0.1", "::1", settings.host.lower().strip("[]"),
             *(h.lower().rstrip(".") for h in settings.allowed_hosts)}
    if host in names:
        return True
    if settings.host in ("0.0.0.0", "::", ""):  # noqa: S104 -- comparing, not binding
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True
    return False


@web.middleware
async def host_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not host_allowed(request.headers.get("Host"), request.app[SETTINGS]):
        return error(421, "this dashboard is not served under that Host name (see "
                          "--allowed-host)")
    return await handler(request)


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    if request.path.startswith("/api/") and settings.token:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        given = given or request.query.get("access_token", "")
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            resp = error(401, "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pumpwatch"'
            return resp
    try:
        response = await handler(request)
    except ParamError as exc:
        return error(400, exc.message, exc.parameter)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return error(exc.status, exc.reason)  # unknown route, wrong method: JSON too
    except StoreError as exc:
        log.warning("store read failed for %s: %s", request.path, exc)
        return error(503, f"results store unavailable: {exc}")
    if not request.path.startswith("/api/"):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


# -- handlers -----------------------------------------------------------------------------------


async def get_pumps(request: web.Request) -> web.Response:
    check_params(request, "/api/pumps")
    store = await request.app[STORE].get()
    fleet: dict[str, list[ResultRow]] = {}
    for r in await store.latest():
        fleet.setdefault(r.pump, []).append(r)
    active = await store.active_alarms()
    pumps = [pump_json(p, rows, active.get(p, 0)) for p, rows in fleet.items()]
    return json_response({"pumps": pumps})


async def _latest_limits(store: Store, pump: str, channel: str | None) -> list[float] | None:
    archived = await store.latest_archived(pump, channel)
    if archived is None:
        return None
    loop = asyncio.get_running_loop()
    try:
        report = await loop.run_in_executor(None, dsp.decode_report, archived.report)
    except dsp.ReportDecodeError:
        return None
    return zone_limits(report.asset)


async def get_history(request: web.Request) -> web.Response:
    check_params(request, "/api/pumps/{pump}/history")
    settings = request.app[SETTINGS]
    pump = pump_param(request)
    since = param_time(request, "since")
    until = param_time(request, "until")
    channel = param_name(request, "channel")
    max_points = param_int(request, "max_points", settings.max_points_default, 10, 10_000)
    store = await request.app[STORE].get()
    last = await store.last_t0(pump)
    if last is None:
        return error(404, f"no results for pump {pump!r}")
    if until is None:
        until = max(last + 1, (since or 0) + 1)
    if since is None:
        since = until - int(settings.history_default_s * 1e9)
    if until <= since:
        raise ParamError("until", "until must be after since")
    hist = await store.series(
        pump, since_ns=since, until_ns=until, channel=channel, max_points=max_points
    )
    limits = await _latest_limits(store, pump, channel)
    return json_response(history_json(hist, limits))


async def get_spectrum(request: web.Request) -> web.Response:
    check_params(request, "/api/pumps/{pump}/spectrum")
    pump = pump_param(request)
    channel = param_name(request, "channel")
    archived = await (await request.app[STORE].get()).latest_archived(pump, channel)
    if archived is None:
        where = f" channel {channel!r}" if channel else ""
        return error(404, f"no archived report for pump {pump!r}{where}")

    def build() -> dict[str, Any]:
        return spectrum_json(archived, dsp.decode_report(archived.report))

    try:
        body = await asyncio.get_running_loop().run_in_executor(None, build)
    except dsp.ReportDecodeError as exc:
        return error(500, f"archived report does not decode: {exc}")
    return json_response(body)


#: the waterfall's bound: at most this many spectra per request
MAX_SPECTRA = 120


async def get_spectra(request: web.Request) -> web.Response:
    """The waterfall: the ``n`` newest archived spectra of one channel (default: the channel
    of the pump's newest archived report), newest first, pooled to at most ``bins``
    columns."""
    check_params(request, "/api/pumps/{pump}/spectra")
    pump = pump_param(request)
    channel = param_name(request, "channel")
    n = param_int(request, "n", 30, 1, MAX_SPECTRA)
    kind = param_choice(request, "kind", ("power", "envelope"), "power")
    bins = param_int(request, "bins", 400, 16, 4096)
    store = await request.app[STORE].get()
    if channel is None:
        newest = await store.latest_archived(pump)
        if newest is None:
            return error(404, f"no archived report for pump {pump!r}")
        channel = newest.channel
    archived = await store.recent_archived(pump, channel, limit=n)
    if not archived:
        return error(404, f"no archived report for pump {pump!r} channel {channel!r}")
    chosen = channel

    def build() -> dict[str, Any]:
        decoded = []
        for a in archived:
            try:
                decoded.append((a, dsp.decode_report(a.report)))
            except dsp.ReportDecodeError:
                continue  # counted as skipped below
        body = spectra_json(pump, chosen, kind, decoded, bins)
        body["skipped"] += len(archived) - len(decoded)
        return body

    return json_response(await asyncio.get_running_loop().run_in_executor(None, build))


async def get_alarms(request: web.Request) -> web.Response:
    check_params(request, "/api/alarms")
    pump = param_name(request, "pump")
    state = param_choice(request, "state", ("all", "raised", "cleared"), "all")
    kind = param_choice(request, "kind", ALARM_KINDS, "all")
    limit = param_int(request, "limit", 200, 1, 1000)
    store = await request.app[STORE].get()
    alarms = await store.alarms(
        pump=pump, state=None if state == "all" else state, limit=limit, order="raised_desc",
        kind=None if kind == "all" else kind,
    )
    return json_response({"alarms": [alarm_json(a) for a in alarms]})


async def get_gaps(request: web.Request) -> web.Response:
    """Sequence ranges of a device's streams that were never committed, although a later
    report was, longer than ``grace_s`` ago: lost unless the edge still re-publishes."""
    check_params(request, "/api/devices/{device}/gaps")
    device = request.match_info["device"]
    if not _NAME.match(device):
        raise ParamError("device", f"device must be {NAME_RULE}, got {device[:40]!r}")
    grace_s = param_int(request, "grace_s", 600, 0, 30 * 86400)
    limit = param_int(request, "limit", 1000, 1, 10_000)
    now_ns = int(datetime.now(UTC).timestamp() * 1e9)
    store = await request.app[STORE].get()
    gaps = await store.gaps(device=device, before_ns=now_ns - grace_s * 10**9, limit=limit)
    return json_response({
        "device": device, "grace_s": grace_s,
        "missing": sum(g.count for g in gaps),
        "gaps": [{"epoch": f"{g.epoch:016x}", "first": g.first, "last": g.last,
                  "count": g.count, "detected_after_ms": g.after_received_ns // 1_000_000}
                 for g in gaps],
    })


async def get_classes(request: web.Request) -> web.Response:
    check_params(request, "/api/classes")
    return json_response(classes_json(await (await request.app[STORE].get()).manifests()))


async def get_openapi(request: web.Request) -> web.Response:
    check_params(request, "/api/openapi.json")
    return json_response(openapi_document())


async def get_stream(request: web.Request) -> web.StreamResponse:
    check_params(request, "/api/stream")
    resume_text = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    resume = None
    if resume_text:
        try:
            resume = parse_cursor(resume_text)
        except CursorError as exc:
            name = "Last-Event-ID" if "Last-Event-ID" in request.headers else "last_event_id"
            raise ParamError(name, f"{name}: {exc}") from None
    hub = request.app[HUB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        async with contextlib.aclosing(event_stream(hub, resume)) as chunks:
            async for chunk in chunks:
                await response.write(chunk)
    except ConnectionError:
        pass  # the client went away; aclosing unsubscribed it
    return response


async def get_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


# -- the application ----------------------------------------------------------------------------


def create_app(settings: DashboardSettings) -> web.Application:
    metrics = DashboardMetrics(lambda: app.get(HUB), lambda: app.get(PUBLISHER))
    app = web.Application(middlewares=[metrics.middleware, host_check, errors_and_auth])
    app[SETTINGS] = settings

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = StoreHandle(settings.store_url, pool_size=settings.pool_size)
        # The hub polls on its own connection, so API reads never queue behind it.
        hub_store = StoreHandle(settings.store_url, pool_size=1)
        hub = StreamHub(hub_store, poll_s=settings.poll_s)
        app[STORE] = store
        app[HUB] = hub
        outbox_store: StoreHandle | None = None
        if settings.mqtt is not None and settings.mqtt.publish_results:
            # the outbox marks changes published: SQLite needs a writable handle of its own
            sqlite = "://" not in settings.store_url or settings.store_url.startswith("sqlite:")
            outbox_store = StoreHandle(settings.store_url, writable=True) if sqlite else store
            app[PUBLISHER] = AlarmPublisher(settings.mqtt, outbox_store.get)
            app[PUBLISHER].start()
        task = asyncio.create_task(hub.run(), name="dashboard-stream-hub")
        try:
            yield
        finally:
            if PUBLISHER in app:
                await app[PUBLISHER].stop()
            if outbox_store is not None and outbox_store is not store:
                await outbox_store.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            hub.close_all()
            await store.close()
            await hub_store.close()

    async def on_shutdown(app: web.Application) -> None:
        if HUB in app:
            app[HUB].close_all()  # end open SSE responses so shutdown does not wait on them

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", get_index)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/api/pumps", get_pumps)
    app.router.add_get("/api/pumps/{pump}/history", get_history)
    app.router.add_get("/api/pumps/{pump}/spectrum", get_spectrum)
    app.router.add_get("/api/pumps/{pump}/spectra", get_spectra)
    app.router.add_get("/api/alarms", get_alarms)
    app.router.add_get("/api/classes", get_classes)
    app.router.add_get("/api/devices/{device}/gaps", get_gaps)
    app.router.add_get("/api/openapi.json", get_openapi)
    app.router.add_get("/api/stream", get_stream)
    app.router.add_get("/metrics", metrics_handler(metrics.registry))  # docs/metrics.md
    models.install(app, metrics.registry, lambda: app[STORE])  # /api/monitoring, drift series
    alarm_lifecycle.install(app, lambda: app[STORE], lambda: settings.token,  # /api/alarms/{id}
                            publisher=lambda: app.get(PUBLISHER))

    def announce(kind: str, data: bytes) -> None:
        if HUB in app:
            app[HUB].announce(kind, data)

    rollout.install(app, settings.model_server, timeout_s=settings.model_server_timeout_s,
                    check=lambda r: check_params(r, "/api/rollout"), announce=announce,
                    watch_s=settings.model_server_watch_s)
    return app


async def serve(settings: DashboardSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set; logs (and prints) the URL it listens on."""
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    try:
        server = site._server
        for sock in getattr(server, "sockets", None) or []:
            host, port = sock.getsockname()[:2]
            print(f"pumpwatch dashboard listening on http://{host}:{port}/", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
