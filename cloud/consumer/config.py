"""Consumer configuration: one TOML file (``pumpwatch cloud --config cloud.toml``).

Every section and key is optional except what names the broker, endpoint and
store you actually use; unknown keys are errors (a typo must not silently fall
back to a default). See ``docs/consumer.md`` for the reference.
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from .alarms import AlarmConfig
from .batcher import INVOKE_MAX_BYTES, Target
from .errors import ConfigError

Pos = Annotated[float, msgspec.Meta(gt=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


class TlsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca: str
    cert: str | None = None
    key: str | None = None


class MqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "localhost"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    # Stable per consumer instance: it names the persistent session at the broker.
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "pumpwatch-consumer"
    group: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^/+#]+$")] = "pumpwatch"
    topic_root: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^+#]+$")] = "pumpwatch"
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)] = 7 * 86400
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    # Unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum).
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000
    max_payload: PosInt = 128 * 1024  # AWS IoT Core's limit
    published_property: str = "published_ns"  # MQTT user property carrying publish time (ns)
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    reconnect_min_s: Pos = 1.0
    reconnect_max_s: Pos = 30.0
    # Publish {root}/sites/{site}/pumps/{pump}/condition (retained) and .../alarms.
    publish_results: bool = True

    @property
    def subscription(self) -> str:
        return f"$share/{self.group}/{self.topic_root}/devices/+/reports"


class EndpointConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1)] = "pumpwatch"
    target_model: str | None = None
    endpoint_url: str | None = None  # e.g. http://127.0.0.1:8080 for the local server
    region: str = "us-east-1"
    # "dummy": fixed fake keys (local server); "default": botocore's credential chain.
    credentials: Literal["auto", "default", "dummy"] = "auto"
    timeout_s: Pos = 30.0
    connect_timeout_s: Pos = 5.0
    max_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    content_type: Literal["application/x-msgpack", "application/json"] = (
        "application/x-msgpack"
    )
    # Our one retry layer (botocore's own retries are off, see endpoint.py): a batch is
    # retried with jittered exponential backoff from retry_initial_s up to retry_max_s.
    retry_initial_s: Pos = 0.2
    retry_max_s: Pos = 10.0
    # Circuit breaker (breaker.py): consecutive failures that open it; how long it stays
    # open before one probe (doubling per failed probe up to breaker_open_max_s).
    breaker_failures: PosInt = 5
    breaker_open_s: Pos = 1.0
    breaker_open_max_s: Pos = 30.0


class BatchConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_size: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 128
    max_delay_ms: Annotated[float, msgspec.Meta(ge=0, le=60000)] = 50.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=INVOKE_MAX_BYTES)] = 5 * 1024 * 1024


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Pumps matching ``site`` and ``pump`` (shell patterns) go to this target."""

    site: str = "*"
    pump: str = "*"
    endpoint: str | None = None  # default: [endpoint].name
    target_model: str | None = None

    def matches(self, site: str, pump: str) -> bool:
        return fnmatch.fnmatchcase(site, self.site) and fnmatch.fnmatchcase(pump, self.pump)


class StoreConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = "sqlite:///pumpwatch.db"
    synchronous: Literal["off", "normal", "full"] = "full"
    retention_days: Annotated[float, msgspec.Meta(gt=0)] | None = 90.0
    prune_interval_s: Pos = 3600.0
    commit_max_rows: Annotated[int, msgspec.Meta(ge=1)] = 4096


class ConsumerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Messages handed from the MQTT thread, not yet parsed. Must hold a full
    # receive window, else the MQTT thread blocks (backpressure, not loss).
    queue_size: PosInt = 2000
    # Payload bytes read and not yet acknowledged; beyond it the consumer stops reading
    # (the broker holds the rest). Bounds memory by bytes, not message counts.
    max_unacked_bytes: Annotated[int, msgspec.Meta(ge=128 * 1024)] = 64 * 1024 * 1024
    commit_queue_size: PosInt = 256  # jobs waiting for the writer (invocations wait beyond)
    stats_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    drain_timeout_s: Pos = 10.0  # on shutdown: finish in-flight work for this long


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prometheus ``/metrics`` listener (docs/metrics.md); off unless ``port`` is set."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None  # 0: any free port


class ConfirmConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """End-to-end confirmations to the edge (``{root}/acks/{device}``) and gap detection."""

    enabled: bool = True
    # A missing sequence range is reported as a gap once the report after it is this old.
    gap_grace_s: Pos = 600.0
    gap_check_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0  # 0: never


class DeadLetterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds on what bad input may cost (see docs/consumer.md, dead letters)."""

    max_per_message: PosInt = 8  # more bad reports in one message: one dead letter, counted
    max_payload_bytes: Annotated[int, msgspec.Meta(ge=0)] = 4096  # bytes kept per dead letter
    # Per device: dead letters (and their stored bytes) per second, with a burst; beyond
    # it they are dropped and counted (stats: dead_letters.dropped).
    per_device_rate: Pos = 5.0
    per_device_burst: Pos = 100.0
    per_device_bytes_per_s: Pos = 64 * 1024.0
    retention_max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = 1024**3  # prune oldest


class ConsumerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    confirm: ConfirmConfig = ConfirmConfig()
    dead_letters: DeadLetterConfig = DeadLetterConfig()
    mqtt: MqttConfig = MqttConfig()
    endpoint: EndpointConfig = EndpointConfig()
    batch: BatchConfig = BatchConfig()
    routes: list[Route] = []
    store: StoreConfig = StoreConfig()
    consumer: ConsumerSection = ConsumerSection()
    alarms: AlarmConfig = AlarmConfig()
    metrics: MetricsConfig = MetricsConfig()

    def __post_init__(self) -> None:
        if self.endpoint.breaker_open_max_s < self.endpoint.breaker_open_s:
            raise ConfigError(
                f"endpoint.breaker_open_max_s={self.endpoint.breaker_open_max_s} < "
                f"breaker_open_s={self.endpoint.breaker_open_s}"
            )
        if self.batch.max_bytes < self.mqtt.max_payload + 1024:
            raise ConfigError(
                f"batch.max_bytes={self.batch.max_bytes} must exceed mqtt.max_payload="
                f"{self.mqtt.max_payload} (+1 KiB) so any accepted report fits a batch"
            )
        if self.consumer.queue_size < self.mqtt.receive_maximum:
            raise ConfigError(
                f"consumer.queue_size={self.consumer.queue_size} must hold a full receive "
                f"window (mqtt.receive_maximum={self.mqtt.receive_maximum})"
            )
        if self.mqtt.reconnect_max_s < self.mqtt.reconnect_min_s:
            raise ConfigError(
                f"mqtt.reconnect_max_s={self.mqtt.reconnect_max_s} < "
                f"reconnect_min_s={self.mqtt.reconnect_min_s}"
            )

    def route(self, site: str, pump: str) -> Target:
        """The target for a pump: the first matching route, else the endpoint defaults."""
        for r in self.routes:
            if r.matches(site, pump):
                return Target(
                    r.endpoint or self.endpoint.name,
                    r.target_model if r.target_model is not None else self.endpoint.target_model,
                )
        return Target(self.endpoint.name, self.endpoint.target_model)


def config_from_dict(data: dict[str, Any]) -> ConsumerConfig:
    # TOML spells the list of routes [[route]]; accept both spellings.
    data = dict(data)
    if "route" in data:
        if "routes" in data:
            raise ConfigError("give routes as [[route]] or routes = [...], not both")
        data["routes"] = data.pop("route")
    try:
        return msgspec.convert(data, ConsumerConfig)
    except (msgspec.ValidationError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid consumer config: {exc}") from None


def load_config(path: str | Path) -> ConsumerConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p} is not valid TOML: {exc}") from None
    return config_from_dict(data)
