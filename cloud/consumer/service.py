"""The consumer: MQTT deliveries in, result rows and dead letters out, acks last.

Theory of operation
-------------------
Named tasks under one :class:`asyncio.TaskGroup` (owned by :meth:`Consumer.run`):

``ingest``
    takes deliveries from the MQTT handoff, validates them (dead letters go
    to the writer), drops reports the store already has, attaches reports
    that are already in flight to that work, and feeds the rest to the
    sans-IO :class:`~.batcher.Batcher`.
``batch-timer``
    emits batches whose ``max_delay`` ran out.
``invoke`` (one task per batch; the :class:`~.breaker.CircuitBreaker` decides how
    many call at once) calls the endpoint. Unavailable (throttled, not ready,
    5xx, timeout, connection): retried with jittered exponential backoff,
    forever, while the breaker opens after repeated failures, probes, and
    ramps concurrency back up (the backlog waits unacknowledged at the
    broker). Rejected (ModelError): the batch is bisected until the poison
    report is alone; it is dead-lettered with the model's message.
    Each response's results are kept whole: the fields ``Result`` does not
    type go to the row's ``extra`` (see :mod:`._response`), and so does
    ``decided_by`` (which rule named the condition; typed in ``Result``, kept
    in ``extra`` so the store's columns stay as they are). Manifests are
    cached by digest: a target's first call, and the next call after a
    response names a digest the consumer has not stored, ask for the manifest
    (``CustomAttributes: manifest=1``); it is committed with that response's
    results (table ``manifests``), so every stored digest resolves.
``writer``
    commits results + archive rows + dead letters of everything that is
    ready in one transaction, in which the store also runs the
    :class:`~.alarms.AlarmTracker` over the newly inserted results (state
    and alarm writes in the same transaction, shared by every consumer of
    the store); then publishes the result topics (:mod:`.topics`), resolves
    tickets, publishes confirmations and sends acks.

The ack rule lives in :mod:`.ledger`: each delivery has a ticket counting its
outstanding parts (one per report in flight, one for its dead letters
together); acks go out in arrival order, only on the connection the delivery
arrived on (see :mod:`.mqtt`), once every commit holding a part returned. A
crash at any point leaves the message unacknowledged at the broker, which
redelivers it; the store's idempotence turns that redelivery into no new rows.

Confirmations (:mod:`.confirm`, ``[confirm] enabled``): after each commit the
writer publishes, per device, the committed identities (results, dead letters
naming a report of the sending device, and redelivered reports the store
already had) on ``{root}/acks/{device}`` (QoS 1), before the acks. A lost
confirmation costs one re-publication by the edge, which is confirmed again.

Bounds: every retry waits with one :class:`~.backoff.Backoff` policy; the
commit queue is bounded (invocations wait for the writer); the unacknowledged
payload bytes are capped (``consumer.max_unacked_bytes``: the MQTT thread
stops reading), and so are the report bytes parsed and not yet committed
(``consumer.max_in_flight_bytes``, :mod:`.inflight`: the ingest stops
parsing; a parsed message keeps only its reports' bytes, not its payload);
dead letters are capped per message and per device (:mod:`.deadletters`).
A side effect of a committed result that fails (a result-topic publish) is
counted and skipped, never retried in a loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import msgspec

from cloud.metrics import MetricsListener
from cloud.store import (
    AlarmRow,
    ArchivedReport,
    ChannelKey,
    Commit,
    DeadLetter,
    EvidenceRow,
    Gap,
    Identity,
    ManifestRow,
    ResultRow,
    ShadowRow,
    Store,
    StoreError,
    make_store,
)
from dsp.results import Result

from ..monitor.histograms import Histograms, Observed
from ..monitor.retention import prune_monitoring
from ..monitor.usage import Invocation, Usage, reports_by_version_pump
from . import topics
from ._queue import Handoff, JobQueue, QueueStats
from ._response import Scored
from ._validate import Accepted, capped_note, message_key, parse_message
from .alarms import AlarmTracker
from .backoff import Backoff
from .batcher import Batch, Batcher, Target
from .breaker import CircuitBreaker
from .config import ConsumerConfig
from .confirm import Confirmer
from .deadletters import DeadLetterBudget
from .endpoint import EndpointClient
from .errors import EndpointConfigError, EndpointRejectedError, EndpointUnavailableError
from .inflight import InFlightBytes
from .ledger import AckLedger, Ticket
from .metrics import ConsumerMetrics
from .mqtt import Delivery, MqttSource

log = logging.getLogger(__name__)

INGEST_CHUNK = 256  # deliveries parsed per store lookup


def _with_decided_by(extra: dict[str, Any], decided_by: str | None) -> dict[str, Any]:
    """The row's extra fields plus ``decided_by`` when the endpoint says it."""
    return extra if decided_by is None else {**extra, "decided_by": decided_by}
RECENT_COMMITTED = 1 << 16  # identities remembered after commit (closes a lookup race)


class Invoker(Protocol):
    """What the consumer needs from an endpoint (EndpointClient, or a test double)."""

    async def __aenter__(self) -> Invoker: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def invoke(
        self, target: Target, raw_reports: Sequence[bytes], *, manifest: bool = False
    ) -> Scored: ...


