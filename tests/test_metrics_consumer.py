"""The consumer's /metrics, scraped for real while it runs against Mosquitto, the model
server (a real process) and SQLite: the counters say what happened."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dsp
from tests.infra.model_server import ModelServerProcess
from tests.infra.mosquitto import Mosquitto
from tests.infra.pipeline import (
    ROOT,
    Publisher,
    chunks,
    consumer_config,
    encoded_reports,
    write_toml,
)
from tests.infra.scrape import assert_documented, scrape
from tests.test_consumer_pipeline import await_rows, running_consumer, wait_for


@pytest.fixture(scope="module")
def model_server() -> Iterator[ModelServerProcess]:
    with ModelServerProcess() as srv:
        yield srv


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory().start()


async def test_consumer_metrics_count_what_happened(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    root = "met"
    n = 45
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url, db=db,
                          topic_root=root, metrics={"port": 0})
    good = encoded_reports("dev1", 7, range(n))
    topic = f"{root}/devices/dev1/reports"
    messages = chunks(good, 5)
    async with running_consumer(cfg) as consumer:
        assert consumer.metrics_port is not None
        url = f"http://127.0.0.1:{consumer.metrics_port}/metrics"
        with Publisher("127.0.0.1", broker.port, "pub-met") as pub:
            await asyncio.to_thread(
                pub.publish_all, topic, [dsp.encode_batch("dev1", m) for m in messages]
            )
            await await_rows(db, n, 30)
            await asyncio.to_thread(pub.publish_all, topic, [b"\xc1\xc1"])  # malformed
            # three stored reports again (a redelivery): skipped, not scored twice
            await asyncio.to_thread(pub.publish_all, topic, [dsp.encode_batch("dev1", good[:3])])
        total = len(messages) + 2
        await asyncio.to_thread(wait_for, lambda: consumer.counters.acks == total, 10, "acks")
        s = await asyncio.to_thread(scrape, url)

    assert s.families["pumpwatch_consumer_messages"] == "counter"
    assert s.value("pumpwatch_consumer_messages_total") == total
    assert s.value("pumpwatch_consumer_reports_total") == n + 3 + 1  # the bad message: one part
    assert s.value("pumpwatch_consumer_reports_accepted_total") == n
    assert s.value("pumpwatch_consumer_reports_skipped_total", reason="already_stored") == 3
    assert s.value("pumpwatch_consumer_results_stored_total") == n
    assert s.value("pumpwatch_consumer_dead_letters_total", kind="malformed") == 1
    assert s.value("pumpwatch_consumer_acks_total") == total
    assert s.value("pumpwatch_consumer_unacked_messages") == 0
    assert s.value("pumpwatch_consumer_in_flight_reports") == 0
    # the in-flight byte budget: nothing held once committed; it did hold the reports
    assert s.value("pumpwatch_consumer_in_flight_bytes") == 0
    assert s.value("pumpwatch_consumer_in_flight_bytes_peak") > 0
    assert s.value("pumpwatch_consumer_in_flight_bytes_limit") == (
        consumer.config.consumer.max_in_flight_bytes)
    assert s.value("pumpwatch_consumer_in_flight_full_waits_total") >= 0
    assert s.value("pumpwatch_consumer_breaker_state", state="closed") == 1
    assert s.value("pumpwatch_consumer_breaker_state", state="open") == 0
    assert s.value("pumpwatch_consumer_mqtt_connected") == 1
    assert s.value("pumpwatch_consumer_backlog_capacity_messages") == 2000
    calls = s.value("pumpwatch_consumer_endpoint_calls_total")
    assert calls >= 1
    assert s.value("pumpwatch_consumer_endpoint_request_seconds_count",
                   target="pumpwatch", outcome="ok") == calls
    assert s.value("pumpwatch_consumer_store_commit_seconds_count") == s.value(
        "pumpwatch_consumer_store_commits_total")
    # every stored result was stamped by the publisher: one latency observation each
    assert s.value("pumpwatch_consumer_result_latency_seconds_count") == n
    assert s.value("process_cpu_seconds_total") > 0
    assert_documented(s, "pumpwatch_consumer_")
    assert_documented(s, "process_")


def test_metrics_listener_is_off_by_default() -> None:
    from cloud.consumer import config_from_dict

    assert config_from_dict({}).metrics.port is None


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_consumer_process_logs_json_and_serves_metrics(
    broker: Mosquitto, model_server: ModelServerProcess, tmp_path: Path
) -> None:
    root = "jl"
    cfg = consumer_config(broker_port=broker.port, endpoint_url=model_server.url,
                          db=tmp_path / "r.db", topic_root=root, metrics={"port": 0})
    path = write_toml(tmp_path / "cloud.toml", cfg)
    log = tmp_path / "consumer.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pumpwatch", "--log-format", "json", "cloud", "--config",
             str(path)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        def logged(text: str) -> dict[str, Any] | None:
            return next((r for r in _records(log) if text in r["message"]), None)

        wait_for(lambda: logged("mqtt connected") is not None, 30, "the consumer to connect")
        listening = logged("metrics on http://")
        assert listening is not None
        url = listening["message"].split(" ", 2)[2]
        with Publisher("127.0.0.1", broker.port, "pub-jl") as pub:
            pub.publish_all(f"{root}/devices/dev9/reports", [b"\xc1"])
        wait_for(lambda: logged("dead letter") is not None, 30, "the dead letter")
        s = scrape(url)
        assert s.value("pumpwatch_consumer_dead_letters_total", kind="malformed") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = _records(log)  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    dead = next(r for r in records if "dead letter" in r["message"])
    assert (dead["kind"], dead["topic"], dead["level"]) == (
        "malformed", f"{root}/devices/dev9/reports", "INFO")
    assert "device" not in dead  # a message that does not decode names no device itself
    # stopping: the clean disconnect is INFO, and a clean run warns about nothing
    assert [r["level"] for r in records if "disconnected" in r["message"]] == ["INFO"]
    assert not [r for r in records if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
