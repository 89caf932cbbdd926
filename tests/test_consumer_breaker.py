"""The circuit breaker as a state machine (time passed in)."""

from __future__ import annotations

from cloud.consumer.breaker import CircuitBreaker


def state(b: CircuitBreaker) -> str:
    return b.state  # (a call, so that mypy does not narrow the attribute across steps)


def test_opens_after_consecutive_failures_probes_and_ramps_back() -> None:
    b = CircuitBreaker(max_concurrency=4, failure_threshold=3, open_s=1.0, open_max_s=4.0)
    assert [b.try_start(0.0) for _ in range(5)] == [True] * 4 + [False]  # the limit
    for t in (0.1, 0.2, 0.3):
        b.failure(t)
    assert state(b) == "open" and b.open_until == 1.3 and b.wait_hint(1.0) == 0.30000000000000004
    b.success(0.4)  # a call started before the outage; does not close the breaker
    assert state(b) == "open" and not b.try_start(1.0)
    assert b.try_start(1.3)
    assert state(b) == "half_open"
    assert not b.try_start(1.3)  # one probe at a time
    b.failure(1.4)
    assert state(b) == "open" and b.open_until == 1.4 + 2.0  # doubled
    assert b.try_start(3.4)
    b.success(3.5)
    assert state(b) == "closed" and b.limit == 1
    ramp = []
    for _ in range(4):
        ramp.append(b.limit)
        assert b.try_start(4.0)
        b.success(4.0)
    assert ramp == [1, 2, 3, 4] and b.limit == 4
    assert b.stats.opened == 1 and b.stats.closed_again == 1 and b.stats.probes == 2


def test_failures_halve_concurrency_and_open_interval_is_capped() -> None:
    b = CircuitBreaker(max_concurrency=8, failure_threshold=100, open_s=1.0, open_max_s=2.0)
    for _ in range(8):
        b.try_start(0.0)
    b.failure(0.0)
    assert b.limit == 4
    b.failure(0.0)
    assert b.limit == 2 and state(b) == "closed"
    b = CircuitBreaker(max_concurrency=1, failure_threshold=1, open_s=1.0, open_max_s=2.0)
    now = 0.0
    b.try_start(now)
    b.failure(now)
    for _ in range(5):
        now = b.open_until
        assert b.try_start(now)
        b.failure(now)
        assert b.open_until - now <= 2.0


async def test_botocore_makes_exactly_one_attempt() -> None:
    """Our retry layer is the only one (docs/consumer.md, "Endpoint faults")."""
    from cloud.consumer.config import EndpointConfig
    from cloud.consumer.endpoint import EndpointClient

    async with EndpointClient(EndpointConfig(endpoint_url="http://127.0.0.1:9")) as ec:
        retries = ec._client.meta.config.retries
    assert retries["total_max_attempts"] == 1 and retries["mode"] == "standard"
