"""What bounds the consumer's memory: bytes parsed and not yet committed, not message counts.

The in-flight byte budget is checked alone (sans-IO) and in the running consumer
with a real broker and SQLite: while the endpoint is held, the consumer parses no
more than ``consumer.max_in_flight_bytes`` (plus less than one message) however many
messages arrive; the rest waits unparsed; parsed messages keep no payload; once the
endpoint answers, every report is stored exactly once and the budget is empty.

The SQLite store's bulk statements come in a bounded set of shapes (the sqlite3
module caches a prepared statement per distinct text, and one of 1,000 rows holds
about 1.3 MB of native memory: batches of every size once grew that cache to
~160 MB).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import pytest

import dsp
from cloud.consumer import Consumer, Scored, Target, config_from_dict
from cloud.consumer.inflight import InFlightBytes
from cloud.store._dialect import SQLITE, SQLITE_MAX_ROWS_PER_STATEMENT
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, chunks, consumer_config, encoded_reports
from tests.test_consumer_endpoint import ScriptedInvoker
from tests.test_consumer_pipeline import assert_exactly_once, stored, wait_for


@pytest.mark.parametrize("seed", range(5))
def test_in_flight_budget_counts_bytes_whole_split_and_one_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    b = InFlightBytes(10_000)
    held: list[int] = []
    for _ in range(2000):
        if held and (b.full or rng.random() < 0.45):
            n = held.pop(rng.randrange(len(held)))
            b.remove(n)
        else:
            assert not b.full
            n = rng.randint(1, min(b.room, 3000)) if b.room else 1
            b.add(n)
            held.append(n)
        assert b.held == sum(held) and b.reports == len(held)
        assert b.full == (bool(held) and sum(held) >= 10_000)
        assert b.room == max(0, 10_000 - sum(held))
    assert b.peak < 10_000 + 3000
    for n in held:
        b.remove(n)
    assert (b.held, b.reports, b.full, b.room) == (0, 0, False, 10_000)
    with pytest.raises(ValueError):
        b.remove(1)


@pytest.mark.parametrize("width", [3, 20, 1500])
def test_sqlite_bulk_statements_take_few_shapes_whatever_the_batch_sizes(width: int) -> None:
    shapes: set[int] = set()
    for n in [*range(1, 600), 4095, 4096, 4097, 9999]:
        rows = [tuple(range(i * width, (i + 1) * width)) for i in range(n)]
        chunks_ = SQLITE.row_chunks(rows, width)
        assert sum(c for c, _ in chunks_) == n
        assert [v for _, p in chunks_ for v in p] == [v for r in rows for v in r]
        assert all(len(p) == c * width and c * width <= 32766 for c, p in chunks_)
        shapes |= {c for c, _ in chunks_}
    powers = {1 << k for k in range(SQLITE_MAX_ROWS_PER_STATEMENT.bit_length())}
    assert shapes <= {p for p in powers if p * width <= 32766}
    assert len(shapes) <= 8


class HeldInvoker(ScriptedInvoker):
    """The scripted endpoint, answering only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__(poison=set(), outages=0)
        self.release = asyncio.Event()

    async def __aenter__(self) -> HeldInvoker:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def invoke(
        self, target: Target, raw_reports: Sequence[bytes], *, manifest: bool = False
    ) -> Scored:
        await self.release.wait()
        return await super().invoke(target, raw_reports, manifest=manifest)


async def test_consumer_parses_no_more_than_its_in_flight_bytes_while_the_endpoint_waits(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    limit = 64 * 1024
    cfg = config_from_dict(consumer_config(
        broker_port=broker.port, endpoint_url="http://unused", db=db, topic_root="mem",
        batch={"max_size": 16, "max_delay_ms": 20},
        consumer={"max_in_flight_bytes": limit},
    ))
    reports = encoded_reports("devM", 4, range(640))
    messages = [dsp.encode_batch("devM", c) for c in chunks(reports, 8)]
    biggest = max(len(m) for m in messages)
    assert sum(len(m) for m in messages) > 10 * limit  # far more arrives than may be parsed
    invoker = HeldInvoker()
    consumer = Consumer(cfg, invoker=invoker)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(consumer.started.wait(), 10)
        assert consumer._mqtt is not None
        await asyncio.wait_for(consumer._mqtt.connected.wait(), 10)
        with Publisher("127.0.0.1", broker.port, "pub-mem") as pub:
            await asyncio.to_thread(pub.publish_all, "mem/devices/devM/reports", messages)
        # everything delivered to the consumer, the endpoint still held
        await asyncio.to_thread(
            wait_for, lambda: consumer.stats()["unacked_messages"]
            + consumer.stats()["handoff"]["depth"] >= len(messages), 20, "deliveries")
        await asyncio.to_thread(wait_for, lambda: consumer.in_flight.waits >= 1, 10, "a wait")
        st = consumer.stats()
        assert limit <= consumer.in_flight.held < limit + biggest
        assert st["in_flight_reports"] * 1000 < consumer.in_flight.held  # raw sizes counted
        assert st["handoff"]["depth"] > 0  # the rest waits unparsed
        assert all(t.delivery.payload == b"" for t in consumer._ledger._order)
        invoker.release.set()
        await asyncio.to_thread(wait_for, lambda: len(stored(db)) >= len(reports), 30,
                                "results")
        await asyncio.to_thread(
            wait_for, lambda: consumer.stats()["unacked_messages"] == 0, 10, "acks")
    finally:
        invoker.release.set()
        stop.set()
        await asyncio.wait_for(task, 30)
    assert_exactly_once(db, {("devM", 4, s) for s in range(640)})
    assert consumer.in_flight.held == 0 and consumer.in_flight.reports == 0
    assert consumer.in_flight.peak < limit + biggest
    assert consumer.stats()["in_flight_bytes"]["waits"] >= 1