@dataclass(slots=True, eq=False)
class Work:
    """One report on its way to a result row (the batcher's item)."""

    accepted: Accepted
    target: Target
    nbytes: int
    received_ns: int
    published_ns: int | None
    waiters: list[Ticket[Delivery]] = field(default_factory=list)

    @property
    def identity(self) -> Identity:
        return self.accepted.identity


@dataclass(slots=True, eq=False)
class Job:
    """Writes for one commit, and what they resolve once durable."""

    commit: Commit
    works: list[Work] = field(default_factory=list)
    tickets: list[Ticket[Delivery]] = field(default_factory=list)
    confirms: list[Identity] = field(default_factory=list)  # dead letters of their device
    usage: Usage | Invocation | None = None  # the batch's usage (cloud.monitor.usage)
    observed: Observed | None = None  # the batch, for the monitoring histograms
    write_usage: bool = False  # write the usage counts held in this commit (not at a flush)


@dataclass(slots=True)
class Counters:
    messages: int = 0
    reports: int = 0
    accepted: int = 0
    dead_letters: int = 0
    duplicates_in_message: int = 0
    already_stored: int = 0
    joined_in_flight: int = 0
    batches: int = 0
    invocations: int = 0
    invoked_reports: int = 0
    endpoint_retries: int = 0
    bisections: int = 0
    model_dead_letters: int = 0
    commits: int = 0
    results_inserted: int = 0
    store_retries: int = 0
    acks: int = 0
    alarm_writes: int = 0
    alarm_errors: int = 0
    condition_published: int = 0
    alarms_published: int = 0
    manifest_requests: int = 0
    manifests_stored: int = 0
    shadow_results: int = 0  # a shadow version's results the responses carried
    shadow_inserted: int = 0  # of them, new to the store
    shadow_dropped: int = 0  # responses whose shadow part did not decode (dropped)
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)
    result_publish_errors: int = 0  # result-topic publishes that failed (skipped)
    result_names_refused: int = 0  # result topics not built: a name breaks the name rule
    confirmations_sent: int = 0  # confirmation messages published
    confirmations_failed: int = 0  # not published (link down): the edge re-publishes
    dead_letters_dropped: int = 0  # over a device's dead-letter budget


