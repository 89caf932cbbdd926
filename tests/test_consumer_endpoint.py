"""Endpoint adapter and the consumer's handling of endpoint faults.

The adapter's error mapping is checked against the real model server. The
consumer's retry and bisection logic runs with a real broker and SQLite and a
scripted invoker in place of the endpoint (the fault-injecting proxy is the
next issue's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import msgspec
import pytest

import dsp
from cloud.consumer import (
    Consumer,
    EndpointClient,
    EndpointConfig,
    EndpointConfigError,
    EndpointRejectedError,
    EndpointUnavailableError,
    Scored,
    Target,
    config_from_dict,
    request_body,
)
from dsp.results import InvocationRequest, InvocationResponse, Result
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import Publisher, chunks, consumer_config, encoded_reports
from tests.test_consumer_pipeline import assert_exactly_once, dead_letters, stored, wait_for


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


def test_request_body_is_the_invocation_request_without_re_encoding() -> None:
    raws = encoded_reports("d", 1, range(3))
    body = request_body(raws)
    req = msgspec.msgpack.decode(body, type=InvocationRequest)
    assert [r.identity for r in req.reports] == [("d", 1, i) for i in range(3)]
    for raw in raws:
        assert raw in body  # the bytes as received, inline


async def test_error_mapping_against_the_real_server(model_server: ModelServerProcess) -> None:
    ok = encoded_reports("d", 1, range(4))
    async with EndpointClient(EndpointConfig(endpoint_url=model_server.url)) as client:
        resp = (await client.invoke(Target("pumpwatch"), ok)).response
        assert [r.identity for r in resp.results] == [("d", 1, i) for i in range(4)]
        with pytest.raises(EndpointConfigError, match="not found"):
            await client.invoke(Target("no-such-endpoint"), ok)
        with pytest.raises(EndpointConfigError, match="nope"):
            await client.invoke(Target("pumpwatch", "nope.tar.gz"), ok)
    cfg = EndpointConfig(endpoint_url="http://127.0.0.1:9", timeout_s=2, connect_timeout_s=1)
    async with EndpointClient(cfg) as client:
        with pytest.raises(EndpointUnavailableError, match="connect"):
            await client.invoke(Target("pumpwatch"), ok)


class ScriptedInvoker:
    """Answers like the endpoint; fails the first ``outages`` calls; ModelError on ``poison``."""

    def __init__(self, *, poison: set[int], outages: int) -> None:
        self.poison = poison
        self.outages = outages
        self.calls: list[int] = []

    async def __aenter__(self) -> ScriptedInvoker:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def invoke(
        self, target: Target, raw_reports: Sequence[bytes], *, manifest: bool = False
    ) -> Scored:
        self.calls.append(len(raw_reports))
        if self.outages > 0:
            self.outages -= 1
            raise EndpointUnavailableError(f"{target}: ServiceUnavailable: scripted outage")
        reports = [dsp.decode_report(r) for r in raw_reports]
        bad = [r.seq for r in reports if r.seq in self.poison]
        if bad:
            raise EndpointRejectedError(f"{target}: ModelError: cannot score seq {bad}")
        return Scored(InvocationResponse(v=1, model_version="scripted", results=[
            Result(v=1, device=r.device, epoch=r.epoch, seq=r.seq, site=r.site, pump=r.pump,
                   channel=r.channel, t0_ns=r.t0_ns, condition="healthy",
                   probabilities={"healthy": 1.0}, anomaly_score=0.0, anomaly_threshold=1.0,
                   anomalous=False, baseline="fleet", iso_zone=r.features.iso_zone,
                   velocity_rms=r.features.velocity_rms, model_version="scripted")
            for r in reports
        ]))


async def test_outage_is_retried_and_a_poison_report_is_bisected_out(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    broker = mosquitto_factory(max_inflight_messages=1000).start()
    db = tmp_path / "r.db"
    cfg = config_from_dict(consumer_config(
        broker_port=broker.port, endpoint_url="http://unused", db=db, topic_root="faults",
        batch={"max_size": 32, "max_delay_ms": 20},
        endpoint={"retry_initial_s": 0.05, "retry_max_s": 0.2},
    ))
    invoker = ScriptedInvoker(poison={13, 77}, outages=3)
    consumer = Consumer(cfg, invoker=invoker)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(consumer.started.wait(), 10)
        assert consumer._mqtt is not None
        await asyncio.wait_for(consumer._mqtt.connected.wait(), 10)
        await asyncio.sleep(0.2)
        reports = encoded_reports("devF", 2, range(128))
        with Publisher("127.0.0.1", broker.port, "pub-f") as pub:
            await asyncio.to_thread(pub.publish_all, "faults/devices/devF/reports",
                                    [dsp.encode_batch("devF", c) for c in chunks(reports, 8)])
        await asyncio.to_thread(wait_for, lambda: len(stored(db)) >= 126, 20, "results")
        await asyncio.to_thread(
            wait_for, lambda: consumer.stats()["unacked_messages"] == 0, 10, "acks")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert_exactly_once(db, {("devF", 2, s) for s in range(128) if s not in (13, 77)})
    model = [(k, part) for k, part, _ in dead_letters(db) if k == "model"]
    assert len(model) == 2
    assert consumer.counters.endpoint_retries == 3
    assert consumer.counters.bisections >= 2 * 5  # 32 -> 16 -> 8 -> 4 -> 2 -> 1, twice
    assert consumer.counters.acks == 16
