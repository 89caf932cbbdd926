"""The model server: SageMaker inference-container contract, plus the Runtime path.

Routes:

- ``GET /ping`` -- 200 once the default bundle is loaded, 503 before (and 503 with
  the reason if it could not be loaded: the process then exits 2).
- ``POST /invocations`` -- the container contract (what SageMaker calls).
- ``POST /endpoints/{name}/invocations`` -- the SageMaker Runtime path, so
  boto3/aiobotocore ``invoke_endpoint`` with ``endpoint_url`` reach this
  server unchanged; only the endpoint name it was started with is served.
- ``GET /manifest`` (``?target=NAME`` for a target model) and
  ``GET /endpoints/{name}/manifest`` -- the served bundle's manifest (its classes
  and extra result fields) as JSON, for humans; callers of ``/invocations`` get it
  by asking with CustomAttributes ``manifest=1``.
- ``GET /stats`` -- what is loaded (default and cached target bundles), counters.
- ``GET /rollout`` -- a candidate beside the default bundle (shadow or canary), its
  comparison with production, the last finished rollout, automatic rollbacks (JSON).
- ``GET /metrics`` -- the same and request/latency/error series for Prometheus
  (:mod:`models.serving.metrics`, docs/metrics.md).
- ``GET|POST /models``, ``GET|DELETE /models/{name}``, ``POST /models/{name}/invoke``,
  ``GET /models/{name}/manifest``
  -- the SageMaker multi-model container API (the platform loads and unloads
  bundles by name; ``507`` when the memory budget is exhausted).

Headers: ``X-Amzn-SageMaker-Target-Model`` selects a bundle (resolved under
``--model-dir``, or ``group/version`` in ``--registry``), cached LRU under a
memory budget; ``X-Amzn-SageMaker-Custom-Attributes`` is echoed back (and
``manifest=1`` in it adds the bundle's manifest to the response; every response
carries the bundle's ``manifest_digest``; each bundle, default or target, has
its own manifest);
responses carry ``X-Amzn-Invoked-Production-Variant`` and
``X-Pumpwatch-Model-Version``. Errors carry ``x-amzn-ErrorType`` and a JSON
``{"message": ...}`` so botocore raises its own exception classes (see
:mod:`models.serving.errors`).

Theory of operation for hot reload: the default bundle is one reference.
A deploy (registry deployment record changed; polled, or SIGHUP) loads the
new bundle in a worker thread while requests keep using the old one, then
swaps the reference. A request scores with the bundle it picked up at its
start, so no request is dropped or half-served, and every result names the
version that produced it. SIGTERM stops accepting, lets in-flight requests
finish (up to ``shutdown_timeout``) and exits 0.

Rollout: when the registry deployment names a candidate beside production
(:mod:`models.registry.rollout`), requests without a target model are scored as
:mod:`models.serving.rollout` describes -- shadow: production answers, the
candidate scores the same decoded reports afterwards (a bounded queue, in the
event loop, yielding to invocations) and the pairs are compared, and the
candidate's per-report results ride back to callers on the next responses (the
contract's optional ``shadow`` part; a bounded outbox); canary: the
candidate scores the pumps its hash share names, production the rest and any
the candidate fails on. The candidate crossing one of its deployment's limits
is dropped at once and the rollback recorded in the registry.

What is served by default: the registry's deployment for ``--name``, else the
bundle in ``--model-dir`` (its ``bundle.json`` or ``model.tar.gz``), else the
built-in physics-only bundle, which is logged at WARNING with why. A model
configuration that cannot work is an error naming the path and the reason,
never a silent fallback: a ``--model-dir`` that is missing, a file or empty, or
an unreadable registry, stops the server before it listens (exit 2); a
configured bundle that fails to load makes ``/ping`` answer 503 with the reason
and the process exit 2. A later deployment that fails to load keeps the
bundle being served (and says so at ERROR).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import msgspec
from aiohttp import web

from dsp.report import Report
from dsp.results import RESULT_SCHEMA_VERSION, InvocationResponse, Result, ShadowResult
from models.registry.local import Deployment, LocalRegistry
from models.registry.rollout import Candidate

from .bundle import MANIFEST, Bundle, builtin_bundle, load_bundle
from .errors import (
    BundleError,
    ConfigError,
    ModelFailureError,
    ModelNotReadyError,
    ModelServerError,
    PayloadTooLargeError,
    RegistryError,
    RequestError,
    UnknownEndpointError,
    UnknownTargetModelError,
    UnsupportedMediaTypeError,
)
from .guard import Deadlines, GuardedProtocol, Limits, sweep
from .handler import (
    MSGPACK,
    Extras,
    decode_request,
    encode_response,
    handle,
    media_type,
    score_with_fields,
    wants_manifest,
)
from .metrics import ServerMetrics
from .rollout import Rollout

log = logging.getLogger("pumpwatch.model.server")

MAX_BODY = 6 * 1024 * 1024  # SageMaker InvokeEndpoint payload limit
MAX_CUSTOM_ATTRIBUTES = 1024
H_TARGET = "X-Amzn-SageMaker-Target-Model"
H_CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"
H_INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
H_VARIANT = "X-Amzn-Invoked-Production-Variant"
H_VERSION = "X-Pumpwatch-Model-Version"
SHADOW_QUEUE = 16  # shadow batches waiting to be scored; beyond, they are skipped (counted)
SHADOW_MAX_WAIT_S = 0.25  # a shadow batch waits this long at most for no invocation in flight
# The shadow's per-report results ride back to callers on later responses (the optional
# ``shadow`` part, dsp.results): at most SHADOW_PER_RESPONSE per response; at most
# SHADOW_OUTBOX wait for a response (beyond, the oldest are dropped and counted).
SHADOW_OUTBOX = 8192
SHADOW_PER_RESPONSE = 512
MAX_EVENTS = 50


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"  # the container's `serve` passes 0.0.0.0 (the platform needs it)
    port: int = 8080
    name: str = "pumpwatch"
    model_dir: Path | None = None
    registry: Path | None = None
    cache_bytes: int = 256 * 1024 * 1024  # memory budget of cached target bundles
    max_body: int = MAX_BODY
    load_wait_s: float = 5.0  # how long a request waits for a loading bundle
    reload_poll_s: float = 1.0  # how often the registry deployment is checked
    shutdown_timeout_s: float = 30.0
    variant: str = "AllTraffic"
    extract_dir: Path | None = None
    load_delay_s: float = 0.0  # testing only: simulate slow artifact storage
    limits: Limits = field(default_factory=Limits)  # timeouts and connection cap (guard.py)


class BundleStore:
    """The default bundle plus an LRU of target bundles under a byte budget."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.registry = LocalRegistry(cfg.registry) if cfg.registry else None
        self.default: Bundle | None = None
        self.deployed: Deployment | None = None
        self.attempted: Deployment | None = None  # the deployment the default load tried
        self._cache: OrderedDict[str, Bundle] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Bundle]] = {}
        self.mme: dict[str, tuple[str, Bundle]] = {}  # multi-model API: name -> (url, bundle)
        # a rollout: the candidate beside the default (production) bundle, and its trial
        self.candidate: Bundle | None = None
        self.rollout: Rollout | None = None
        self.evictions = 0
        self.loads = 0

    @property
    def extract_dir(self) -> Path:
        if self.cfg.extract_dir:
            return self.cfg.extract_dir
        if self.registry:
            return self.registry.root / "cache"
        return Path(os.environ.get("TMPDIR", "/tmp")) / "pumpwatch-bundles"  # noqa: S108

    @property
    def cached_bytes(self) -> int:
        return sum(b.nbytes for b in self._cache.values())

    # --- loading (worker threads) ---------------------------------------------------
    def _delay(self) -> None:
        if self.cfg.load_delay_s:
            time.sleep(self.cfg.load_delay_s)

    def check_config(self) -> None:
        """Raise :class:`ConfigError` for a model configuration that cannot work (cheap checks)."""
        md = self.cfg.model_dir
        if md is not None:
            if not md.exists():
                raise ConfigError(f"--model-dir {md}: no such directory")
            if not md.is_dir():
                hint = f" (here: {md.parent})" if md.name.endswith((".tar.gz", ".json")) else ""
                raise ConfigError(
                    f"--model-dir {md}: is a file, not a directory; pass the directory that "
                    f"holds {MANIFEST} or model.tar.gz{hint}"
                )
            if not any(md.iterdir()):
                raise ConfigError(
                    f"--model-dir {md}: empty directory (no {MANIFEST}, no model.tar.gz, "
                    "no target bundles)"
                )
        reg = self.cfg.registry
        if reg is not None:
            if reg.exists() and not reg.is_dir():
                raise ConfigError(f"--registry {reg}: not a directory")
            assert self.registry is not None
            try:
                self.registry.deployment(self.cfg.name)
            except RegistryError as exc:
                raise ConfigError(f"--registry {reg}: {exc}") from None

    def load_default_sync(self) -> tuple[Bundle, Deployment | None]:
        """What this server serves without a target model; errors name the path and reason."""
        self._delay()
        md = self.cfg.model_dir
        if self.registry is not None:
            dep = self.registry.deployment(self.cfg.name)
            self.attempted = dep
            if dep is not None:
                try:
                    pkg = self.registry.describe(dep.group, dep.version)
                    return self.registry.load(pkg), dep
                except (BundleError, RegistryError, OSError) as exc:
                    raise BundleError(
                        f"registry {self.cfg.registry}: endpoint {self.cfg.name} is deployed "
                        f"to {dep.model_version}, which does not load: {exc}"
                    ) from exc
        if md is not None:
            # On SageMaker, deploy sets the registry's group/version here (CreateModel env).
            version = os.environ.get("PUMPWATCH_MODEL_VERSION") or None
            try:
                if (md / MANIFEST).is_file():
                    return load_bundle(md, version=version), None
                if (md / "model.tar.gz").is_file():
                    tar = md / "model.tar.gz"
                    return load_bundle(tar, cache_dir=self.extract_dir, version=version), None
            except (BundleError, OSError) as exc:
                raise BundleError(f"--model-dir {md}: the bundle does not load: {exc}") from exc
        return builtin_bundle(), None

    def why_builtin(self) -> str:
        """Why the built-in bundle is the default (for the WARNING that says it is)."""
        md, reg = self.cfg.model_dir, self.cfg.registry
        if md is not None:
            return (f"--model-dir {md} holds no {MANIFEST} or model.tar.gz (only target "
                    "bundles): requests without a target model get the built-in physics bundle")
        if reg is not None:
            return (f"registry {reg} has no deployment for endpoint {self.cfg.name!r} yet: "
                    "serving the built-in physics bundle until one is deployed")
        return "no model configured (no --model-dir, no --registry): serving the built-in " \
               "physics bundle"

    def _resolve(self, target: str) -> Callable[[], Bundle]:
        """A loader for ``target``, or :class:`UnknownTargetModelError` right away."""
        md = self.cfg.model_dir
        if md is not None and target and "\x00" not in target:
            root = md.resolve()
            path = (root / target).resolve()
            if path.is_relative_to(root) and path != root and path.exists():
                if path.is_dir() and not (path / MANIFEST).is_file():
                    raise UnknownTargetModelError(target, f"{md} (directory without {MANIFEST})")
                return lambda: load_bundle(path, cache_dir=self.extract_dir)
        if self.registry is not None and "/" in target:
            group, _, ver = target.rpartition("/")
            try:
                pkg = self.registry.describe(group, int(ver))
            except (RegistryError, ValueError):
                pass
            else:
                if pkg.status != "Approved":
                    raise UnknownTargetModelError(target, f"the registry (it is {pkg.status})")
                reg = self.registry
                return lambda: reg.load(pkg)
        where = " or ".join(
            s for s in (str(md) if md else "", f"registry {self.cfg.registry}" if self.registry
                        else "") if s
        ) or "this server (no --model-dir or --registry)"
        raise UnknownTargetModelError(target, where)

    # --- the request path -------------------------------------------------------------
    async def get(self, target: str | None) -> Bundle:
        if not target:
            if self.default is None:
                raise ModelNotReadyError("the model is still loading; retry shortly")
            return self.default
        hit = self._cache.get(target)
        if hit is not None:
            self._cache.move_to_end(target)
            return hit
        fut = self._loading.get(target)
        if fut is None:
            loader = self._resolve(target)
            fut = self._start_load(target, loader)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.cfg.load_wait_s)
        except TimeoutError:
            raise ModelNotReadyError(
                f"target model {target!r} is still loading; retry shortly"
            ) from None

    def _start_load(self, target: str, loader: Callable[[], Bundle]) -> asyncio.Future[Bundle]:
        loop = asyncio.get_running_loop()

        def work() -> Bundle:
            self._delay()
            return loader()

        async def run() -> Bundle:
            try:
                bundle = await loop.run_in_executor(None, work)
            except (BundleError, RegistryError, OSError) as exc:
                raise ModelFailureError(f"cannot load target model {target!r}: {exc}") from exc
            finally:
                self._loading.pop(target, None)
            self.loads += 1
            self._insert(target, bundle)
            return bundle

        fut: asyncio.Future[Bundle] = asyncio.ensure_future(run())
        # A load nobody awaits any more must not log "exception never retrieved".
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._loading[target] = fut
        return fut

    def _insert(self, target: str, bundle: Bundle) -> None:
        self._cache[target] = bundle
        self._cache.move_to_end(target)
        while len(self._cache) > 1 and self.cached_bytes > self.cfg.cache_bytes:
            old, _ = self._cache.popitem(last=False)
            self.evictions += 1
            log.info("evicted target model %s (cache over %d bytes)", old, self.cfg.cache_bytes)

    def describe(self) -> dict[str, object]:
        return {
            "default": self.default.model_version if self.default else None,
            "candidate": None if self.rollout is None else {
                "model_version": self.rollout.candidate, "mode": self.rollout.mode,
                "percent": self.rollout.trial.percent,
            },
            "manifest_digest": self.default.manifest.digest if self.default else None,
            "deployment": None if self.deployed is None else {
                "group": self.deployed.group, "version": self.deployed.version,
            },
            "targets": {k: b.model_version for k, b in self._cache.items()},
            "loading": sorted(self._loading),
            "cached_bytes": self.cached_bytes,
            "cache_budget_bytes": self.cfg.cache_bytes,
            "evictions": self.evictions,
        }


