"""pytest fixtures over the shared infrastructure (loaded from tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .mosquitto import Mosquitto, free_port, mosquitto_available
from .postgres import PostgresServer, postgres_available
from .require import need

MOSQUITTO_MISSING = (
    "mosquitto not installed: run `bash scripts/system-deps.sh` as root "
    "(or `sudo apt-get install mosquitto`)"
)


def _require_mosquitto() -> None:
    need("mosquitto", None if mosquitto_available() else MOSQUITTO_MISSING)


@pytest.fixture
def require_mosquitto() -> None:
    """Use as ``pytest.mark.usefixtures("require_mosquitto")``: skip, or fail under CI."""
    _require_mosquitto()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker on a free port, persisting every second; stopped after the test."""
    _require_mosquitto()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Build (not start) brokers with custom settings; all are stopped after the test."""
    _require_mosquitto()
    made: list[Mosquitto] = []

    def make(**kwargs: object) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    try:
        yield make
    finally:
        for b in made:
            b.stop()


@pytest.fixture
def unique_topic() -> str:
    """A topic prefix no other test uses: ``test/<random>``."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server per session; skips where impossible (fails under CI)."""
    need("PostgreSQL", postgres_available())
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server (all services) on a free port for the whole session; its URL."""
    from tests.infra.moto_server import moto_missing

    need("moto", moto_missing())
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