class Consumer:
    """See the module docstring. ``await consumer.run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        config: ConsumerConfig,
        *,
        store: Store | None = None,
        invoker: Invoker | None = None,
    ) -> None:
        self.config = config
        self.store: Store = store or make_store(
            config.store.url, synchronous=config.store.synchronous
        )
        self._invoker: Invoker = invoker or EndpointClient(config.endpoint)
        b = config.batch
        self.batcher: Batcher[Work] = Batcher(
            max_size=b.max_size, max_delay=b.max_delay_ms / 1000.0, max_bytes=b.max_bytes
        )
        self.counters = Counters()
        self._inflight: dict[Identity, Work] = {}
        self._recent: collections.OrderedDict[Identity, None] = collections.OrderedDict()
        self._ledger: AckLedger[Delivery] = AckLedger()
        self.in_flight = InFlightBytes(config.consumer.max_in_flight_bytes)
        self._in_flight_freed = asyncio.Event()
        self._jobs: JobQueue[Job] = JobQueue(config.consumer.commit_queue_size)
        self.confirmer = Confirmer()
        dcfg = config.dead_letters
        self.dl_budget = DeadLetterBudget(
            rate=dcfg.per_device_rate, burst=dcfg.per_device_burst,
            bytes_per_s=dcfg.per_device_bytes_per_s,
        )
        self.gaps: list[Gap] = []  # the last gap check's result (see _gap_loop)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        e = config.endpoint
        self.breaker = CircuitBreaker(
            max_concurrency=e.max_concurrency, failure_threshold=e.breaker_failures,
            open_s=e.breaker_open_s, open_max_s=e.breaker_open_max_s,
        )
        self._slot_freed = asyncio.Event()
        self.alarms = AlarmTracker(config.alarms)
        self.histograms = (Histograms(flush_s=config.monitor.flush_s)
                           if config.monitor.enabled else None)
        # usage of calls without results (errors), for the next commit; each target's
        # model version as last answered (what an error is attributed to)
        self.usage = Usage() if config.monitor.enabled else None
        self._usage_flush_queued = False
        self._target_versions: dict[Target, str] = {}
        self._pump_states = topics.PumpStates()
        self._invocations: set[asyncio.Task[None]] = set()
        self._committing = False
        self._handoff: Handoff[Delivery] | None = None
        self._mqtt: MqttSource | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._routes: dict[tuple[str, str], Target] = {}
        self._manifests: set[str] = set()  # digests stored (or on their way into a commit)
        self._want_manifest: dict[Target, bool] = {}  # absent: never called yet
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        self.metrics = ConsumerMetrics(self)
        self.metrics_port: int | None = None  # bound port of the /metrics listener, if any
        self.started = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, retire: bool = False,
                  retire_idle_s: float = 2.0) -> None:
        """Consume until ``stop`` is set, then drain in-flight work and disconnect.

        ``retire``: take over this client id's session *without* subscribing (the
        broker stops assigning new shared messages to it), process what its session
        still holds, and once nothing arrived for ``retire_idle_s`` and all is acked,
        disconnect with Session Expiry 0 so the broker forgets the member. This is how
        an operator removes a consumer for good (see docs/consumer.md, scale-out).
        """
        cfg = self.config
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            await self.store.open()
            stack.push_async_callback(self.store.close)
            self._manifests = {m.digest for m in await self.store.manifests()}
            await stack.enter_async_context(self._invoker)
            if cfg.metrics.port is not None:
                listener = await stack.enter_async_context(
                    MetricsListener(self.metrics.registry, cfg.metrics.host, cfg.metrics.port)
                )
                self.metrics_port = listener.port
                log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, listener.port)
            self._handoff = Handoff(cfg.consumer.queue_size, loop,
                                    max_bytes=cfg.consumer.max_unacked_bytes)
            self._mqtt = MqttSource(cfg.mqtt, self._handoff, subscribe=not retire)
            # What is built so far (modules, botocore's service models, the clients) lives
            # as long as the process: out of the collector's generations, so a full
            # collection scans what consuming allocates, not ~100k startup objects again
            # (each took ~80 ms; full collections were ~15 % of the consumer's CPU).
            gc.collect()
            gc.freeze()
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                writer = tg.create_task(self._writer_loop(), name="writer")
                timer = tg.create_task(self._timer_loop(), name="batch-timer")
                ingest = tg.create_task(self._ingest_loop(), name="ingest")
                chores = [tg.create_task(self._retention_loop(), name="retention")]
                if cfg.confirm.gap_check_interval_s > 0:
                    chores.append(tg.create_task(self._gap_loop(), name="gaps"))
                if cfg.consumer.stats_interval_s > 0:
                    chores.append(tg.create_task(self._stats_loop(), name="stats"))
                if self.histograms is not None and self.histograms.flush_s > 0:
                    chores.append(tg.create_task(self._monitor_flush_loop(self.histograms),
                                                 name="monitor-flush"))
                log.info(
                    "consuming %s from %s:%s (client id %s) -> endpoint %s%s -> store %s",
                    cfg.mqtt.subscription, cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.client_id,
                    cfg.endpoint.name, f" at {cfg.endpoint.endpoint_url}"
                    if cfg.endpoint.endpoint_url else "", self.store.url,
                )
                self._mqtt.start()
                stack.callback(self._stop_mqtt, retire)
                if retire:
                    chores.append(tg.create_task(self._retire_watch(stop, retire_idle_s),
                                                 name="retire"))
                self.started.set()
                await stop.wait()
                log.info("stopping: draining in-flight work")
                ingest.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ingest
                for batch in self.batcher.flush():
                    self._dispatch(batch)
                try:
                    async with asyncio.timeout(cfg.consumer.drain_timeout_s):
                        while (self._inflight or self._invocations or self._committing
                               or not self._jobs.empty()):
                            self._idle.clear()
                            await self._idle.wait()
                except TimeoutError:
                    log.warning(
                        "drain timed out with %d reports in flight; the broker redelivers them",
                        len(self._inflight),
                    )
                for t in [writer, timer, *chores, *self._invocations]:
                    t.cancel()
            self._tg = None
            await self._flush_monitoring()
        log.info("final stats %s", msgspec.json.encode(self.stats()).decode())

    async def _flush_monitoring(self) -> None:
        """Write the monitoring counts held in memory (the writer has stopped): a clean
        stop loses none of what was committed."""
        h, usage = self.histograms, self.usage
        if h is None or not (h.held or usage):
            return
        h.flush_next()
        h.prepare([])
        try:
            await self.store.commit(Commit(usage=usage.take() if usage else []), histograms=h)
        except StoreError as exc:
            log.error("monitoring: the final flush failed, the histogram and usage counts "
                      "since the last one are lost: %s", exc)
            return
        h.committed()

    async def _monitor_flush_loop(self, h: Histograms) -> None:
        """Every ``flush_s``: when counts are held and due but no commit is coming, queue one
        with no rows, so an idle consumer's last counts are written, not held until the next
        report arrives."""
        while True:
            await asyncio.sleep(h.flush_s)
            if (h.due() and (h.held or self.usage) and self._jobs.empty()
                    and not self._committing):
                await self._jobs.put(Job(Commit(), write_usage=True))

    def _stop_mqtt(self, retire: bool) -> None:
        assert self._mqtt is not None
        drained = not self._ledger and not self._inflight
        if retire and not drained:
            log.error("retire: %d messages still unacknowledged; keeping the session (run "
                      "--retire again)", len(self._ledger))
        self._mqtt.stop(expire_session=retire and drained)

    async def _retire_watch(self, stop: asyncio.Event, idle_s: float) -> None:
        assert self._mqtt is not None
        await self._mqtt.connected.wait()
        last, quiet_since = -1, time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            delivered = self._mqtt.stats.delivered
            if delivered != last or self._ledger or self._inflight:
                last, quiet_since = delivered, time.monotonic()
            elif time.monotonic() - quiet_since >= idle_s:
                log.info("retire: session drained (%d messages processed); leaving the group",
                         delivered)
                stop.set()
                return

    # -- ingest ------------------------------------------------------------------------------

    def _target(self, site: str, pump: str) -> Target:
        key = (site, pump)
        t = self._routes.get(key)
        if t is None:
            t = self._routes[key] = self.config.route(site, pump)
        return t

    async def _ingest_loop(self) -> None:
        assert self._handoff is not None
        cfg = self.config.mqtt
        loop = asyncio.get_running_loop()
        dcfg = self.config.dead_letters
        ledger = self._ledger
        in_flight = self.in_flight
        while True:
            if in_flight.full:
                in_flight.waits += 1
                while in_flight.full:
                    self._in_flight_freed.clear()
                    await self._in_flight_freed.wait()
            deliveries = await self._handoff.get_batch(INGEST_CHUNK, in_flight.room)
            candidates: list[tuple[Accepted, Ticket[Delivery], Delivery]] = []
            tickets: list[Ticket[Delivery]] = []
            for full in deliveries:
                parsed = parse_message(
                    full.topic, full.payload, root=cfg.topic_root,
                    max_payload=cfg.max_payload, received_ns=full.received_ns,
                    max_dead_per_message=dcfg.max_per_message,
                    max_dead_bytes=dcfg.max_payload_bytes,
                )
                # the reports hold their own raw bytes now: keep only what the ack needs
                d = full.without_payload()
                ticket = ledger.open(d, generation=d.generation, nbytes=len(full.payload),
                                     received_ns=d.received_ns)
                tickets.append(ticket)
                self.counters.messages += 1
                self.counters.reports += parsed.parts
                self.counters.duplicates_in_message += parsed.duplicates
                if parsed.dead:
                    for dl in parsed.dead:
                        log.info("dead letter (%s) from %s: %s", dl.kind, d.topic, dl.reason,
                                 extra=_dead_letter_fields(dl, d.topic))
                    dead = self.dl_budget.admit(_topic_device(d.topic), parsed.dead,
                                                loop.time())
                    for dl in dead:
                        self._count_dead_letter(dl.kind)
                    self.counters.dead_letters += len(dead)
                    self.counters.dead_letters_dropped += len(parsed.dead) - len(dead)
                    ledger.part(ticket)
                    usage = None
                    if self.usage is not None:  # no model saw them: version "pre-model"
                        usage = Usage()
                        usage.rejected_before_model(parsed.dead_pumps)
                    await self._jobs.put(Job(Commit(dead_letters=dead), tickets=[ticket],
                                             confirms=parsed.confirmable, usage=usage))
                candidates += [(a, ticket, d) for a in parsed.accepted]
            fresh = [a.identity for a, _, _ in candidates if a.identity not in self._inflight]
            known = await self._known(fresh)
            now = loop.time()
            for acc, ticket, d in candidates:
                ident = acc.identity
                work = self._inflight.get(ident)
                if work is not None:
                    work.waiters.append(ticket)
                    ledger.part(ticket)
                    self.counters.joined_in_flight += 1
                    continue
                if ident in known or ident in self._recent:
                    self.counters.already_stored += 1
                    self._confirm(ident)  # a re-publication: confirm it again
                    continue
                self.counters.accepted += 1
                rep = acc.report
                work = Work(
                    accepted=acc, target=self._target(rep.site, rep.pump),
                    nbytes=len(acc.raw), received_ns=d.received_ns,
                    published_ns=d.published_ns, waiters=[ticket],
                )
                ledger.part(ticket)
                self._inflight[ident] = work
                in_flight.add(work.nbytes)
                for batch in self.batcher.add(work, now):
                    self._dispatch(batch)
            for ticket in tickets:
                ledger.seal(ticket)
            self._wake.set()
            self._send_confirmations()
            self._ack_ready()

    def _count_dead_letter(self, kind: str) -> None:
        by_kind = self.counters.dead_letters_by_kind
        by_kind[kind] = by_kind.get(kind, 0) + 1

    async def _known(self, identities: list[Identity]) -> set[Identity]:
        backoff = Backoff(initial=0.1, maximum=10.0)
        while True:
            try:
                return await self.store.known(identities) if identities else set()
            except StoreError as exc:
                self.counters.store_retries += 1
                delay = backoff.delay()
                log.error("store lookup failed (retrying in %.1f s): %s", delay, exc)
                await asyncio.sleep(delay)

    async def _timer_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            deadline = self.batcher.next_deadline()
            if deadline is None:
                await self._wake.wait()
                continue
            delay = deadline - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            for batch in self.batcher.due(loop.time()):
                self._dispatch(batch)

    # -- invocation --------------------------------------------------------------------------

    def _dispatch(self, batch: Batch[Work]) -> None:
        assert self._tg is not None
        self.counters.batches += 1
        task = self._tg.create_task(self._invoke(batch.target, batch.items), name="invoke")
        self._invocations.add(task)
        task.add_done_callback(self._invocation_done)

    def _invocation_done(self, task: asyncio.Task[None]) -> None:
        self._invocations.discard(task)
        self._idle.set()

    async def _acquire_slot(self) -> None:
        """Wait until the breaker lets one more call start (see :mod:`.breaker`)."""
        loop = asyncio.get_running_loop()
        while not self.breaker.try_start(loop.time()):
            self._slot_freed.clear()
            hint = self.breaker.wait_hint(loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hint if hint is not None else 1.0):
                    await self._slot_freed.wait()

    def _release_slot(self, ok: bool) -> None:
        now = asyncio.get_running_loop().time()
        before = self.breaker.state
        if ok:
            self.breaker.success(now)
        else:
            self.breaker.failure(now, jitter=random.uniform(0.5, 1.5))
        after = self.breaker.state
        if before != after:
            level = logging.WARNING if after == "open" else logging.INFO
            log.log(level, "endpoint circuit breaker %s -> %s (concurrency limit %d)",
                    before, after, self.breaker.limit)
        self._slot_freed.set()

    async def _invoke(self, target: Target, works: list[Work]) -> None:
        ecfg = self.config.endpoint
        backoff = Backoff(initial=ecfg.retry_initial_s, maximum=ecfg.retry_max_s)
        while True:
            try:
                await self._acquire_slot()
                ok = False
                outcome = "unavailable"
                t0 = time.perf_counter()
                try:
                    self.counters.invocations += 1
                    self.counters.invoked_reports += len(works)
                    ask = self._want_manifest.get(target, True)
                    self.counters.manifest_requests += ask
                    scored = await self._invoker.invoke(
                        target, [w.accepted.raw for w in works], manifest=ask
                    )
                    self._check_identities(target, works, scored.response.results)
                    ok, outcome = True, "ok"
                except EndpointRejectedError:
                    ok, outcome = True, "rejected"  # the endpoint answered: up, for the breaker
                    raise
                finally:
                    self._release_slot(ok)
                    elapsed = time.perf_counter() - t0
                    self.metrics.endpoint_seconds.labels(str(target), outcome).observe(elapsed)
            except EndpointRejectedError as exc:
                await self._usage_error(target, "rejected")
                if len(works) == 1:
                    await self._model_dead_letter(target, works[0], str(exc))
                    return
                self.counters.bisections += 1
                half = len(works) // 2
                log.warning("%s rejected a batch of %d; bisecting: %s", target, len(works), exc)
                await self._invoke(target, works[:half])
                await self._invoke(target, works[half:])
                return
            except EndpointUnavailableError as exc:
                await self._usage_error(target, "unavailable")
                self.counters.endpoint_retries += 1
                level = logging.ERROR if isinstance(exc, EndpointConfigError) else logging.WARNING
                delay = backoff.delay()
                log.log(level, "%s unavailable (retrying %d reports in %.2f s): %s",
                        target, len(works), delay, exc)
                await asyncio.sleep(delay)
                continue
            await self._jobs.put(self._result_job(target, works, scored, elapsed))
            return

    async def _usage_error(self, target: Target, outcome: str) -> None:
        """Count a failed call, and queue an empty job (once until the writer takes it) that
        writes the usage counts held: an outage's errors are stored during it, not at the
        next flush."""
        if self.usage is None:
            return
        self.usage.error(model_version=self._target_versions.get(target, ""),
                         target=str(target), outcome=outcome)
        if not self._usage_flush_queued:
            self._usage_flush_queued = True
            await self._jobs.put(Job(Commit(), write_usage=True))

    @staticmethod
    def _check_identities(target: Target, works: list[Work], results: list[Result]) -> None:
        for w, r in zip(works, results, strict=True):
            if (r.device, r.epoch, r.seq) != w.identity:
                raise EndpointUnavailableError(
                    f"{target}: result for {(r.device, r.epoch, r.seq)} in the place of "
                    f"{w.identity}: responses out of order"
                )

    def _new_manifests(self, target: Target, scored: Scored) -> list[ManifestRow]:
        """The response's manifest if it is new; whether to ask for one next time."""
        resp = scored.response
        digest = resp.manifest_digest
        out: list[ManifestRow] = []
        if digest and digest not in self._manifests and scored.manifest_json is not None:
            assert resp.manifest is not None
            self._manifests.add(digest)
            self.counters.manifests_stored += 1
            log.info("%s: manifest %s of model %s (%d classes, fields %s)", target, digest,
                     resp.manifest.model_version, len(resp.manifest.classes),
                     sorted(resp.manifest.fields) or "none")
            out.append(ManifestRow(digest=digest, model_version=resp.manifest.model_version,
                                   manifest=scored.manifest_json.decode()))
        # No digest at all: an endpoint without manifests; asking again would not help.
        self._want_manifest[target] = bool(digest) and digest not in self._manifests
        return out

    def _result_job(self, target: Target, works: list[Work], scored: Scored,
                    latency_s: float = 0.0) -> Job:
        tname = str(target)
        resp = scored.response
        manifests = self._new_manifests(target, scored)
        results: list[ResultRow] = []
        archive: list[ArchivedReport] = []
        for i, (w, r) in enumerate(zip(works, resp.results, strict=True)):
            rep = w.accepted.report
            results.append(
                ResultRow(
                    device=rep.device, epoch=rep.epoch, seq=rep.seq, site=rep.site,
                    pump=rep.pump, channel=rep.channel, t0_ns=rep.t0_ns,
                    condition=r.condition, probabilities=r.probabilities,
                    anomaly_score=r.anomaly_score, anomaly_threshold=r.anomaly_threshold,
                    anomalous=r.anomalous, baseline=r.baseline, iso_zone=r.iso_zone,
                    velocity_rms=r.velocity_rms, rpm=r.rpm,
                    evidence=[EvidenceRow(e.name, e.value, e.note) for e in r.evidence],
                    model_version=r.model_version or resp.model_version, target=tname,
                    published_ns=w.published_ns, received_ns=w.received_ns,
                    extra=_with_decided_by(scored.extra_fields(i), r.decided_by),
                    manifest_digest=resp.manifest_digest,
                )
            )
            archive.append(
                ArchivedReport(
                    device=rep.device, epoch=rep.epoch, seq=rep.seq, site=rep.site,
                    pump=rep.pump, channel=rep.channel, t0_ns=rep.t0_ns,
                    received_ns=w.received_ns, report=w.accepted.raw,
                )
            )
        observed = (self.histograms.observe([w.accepted.report for w in works], results)
                    if self.histograms is not None else None)
        usage = None
        if self.usage is not None:  # per batch: one count per (version, pump) of the batch
            usage = Invocation(target=tname, latency_s=latency_s,
                               reports=reports_by_version_pump(results), now_ns=time.time_ns())
            if results:
                self._target_versions[target] = results[-1].model_version
        return Job(Commit(results=results, archive=archive, manifests=manifests,
                          shadow=self._shadow_rows(target, works, scored)), works=works,
                   usage=usage, observed=observed)

    def _shadow_rows(self, target: Target, works: list[Work], scored: Scored) -> list[ShadowRow]:
        """A shadow version's results the response carried (for this or earlier batches,
        of this consumer or another one: each names its report)."""
        if scored.shadow_error is not None:
            self.counters.shadow_dropped += 1
            log.warning("%s: %s", target, scored.shadow_error)
        if not scored.shadow:
            return []
        rx = works[0].received_ns if works else time.time_ns()
        self.counters.shadow_results += len(scored.shadow)
        return [
            ShadowRow(
                device=r.device, epoch=r.epoch, seq=r.seq, model_version=r.model_version,
                production_version=s.production, pump_class=s.pump_class, site=r.site,
                pump=r.pump, channel=r.channel, t0_ns=r.t0_ns, condition=r.condition,
                probabilities=r.probabilities, anomaly_score=r.anomaly_score,
                anomaly_threshold=r.anomaly_threshold, anomalous=r.anomalous,
                decided_by=r.decided_by, received_ns=rx,
            )
            for s in scored.shadow
            for r in (s.result,)
        ]

    async def _model_dead_letter(self, target: Target, work: Work, reason: str) -> None:
        self.counters.model_dead_letters += 1
        self.counters.dead_letters += 1
        self._count_dead_letter("model")
        d = work.waiters[0].delivery
        ident = work.identity
        raw = work.accepted.raw
        cap = self.config.dead_letters.max_payload_bytes
        log.warning("dead letter (model) %s: %s", ident, reason, extra={
            "kind": "model", "device": ident[0], "epoch": f"{ident[1]:016x}", "seq": ident[2],
            "pump": work.accepted.report.pump, "target": str(target),
        })
        dl = DeadLetter(
            key=message_key(f"model:{target}", raw), part=0,
            received_ns=work.received_ns, topic=d.topic, kind="model",
            reason=reason + capped_note(raw, cap), payload=raw[:cap],
            device=ident[0], epoch=ident[1], seq=ident[2],
        )
        usage = None
        if self.usage is not None:
            usage = Usage()
            usage.dead_letter(model_version=self._target_versions.get(target, ""),
                              target=str(target), pump=work.accepted.report.pump)
        await self._jobs.put(Job(Commit(dead_letters=[dl]), works=[work], usage=usage))

    # -- commit and ack ----------------------------------------------------------------------

    async def _writer_loop(self) -> None:
        max_rows = self.config.store.commit_max_rows
        while True:
            self._committing = False
            self._idle.set()
            jobs = [await self._jobs.get()]
            self._committing = True
            rows = len(jobs[0].commit)
            while rows < max_rows and not self._jobs.empty():
                job = self._jobs.get_nowait()
                jobs.append(job)
                rows += len(job.commit)
            merged = Commit(
                results=[r for j in jobs for r in j.commit.results],
                archive=[a for j in jobs for a in j.commit.archive],
                dead_letters=[d for j in jobs for d in j.commit.dead_letters],
                manifests=[m for j in jobs for m in j.commit.manifests],
                shadow=[s for j in jobs for s in j.commit.shadow],
            )
            flush = (self.histograms is not None and self.histograms.prepare(
                [j.observed for j in jobs]))
            if self.usage is not None:
                for j in jobs:
                    if j.usage is not None:
                        self.usage.merge(j.usage)
                # Held, and written with the histograms' flush (every flush_s: one upsert
                # per cell, not one per pump and commit; prepare decided it for this commit),
                # or at once after a failed call (an empty job is queued: an outage's errors
                # are stored during it).
                if flush or any(j.write_usage for j in jobs):
                    merged.usage = self.usage.take()
                    self._usage_flush_queued = False
            evaluate = self._evaluate_alarms if self.config.alarms.enabled else None
            backoff = Backoff(initial=0.1, maximum=10.0)
            while True:
                t0 = time.perf_counter()
                try:
                    outcome = await self.store.commit(merged, alarms=evaluate,
                                                      histograms=self.histograms)
                    self.metrics.commit_seconds.observe(time.perf_counter() - t0)
                    break
                except StoreError as exc:
                    self.counters.store_retries += 1
                    delay = backoff.delay()
                    log.error("commit of %d rows failed (retrying in %.1f s): %s",
                              len(merged), delay, exc)
                    await asyncio.sleep(delay)
            self.counters.commits += 1
            if self.histograms is not None:
                self.histograms.committed()
            self.counters.results_inserted += outcome.results_inserted
            self.counters.shadow_inserted += outcome.shadow_inserted
            self.counters.alarm_writes += len(outcome.alarms)
            self._publish(merged.results, outcome.alarms, outcome.stored_ns)
            for r in merged.results:
                if r.published_ns is not None:
                    self.latency_ms.append((outcome.stored_ns - r.published_ns) / 1e6)
                    self.metrics.result_latency_seconds.observe(
                        max(0.0, (outcome.stored_ns - r.published_ns) / 1e9)
                    )
            ledger = self._ledger
            for job in jobs:
                for w in job.works:
                    ident = w.identity
                    self._recent[ident] = None
                    if (gone := self._inflight.pop(ident, None)) is not None:
                        self.in_flight.remove(gone.nbytes)
                    self._confirm(ident)
                    for t in w.waiters:
                        ledger.done(t)
                for t in job.tickets:
                    ledger.done(t)
                for ident in job.confirms:
                    self._confirm(ident)
            self._in_flight_freed.set()
            while len(self._recent) > RECENT_COMMITTED:
                self._recent.popitem(last=False)
            self._send_confirmations()
            self._ack_ready()
            self._idle.set()

    def _evaluate_alarms(
        self, rows: Sequence[ResultRow], states: Mapping[ChannelKey, str | None]
    ) -> tuple[dict[ChannelKey, str], list[AlarmRow]]:
        """The store's alarm hook; a bug here must never block commits (it would stall
        every ack), so it is logged and the commit goes ahead without alarms."""
        try:
            return self.alarms.evaluate(rows, states)
        except Exception:
            self.counters.alarm_errors += 1
            log.exception("alarm evaluation failed for %d results; committing without alarms",
                          len(rows))
            return {}, []

    def _publish(
        self, results: list[ResultRow], alarms: list[AlarmRow], stored_ns: int
    ) -> None:
        """Result topics after the commit, before the acks (see :mod:`.topics`)."""
        mq = self._mqtt
        if mq is None or not self.config.mqtt.publish_results:
            return
        root = self.config.mqtt.topic_root
        for site, pump in self._pump_states.update(results, stored_ns):
            if self._publish_one(site, pump, lambda s, p: (
                topics.condition_topic(root, s, p), self._pump_states.message(s, p), True
            )):
                self.counters.condition_published += 1
        for a in alarms:
            if self._publish_one(a.site, a.pump, lambda s, p, a=a: (
                topics.alarms_topic(root, s, p), topics.alarm_message(a), False
            )):
                self.counters.alarms_published += 1

    def _publish_one(
        self, site: str, pump: str, build: Any
    ) -> bool:
        """One result-topic publish; a failure is counted and skipped (the store is the
        record), never retried: a publish the broker refuses must not block the stream."""
        mq = self._mqtt
        assert mq is not None
        if not (topics.topic_safe(site) and topics.topic_safe(pump)):
            self.counters.result_names_refused += 1
            return False
        try:
            topic, payload, retain = build(site, pump)
            return mq.publish(topic, payload, retain=retain)
        except Exception as exc:  # any failure of this side effect is this report's alone
            self.counters.result_publish_errors += 1
            log.error("result topic publish for %s/%s failed (skipped): %s", site, pump, exc)
            return False

    def _confirm(self, ident: Identity) -> None:
        if self.config.confirm.enabled:
            self.confirmer.add(*ident)

    def _send_confirmations(self) -> None:
        """Publish what was committed since the last call (QoS 1, ``{root}/acks/{device}``)."""
        if not self.confirmer:
            return
        mq = self._mqtt
        root = self.config.mqtt.topic_root
        for device, payload in self.confirmer.take():
            if mq is not None and mq.publish(topics.acks_topic(root, device), payload):
                self.counters.confirmations_sent += 1
            else:  # the edge re-publishes after its confirm timeout; that is confirmed then
                self.counters.confirmations_failed += 1

    def _ack_ready(self) -> None:
        mq = self._mqtt
        if mq is None:
            return
        before = self._ledger.nbytes
        for d in self._ledger.ready(mq.generation):
            if mq.ack(d):
                self.counters.acks += 1
        if self._handoff is not None:
            self._handoff.release_bytes(before - self._ledger.nbytes)

    # -- chores ------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        scfg = self.config.store
        max_dl_bytes = self.config.dead_letters.retention_max_bytes
        monitor_days = self.config.monitor.retention_days
        if scfg.retention_days is None and max_dl_bytes is None and monitor_days is None:
            return
        while True:
            try:
                if scfg.retention_days is not None:
                    cutoff = time.time_ns() - int(scfg.retention_days * 86400e9)
                    pruned = await self.store.prune(before_ns=cutoff)
                    if pruned.results or pruned.archive or pruned.dead_letters:
                        log.info("retention: pruned %s", pruned)
                if max_dl_bytes is not None:
                    n = await self.store.prune_dead_letters(max_bytes=max_dl_bytes)
                    if n:
                        log.info("retention: pruned %d dead letters beyond %d bytes", n,
                                 max_dl_bytes)
                if monitor_days is not None:
                    cells = await prune_monitoring(self.store, retention_days=monitor_days)
                    if cells.histograms or cells.usage:
                        log.info("retention: pruned monitoring cells %s", cells)
            except StoreError as exc:
                log.error("retention prune failed: %s", exc)
            await asyncio.sleep(scfg.prune_interval_s)

    async def _gap_loop(self) -> None:
        """Every ``gap_check_interval_s``: the missing ranges older than the grace period
        (a loss the edge can no longer repair, or has not yet), logged and in stats."""
        ccfg = self.config.confirm
        known: set[tuple[str, int, int]] = set()
        while True:
            await asyncio.sleep(ccfg.gap_check_interval_s)
            try:
                gaps = await self.store.gaps(
                    before_ns=time.time_ns() - int(ccfg.gap_grace_s * 1e9)
                )
            except StoreError as exc:
                log.error("gap check failed: %s", exc)
                continue
            self.gaps = gaps
            for g in gaps:
                if (g.device, g.epoch, g.first) not in known:
                    log.warning("gap: %s epoch %x seq %d..%d (%d reports) not committed",
                                g.device, g.epoch, g.first, g.last, g.count)
            known = {(g.device, g.epoch, g.first) for g in gaps}

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.consumer.stats_interval_s)
            log.info("stats %s", msgspec.json.encode(self.stats()).decode())

    def stats(self) -> dict[str, Any]:
        """Counters, queue depths and latency percentiles (for logs and health)."""
        lat = sorted(self.latency_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

        out: dict[str, Any] = {
            "counters": dataclasses.asdict(self.counters),
            "in_flight_reports": len(self._inflight),
            "in_flight_bytes": {"held": self.in_flight.held, "peak": self.in_flight.peak,
                                "limit": self.in_flight.limit, "waits": self.in_flight.waits},
            "unacked_messages": len(self._ledger),
            "unacked_bytes": self._ledger.nbytes,
            "oldest_unacked_age_s": round((time.time_ns() - oldest) / 1e9, 3)
            if (oldest := self._ledger.oldest_received_ns()) is not None else 0.0,
            "commit_queue": _queue_stats(self._jobs.stats()),
            "confirmations": {"enabled": self.config.confirm.enabled,
                              "messages": self.confirmer.messages,
                              "identities": self.confirmer.confirmed},
            "dead_letter_budget": {
                "admitted": self.dl_budget.stats.admitted,
                "dropped": self.dl_budget.stats.dropped,
                "dropped_bytes": self.dl_budget.stats.dropped_bytes,
                "dropped_by_device": dict(sorted(
                    self.dl_budget.stats.dropped_by_device.items(), key=lambda kv: -kv[1]
                )[:20]),
            },
            "gaps": {"ranges": len(self.gaps), "reports": sum(g.count for g in self.gaps)},
            "batcher_open_items": len(self.batcher),
            "batches_by_reason": dict(self.batcher.stats.by_reason),
            "invocations_running": len(self._invocations),
            "breaker": {
                "state": self.breaker.state, "limit": self.breaker.limit,
                "running": self.breaker.running,
                **dataclasses.asdict(self.breaker.stats),
            },
            "alarms": {"channels": len(self.alarms), **dataclasses.asdict(self.alarms.stats)},
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "n": len(lat)},
            "cpu_s": round(time.process_time(), 3),
        }
        if self._handoff is not None:
            out["handoff"] = {**_queue_stats(self._handoff.stats()),
                              "held_bytes": self._handoff.held_bytes}
        if self._mqtt is not None:
            m = self._mqtt.stats
            out["mqtt"] = {
                "connected": m.connected, "connects": m.connects,
                "disconnects": m.disconnects, "delivered": m.delivered,
                "acked": m.acked, "stale_acks_skipped": m.stale_acks_skipped,
            }
        return out


def _dead_letter_fields(dl: DeadLetter, topic: str) -> dict[str, object]:
    """Structured log fields of a dead letter (see pumpwatch.logfmt): what is known of it."""
    out: dict[str, object] = {"kind": dl.kind, "topic": topic}
    if dl.device is not None:
        out["device"] = dl.device
    if dl.epoch is not None:
        out["epoch"] = f"{dl.epoch:016x}"
    if dl.seq is not None:
        out["seq"] = dl.seq
    return out


def _queue_stats(s: QueueStats) -> dict[str, Any]:
    return {
        "depth": s.depth, "peak": s.peak, "capacity": s.capacity, "drops": s.drops,
        "oldest_age_s": round(s.oldest_age_s, 3), "blocked_s": round(s.blocked_s, 3),
    }


def _topic_device(topic: str) -> str | None:
    """The device segment of ``.../devices/{device}/reports`` (for budgets), if any."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 3 and parts[-1] == "reports" else None