def _bundle_path(url: Path) -> Path:
    """A multi-model ``url`` is a directory holding a bundle or its ``model.tar.gz``."""
    if url.is_dir() and not (url / MANIFEST).is_file() and (url / "model.tar.gz").is_file():
        return url / "model.tar.gz"
    return url


def _manifest_response(bundle: Bundle) -> web.Response:
    return web.Response(body=msgspec.json.encode(bundle.manifest),
                        content_type="application/json",
                        headers={H_VERSION: bundle.model_version})


def _error(exc: ModelServerError) -> web.Response:
    body: dict[str, object] = {"message": exc.message}
    if isinstance(exc, ModelFailureError):
        body.update(OriginalStatusCode=500, OriginalMessage=exc.message)
    return web.json_response(
        body, status=exc.status, headers={"x-amzn-ErrorType": exc.error_type}
    )


TrialKey = tuple[int, str, str, float]


def _trial_key(c: Candidate) -> TrialKey:
    """What makes a trial a new one (a redeploy of the same version with another share is)."""
    return (c.version, c.started, c.mode, c.percent)


class ModelServer:
    """The HTTP adapter. ``async with ModelServer(cfg) as srv:`` serves on ``srv.port``."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.store = BundleStore(cfg)
        self.metrics = ServerMetrics(self.store)
        self.port = 0
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self.deadlines = Deadlines(cfg.limits)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reload_now = asyncio.Event()
        self.ready = asyncio.Event()
        #: set when the configured default bundle could not be loaded (see ``load_error``)
        self.failed = asyncio.Event()
        self.load_error: str | None = None
        self._failed_dep: tuple[str, int] | None = None
        self._closing = False
        # rollout: the shadow's queue, trials rolled back here, their events
        self._shadow_q: asyncio.Queue[tuple[Rollout, Bundle, list[Report], list[Result]]] = \
            asyncio.Queue(SHADOW_QUEUE)
        self._trial: TrialKey | None = None  # the trial loaded
        self._rolled_back: set[TrialKey] = set()
        self.events: list[dict[str, object]] = []
        self._inflight = 0  # invocations being answered (the shadow yields to them)
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_rollout: dict[str, object] | None = None
        # the shadow's results waiting for a response to carry them (see SHADOW_OUTBOX)
        self._outbox: deque[ShadowResult] = deque()
        self.shadow_sent = 0
        self.shadow_dropped = 0

    # --- lifecycle ----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.cfg.max_body,
            middlewares=[self.metrics.middleware, self._errors, self._guard],
        )
        app.router.add_get("/ping", self._ping)
        app.router.add_post("/invocations", self._invocations)
        app.router.add_post("/endpoints/{name}/invocations", self._runtime_invocations)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/rollout", self._rollout)
        app.router.add_get("/manifest", self._manifest)
        app.router.add_get("/endpoints/{name}/manifest", self._runtime_manifest)
        app.router.add_get("/metrics", self.metrics.handle)
        # SageMaker multi-model container API (the platform loads/unloads bundles).
        app.router.add_get("/models", self._mme_list)
        app.router.add_post("/models", self._mme_load)
        app.router.add_get("/models/{model}", self._mme_describe)
        app.router.add_delete("/models/{model}", self._mme_unload)
        app.router.add_post("/models/{model}/invoke", self._mme_invoke)
        app.router.add_get("/models/{model}/manifest", self._mme_manifest)
        return app

    async def start(self) -> None:
        """Listen and start loading the default bundle; :class:`ConfigError` before listening."""
        self.store.check_config()
        self._runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=self.cfg.shutdown_timeout_s,
            keepalive_timeout=self.cfg.limits.idle_s,
        )
        await self._runner.setup()
        factory = self._runner.server
        assert factory is not None
        try:
            # every connection goes through the guard (timeouts, connection cap)
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: GuardedProtocol(factory(), self.deadlines),
                self.cfg.host, self.cfg.port, reuse_address=True,
            )
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"cannot listen on {self.cfg.host}:{self.cfg.port}: "
                + ("the port is in use (choose another with --port; 0 picks a free one)"
                   if exc.errno == errno.EADDRINUSE else str(exc.strerror or exc))
            ) from None
        self.port = self._listener.sockets[0].getsockname()[1]
        self._spawn(sweep(self.deadlines), "connection-guard")
        self._spawn(self._load_default(), "load-default")
        self._spawn(self._shadow_worker(), "shadow-worker")
        if self.store.registry is not None and self.cfg.reload_poll_s > 0:
            self._spawn(self._watch_deployment(), "watch-deployment")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._listener is not None:
            self._listener.close()  # accept nothing more
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()  # waits for in-flight requests
            self._runner = None

    async def __aenter__(self) -> ModelServer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_ready(self) -> None:
        """Until the default bundle is loaded (wrap in ``asyncio.timeout`` to bound it).

        Raises :class:`BundleError` with the reason if it could not be loaded.
        """
        ready = asyncio.ensure_future(self.ready.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        try:
            await asyncio.wait({ready, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            failed.cancel()
        if not self.ready.is_set():
            raise BundleError(self.load_error or "the default bundle did not load")

    def reload(self) -> None:
        """Check the registry deployment now (SIGHUP)."""
        self._reload_now.set()

    async def _load_default(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            bundle, dep = await loop.run_in_executor(None, self.store.load_default_sync)
        except Exception as exc:  # a configured model that does not load is an error
            d = self.store.attempted
            self._failed_dep = (d.group, d.version) if d is not None else None
            self.load_error = f"cannot load the model: {exc}"
            log.error("%s", self.load_error)
            self.failed.set()
            return
        self.store.default, self.store.deployed = bundle, dep
        self.ready.set()
        if dep is not None:
            await self._sync_candidate(dep)
        if dep is None and bundle.source == "builtin":
            log.warning("%s", self.store.why_builtin())
        log.info("serving %s (%s)", bundle.model_version, bundle.description or bundle.source,
                 extra={"model_version": bundle.model_version})

    async def _watch_deployment(self) -> None:
        reg = self.store.registry
        assert reg is not None
        loop = asyncio.get_running_loop()
        # A registered artifact is immutable: a deployment that failed to load is not
        # retried (nor logged again) until it changes or SIGHUP forces a retry.
        failed = self._failed_dep
        while True:
            forced = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reload_now.wait(), self.cfg.reload_poll_s)
                forced = True
            self._reload_now.clear()
            if self.store.default is None and not self.failed.is_set():
                continue  # still loading
            if self._failed_dep is not None:
                failed, self._failed_dep = self._failed_dep, None
            dep: Deployment | None = None
            try:
                dep = await loop.run_in_executor(None, reg.deployment, self.cfg.name)
                cur = self.store.deployed
                if dep is not None and cur is not None and (dep.group, dep.version) == (
                    cur.group, cur.version
                ):
                    await self._sync_candidate(dep)
                    continue
                if dep is None:
                    continue
                if (dep.group, dep.version) == failed and not forced:
                    continue
                pkg = await loop.run_in_executor(None, reg.describe, dep.group, dep.version)
                bundle = await loop.run_in_executor(None, reg.load, pkg)
            except Exception as exc:  # the watcher outlives any one bad deployment
                failed = (dep.group, dep.version) if dep is not None else None
                keeping = self.store.default.model_version if self.store.default else "nothing"
                log.error("deployment for %s not loaded, keeping %s: %s", self.cfg.name,
                          keeping, exc)
                continue
            failed = None
            old = self.store.default.model_version if self.store.default else "nothing"
            self._end_trial(f"production changed to {bundle.model_version}")
            self.store.default, self.store.deployed = bundle, dep
            self.load_error = None
            self.failed.clear()
            self.ready.set()
            log.info("hot reload: %s -> %s", old, bundle.model_version,
                     extra={"model_version": bundle.model_version})
            await self._sync_candidate(dep)

    # --- rollout: a candidate beside production --------------------------------------------
    def _end_trial(self, why: str) -> None:
        ro = self.store.rollout
        if ro is not None:
            self.last_rollout = {**ro.to_dict(), "ended": why}
            log.info("rollout of %s ended: %s", ro.candidate, why)
        self.store.candidate, self.store.rollout, self._trial = None, None, None

    async def _sync_candidate(self, dep: Deployment) -> None:
        """Load, replace or drop the candidate the deployment names (errors: logged, kept off)."""
        cand = dep.candidate
        key = None if cand is None else _trial_key(cand)
        if key == self._trial:
            return
        if cand is None or key in self._rolled_back:
            if self._trial is not None:
                self._end_trial("the registry no longer names a candidate")
            return
        reg = self.store.registry
        assert reg is not None and key is not None
        loop = asyncio.get_running_loop()
        try:
            pkg = await loop.run_in_executor(None, reg.describe, dep.group, cand.version)
            bundle = await loop.run_in_executor(None, reg.load, pkg)
        except Exception as exc:  # a candidate that does not load never serves
            log.error("candidate %s/%d for %s not loaded (production keeps serving): %s",
                      dep.group, cand.version, self.cfg.name, exc)
            self._rolled_back.add(key)
            return
        self._end_trial(f"replaced by {bundle.model_version}")
        prod = self.store.default
        assert prod is not None
        self.store.rollout = Rollout(production=prod.model_version,
                                     candidate=bundle.model_version, trial=cand)
        self.store.candidate, self._trial = bundle, key
        what = f"canary {cand.percent:g} % of pumps" if cand.mode == "canary" else "shadow"
        log.info("rollout: %s beside %s (%s)", bundle.model_version, prod.model_version, what,
                 extra={"model_version": bundle.model_version})

    def _judge(self, ro: Rollout) -> None:
        """Roll the candidate back now if it crossed a limit (memory now, registry soon)."""
        reason = ro.verdict()
        if reason is None or self.store.rollout is not ro:
            return
        key = _trial_key(ro.trial)
        self._rolled_back.add(key)
        self._end_trial(f"automatic rollback: {reason}")
        event: dict[str, object] = {
            "event": "auto-rollback", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "endpoint": self.cfg.name, "candidate": ro.candidate, "production": ro.production,
            "mode": ro.mode, "reason": reason,
        }
        self.events = [*self.events[-(MAX_EVENTS - 1):], event]
        self.metrics.rolled_back(ro.candidate)
        log.warning("automatic rollback of %s on %s (back to %s only): %s", ro.candidate,
                    self.cfg.name, ro.production, reason,
                    extra={"model_version": ro.candidate, "event": "auto-rollback"})
        reg, dep = self.store.registry, self.store.deployed
        if reg is not None and dep is not None:
            group, name = dep.group, self.cfg.name

            def record() -> None:
                try:
                    cur = reg.deployment(name)
                    if cur is None or cur.candidate is None or \
                            _trial_key(cur.candidate) != key:
                        return  # promoted or replaced meanwhile: nothing to undo
                    reg.rollback(group, name, by=f"model-server:{name}", reason=reason,
                                 automatic=True)
                except Exception as exc:
                    log.error("automatic rollback of %s not recorded in the registry: %s",
                              ro.candidate, exc)

            asyncio.get_running_loop().run_in_executor(None, record)

    async def _shadow_worker(self) -> None:
        """Score queued batches with the shadow after their responses went out, and compare.

        In the event loop's thread, like production's scoring: dsp.quantize decodes spectra
        with one module-level zstd decompressor, which is not thread-safe (a
        worker thread corrupted them, measured), and one server core gains nothing from
        a second thread. Production comes first: a shadow batch waits until no
        invocation is in flight (at most ``SHADOW_MAX_WAIT_S``); when the queue is
        full a batch is skipped (``shadow_skipped``), so under saturation the
        comparison is a sample rather than a second full load.
        """
        while not self._closing:
            ro, cand, reports, prod = await self._shadow_q.get()
            await asyncio.sleep(0)  # let the response that queued it be written first
            # production first: score the shadow when no invocation is in flight, or after
            # SHADOW_MAX_WAIT_S (a saturated server then samples: the queue fills, skips)
            # (asyncio.timeout, not wait_for: wait_for can swallow the cancellation that
            # close() sends when the event is set at the same moment -- measured: a hang)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHADOW_MAX_WAIT_S):
                    await self._idle.wait()
            if self.store.rollout is not ro:
                continue  # the trial ended while the batch waited
            t0 = time.perf_counter()
            try:
                resp, _ = score_with_fields(cand, reports)
            except ModelFailureError as exc:
                ro.failed(ro.candidate, len(reports), time.perf_counter() - t0)
                log.warning("shadow %s failed on a batch of %d: %s", ro.candidate,
                            len(reports), exc.message)
            else:
                ro.scored(ro.candidate, reports, resp.results, time.perf_counter() - t0)
                ro.compare(reports, prod, resp.results)
                self._post_shadow(reports, prod, resp.results)
            self._judge(ro)

    def _post_shadow(self, reports: list[Report], prod: list[Result],
                     cand: list[Result]) -> None:
        """Queue the shadow's results for the next responses to carry (oldest dropped)."""
        for rep, p, c in zip(reports, prod, cand, strict=True):
            if len(self._outbox) >= SHADOW_OUTBOX:
                self._outbox.popleft()
                self.shadow_dropped += 1
            self._outbox.append(ShadowResult(c, p.model_version, rep.asset.kind or ""))

    def _take_shadow(self) -> list[ShadowResult]:
        n = min(len(self._outbox), SHADOW_PER_RESPONSE)
        return [self._outbox.popleft() for _ in range(n)]

    def _untake_shadow(self, taken: list[ShadowResult]) -> None:
        """A response that failed gives its shadow results back (they go out on the next)."""
        self._outbox.extendleft(reversed(taken))
        while len(self._outbox) > SHADOW_OUTBOX:
            self._outbox.pop()
            self.shadow_dropped += 1

    def _score_rollout(
        self, prod: Bundle, cand: Bundle, ro: Rollout, body: bytes, content_type: str | None,
        accept: str | None, custom: str | None, shadow: list[ShadowResult],
    ) -> tuple[bytes, str, dict[str, int], str]:
        """Score a request during a rollout -> (body, content type, reports per version that
        scored them, the version the response names)."""
        req_mt = media_type(content_type, default=MSGPACK)
        out_mt = media_type(accept, default=req_mt or MSGPACK)
        if out_mt is None:
            raise UnsupportedMediaTypeError(f"unsupported Accept {accept!r}")
        reports = decode_request(body, content_type)
        with_manifest = wants_manifest(custom)
        if ro.mode == "shadow":
            t0 = time.perf_counter()
            resp, extras = score_with_fields(prod, reports, with_manifest=with_manifest)
            ro.scored(ro.production, reports, resp.results, time.perf_counter() - t0)
            if reports:
                try:
                    self._shadow_q.put_nowait((ro, cand, reports, resp.results))
                except asyncio.QueueFull:
                    ro.shadow_skipped += 1
            return encode_response(resp, out_mt, extras, shadow), out_mt, \
                {prod.model_version: len(reports)}, prod.model_version
        routes = ro.routes(reports)
        cand_idx = [i for i, c in enumerate(routes) if c]
        prod_idx = [i for i, c in enumerate(routes) if not c]
        results: list[Result | None] = [None] * len(reports)
        counts: dict[str, int] = {}
        fields: list[dict[str, object] | None] = [None] * len(reports)

        def run(bundle: Bundle, idx: list[int]) -> None:
            sub = [reports[i] for i in idx]
            t0 = time.perf_counter()
            resp, ex = score_with_fields(bundle, sub)
            ro.scored(bundle.model_version, sub, resp.results, time.perf_counter() - t0)
            counts[bundle.model_version] = len(sub)
            for j, i in enumerate(idx):
                results[i] = resp.results[j]
                fields[i] = ex[j] if ex is not None else None

        if cand_idx:
            t0 = time.perf_counter()
            try:
                run(cand, cand_idx)
            except ModelFailureError as exc:
                # its pumps are scored by production this time (and say so)
                ro.failed(ro.candidate, len(cand_idx), time.perf_counter() - t0)
                ro.fallbacks += len(cand_idx)
                log.warning("canary %s failed on %d reports (production scores them): %s",
                            ro.candidate, len(cand_idx), exc.message)
                prod_idx = list(range(len(reports)))
                cand_idx = []
        if prod_idx:
            run(prod, prod_idx)
        head = prod if prod_idx or not cand_idx else cand
        done = [r for r in results if r is not None]
        response = InvocationResponse(
            RESULT_SCHEMA_VERSION, head.model_version, done,
            manifest_digest=head.manifest.digest,
            manifest=head.manifest if with_manifest else None,
        )
        more: Extras | None = None
        if any(e is not None for e in fields):
            more = [dict(e or {}) for e in fields]
        return encode_response(response, out_mt, more, shadow), out_mt, counts, \
            head.model_version

    async def _rollout(self, request: web.Request) -> web.Response:
        """The running rollout's comparison (JSON), the last finished one, and events."""
        ro = self.store.rollout
        return web.json_response({
            "endpoint": self.cfg.name,
            "production": self.store.default.model_version if self.store.default else None,
            "rollout": None if ro is None else ro.to_dict(),
            "last": self.last_rollout,
            "events": self.events,
            # the shadow's per-report results: sent back on responses, waiting, dropped
            "shadow_results": {"sent": self.shadow_sent, "waiting": len(self._outbox),
                               "dropped": self.shadow_dropped},
        })

    # --- handlers -----------------------------------------------------------------------
    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The head is in: the body is due within the body timeout, then the handler runs."""
        conn = request.transport
        if conn is None:
            return await handler(request)
        self.deadlines.head_done(conn, time.monotonic())
        try:
            clen = request.content_length
            if clen is None or clen <= self.cfg.max_body:  # else the handler drains and refuses
                if request.can_read_body:
                    await request.read()  # cached: the handler's read() returns it
                self.deadlines.body_done(conn)
            return await handler(request)
        finally:
            self.deadlines.idle(conn, time.monotonic())

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ModelServerError as exc:
            if exc.status >= 500 or isinstance(exc, ModelFailureError):
                log.error("%s %s: %s", request.method, request.path, exc.message)
            return _error(exc)
        except web.HTTPRequestEntityTooLarge:
            return _error(PayloadTooLargeError(f"request body over {self.cfg.max_body} bytes"))
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(ModelFailureError(f"internal error: {exc!r}"))

    async def _ping(self, request: web.Request) -> web.Response:
        if self.store.default is None and self.load_error is not None:
            return web.json_response({"status": "failed", "message": self.load_error},
                                     status=503)
        if self.store.default is None or self._closing:
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response(
            {"status": "healthy", "model_version": self.store.default.model_version}
        )

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({**self.store.describe(), "requests": self.requests})

    async def _manifest(self, request: web.Request) -> web.Response:
        """The manifest of the default bundle, or of ``?target=`` (a target model)."""
        target = request.query.get("target") or request.headers.get(H_TARGET)
        return _manifest_response(await self.store.get(target))

    async def _runtime_manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != self.cfg.name:
            raise UnknownEndpointError(name, self.cfg.name)
        return await self._manifest(request)

    # --- SageMaker multi-model container API ---------------------------------------------
    async def _mme_list(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"modelName": n, "modelUrl": url} for n, (url, _) in self.store.mme.items()
        ]})

    async def _mme_describe(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self.store.mme:
            return web.json_response({"message": f"model {name!r} is not loaded"}, status=404)
        url, bundle = self.store.mme[name]
        return web.json_response(
            {"modelName": name, "modelUrl": url, "modelVersion": bundle.model_version}
        )

    async def _mme_load(self, request: web.Request) -> web.Response:
        try:
            spec = await request.json()
            name, url = str(spec["model_name"]), str(spec["url"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestError(f"load request must be {{model_name, url}}: {exc!r}") from None
        if name in self.store.mme:
            return web.json_response({"message": f"model {name!r} already loaded"}, status=409)
        loop = asyncio.get_running_loop()
        try:
            bundle = await loop.run_in_executor(
                None, lambda: load_bundle(_bundle_path(Path(url)),
                                          cache_dir=self.store.extract_dir)
            )
        except (BundleError, OSError) as exc:
            raise ModelFailureError(f"cannot load model {name!r} from {url}: {exc}") from exc
        used = sum(b.nbytes for _, b in self.store.mme.values())
        if used + bundle.nbytes > self.cfg.cache_bytes:
            return web.json_response(
                {"message": f"not enough memory for {name!r}"}, status=507
            )
        self.store.mme[name] = (url, bundle)
        return web.json_response({"message": f"model {name!r} loaded"})

    async def _mme_unload(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if self.store.mme.pop(name, None) is None:
            return web.json_response({"message": f"model {name!r} is not loaded"}, status=404)
        return web.json_response({"message": f"model {name!r} unloaded"})

    async def _mme_invoke(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        entry = self.store.mme.get(name)
        if entry is None:
            await self._drain(request)
            return web.json_response({"message": f"model {name!r} is not loaded"}, status=404)
        return await self._invocations(request, bundle=entry[1])

    async def _mme_manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name not in self.store.mme:
            return web.json_response({"message": f"model {name!r} is not loaded"}, status=404)
        return _manifest_response(self.store.mme[name][1])

    async def _runtime_invocations(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != self.cfg.name:
            await self._drain(request)
            raise UnknownEndpointError(name, self.cfg.name)
        return await self._invocations(request)

    async def _drain(self, request: web.Request, cap: int = 64 * 1024 * 1024) -> None:
        """Read and drop a body we refuse, so the client sees our answer, not a reset."""
        seen = 0
        while seen < cap:
            chunk = await request.content.read(1 << 16)
            if not chunk:
                return
            seen += len(chunk)

    async def _invocations(
        self, request: web.Request, *, bundle: Bundle | None = None
    ) -> web.Response:
        self._inflight += 1
        self._idle.clear()
        try:
            return await self._invoke(request, bundle=bundle)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _invoke(
        self, request: web.Request, *, bundle: Bundle | None = None
    ) -> web.Response:
        self.requests += 1
        clen = request.content_length
        if clen is not None and clen > self.cfg.max_body:
            await self._drain(request)
            raise PayloadTooLargeError(
                f"request body of {clen} bytes is over the {self.cfg.max_body}-byte limit "
                "(SageMaker InvokeEndpoint: 6 MB); send smaller batches"
            )
        custom = request.headers.get(H_CUSTOM)
        if custom is not None and len(custom) > MAX_CUSTOM_ATTRIBUTES:
            await self._drain(request)
            raise RequestError(
                f"CustomAttributes is {len(custom)} characters, over {MAX_CUSTOM_ATTRIBUTES}"
            )
        body = await request.read()
        target = request.headers.get(H_TARGET)
        ro, cand = self.store.rollout, self.store.candidate
        default = bundle is None and not target
        # the default bundle's responses carry the shadow's earlier results back
        shadow = self._take_shadow() if default else []
        try:
            if default and ro is not None and cand is not None:
                prod = await self.store.get(None)
                out, ctype, counts, version = self._score_rollout(
                    prod, cand, ro, body, request.headers.get("Content-Type"),
                    request.headers.get("Accept"), custom, shadow,
                )
                for v, n in counts.items():
                    self.metrics.scored(v, n)
                if ro.mode == "canary":
                    self._judge(ro)
            else:
                if bundle is None:
                    bundle = await self.store.get(target)
                out, ctype, n_reports = handle(
                    bundle, body, request.headers.get("Content-Type"),
                    request.headers.get("Accept"), custom, shadow=shadow,
                )
                version = bundle.model_version
                self.metrics.scored(version, n_reports)
        except BaseException:
            self._untake_shadow(shadow)
            raise
        self.shadow_sent += len(shadow)
        headers = {H_VARIANT: self.cfg.variant, H_VERSION: version}
        if custom is not None:
            headers[H_CUSTOM] = custom
        inference_id = request.headers.get(H_INFERENCE_ID)
        if inference_id is not None:
            headers[H_INFERENCE_ID] = inference_id
        return web.Response(body=out, headers={**headers, "Content-Type": ctype})


# --- command line ---------------------------------------------------------------------------
def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _at_least_one(text: str) -> int:
    v = int(text) if text.isdigit() else 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Limits()
    p.add_argument(
        "--host", default=os.environ.get("SAGEMAKER_BIND_TO_HOST", "127.0.0.1"),
        help="bind address (default 127.0.0.1, or $SAGEMAKER_BIND_TO_HOST: only this machine; "
        "the SageMaker container's `serve` passes 0.0.0.0). There is no authentication: bind "
        "beyond loopback only on a network you trust",
    )
    p.add_argument(
        "--header-timeout", type=_positive, default=d.header_s, metavar="S",
        help=f"a request head must be complete within S seconds of the connection (of the "
        f"previous response plus --idle-timeout); else the connection is closed "
        f"(default {d.header_s:g})",
    )
    p.add_argument(
        "--body-timeout", type=_positive, default=d.body_s, metavar="S",
        help=f"a request body must be complete within S seconds of its head (default "
        f"{d.body_s:g})",
    )
    p.add_argument(
        "--idle-timeout", type=_positive, default=d.idle_s, metavar="S",
        help=f"a kept-alive connection with no request is closed after S seconds (default "
        f"{d.idle_s:g})",
    )
    p.add_argument(
        "--max-connections", type=_at_least_one, default=d.max_connections, metavar="N",
        help=f"open connections beyond N are closed at once (default {d.max_connections})",
    )
    p.add_argument(
        "--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")),
        help="0 picks a free port; the bound port is printed",
    )
    p.add_argument("--name", default="pumpwatch", help="endpoint name served on the Runtime path")
    p.add_argument(
        "--model-dir", type=Path, default=None,
        help="bundle directory (bundle.json or model.tar.gz); target models resolve under it",
    )
    p.add_argument(
        "--registry", type=Path, default=None,
        help="local registry root: serve this endpoint's deployment and hot-reload on deploy",
    )
    p.add_argument("--cache-mb", type=float, default=256.0, help="target-bundle cache budget")
    p.add_argument("--reload-poll", type=float, default=1.0, help="deployment poll interval, s")
    p.add_argument("--load-wait", type=float, default=5.0,
                   help="seconds a request waits for a loading bundle before ModelNotReadyError")
    p.add_argument("--load-delay", type=float, default=0.0, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        name=args.name,
        model_dir=args.model_dir,
        registry=args.registry,
        cache_bytes=int(args.cache_mb * 1024 * 1024),
        reload_poll_s=args.reload_poll,
        load_wait_s=args.load_wait,
        load_delay_s=args.load_delay,
        limits=Limits(header_s=args.header_timeout, body_s=args.body_timeout,
                      idle_s=args.idle_timeout, max_connections=args.max_connections),
    )


async def serve(cfg: ServerConfig, *, announce: Callable[[str], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; SIGHUP re-checks the deployment. Returns the exit code.

    2 if the model configuration cannot work or the configured bundle does not load
    (one line on stderr names the path and the reason).
    """
    server = ModelServer(cfg)
    try:
        await server.start()
    except ConfigError as exc:
        print(f"model server: {exc}", file=sys.stderr, flush=True)
        return 2
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "") else cfg.host  # noqa: S104
    (announce or print)(f"listening on http://{host}:{server.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(server.failed.wait())
    try:
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            return 2  # the load error is logged (one line naming the path and reason)
        log.info("stopping: finishing in-flight requests")
    finally:
        stopped.cancel()
        failed.cancel()
        await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.serving.server", description="pumpwatch model server"
    )
    add_arguments(p)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def announce(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(serve(config_from_args(args), announce=announce))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["ModelServer", "ServerConfig", "main", "serve"]
