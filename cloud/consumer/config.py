"""Consumer configuration: one TOML file (``pumpwatch cloud --config cloud.toml``).

Every section and key is optional except what names the broker, endpoint and
store you actually use; unknown keys are errors (a typo must not silently fall
back to a default). Checked by :mod:`dsp.config` section by section, so every
mistake in a file is reported in one run, semantic ones included (an unknown
store scheme, a batch smaller than a message). See ``docs/consumer.md`` for the
reference.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from dsp.config import MqttSection, TlsSection, load

from .alarms import AlarmConfig
from .batcher import INVOKE_MAX_BYTES, Target
from .errors import ConfigError

Pos = Annotated[float, msgspec.Meta(gt=0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]


TlsConfig = TlsSection  # one definition for the edge and the consumer (dsp.config)
STORE_SCHEMES = ("sqlite", "postgres", "postgresql")  # cloud.store.make_store's


class MqttConfig(MqttSection, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # host, port, username, password, tls, keepalive_s, session_expiry_s and
    # reconnect_min_s/_max_s are the shared [mqtt] section's (dsp.config.MqttSection).
    # Stable per consumer instance: it names the persistent session at the broker.
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "pumpwatch-consumer"
    group: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^/+#]+$")] = "pumpwatch"
    topic_root: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^+#]+$")] = "pumpwatch"
    # Unacknowledged messages the broker may have in flight to us (MQTT 5 Receive Maximum).
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1000
    max_payload: PosInt = 128 * 1024  # AWS IoT Core's limit
    published_property: str = "published_ns"  # MQTT user property carrying publish time (ns)
    # Publish {root}/sites/{site}/pumps/{pump}/condition (retained) and .../alarms.
    publish_results: bool = True

    def problems(self) -> list[str]:
        out = super().problems()
        if self.tls is not None and not self.tls.ca:
            out.append("tls.ca is required (the CA that signed the broker's certificate)")
        return out

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

    def problems(self) -> list[str]:
        scheme = self.url.split("://", 1)[0] if "://" in self.url else "sqlite"
        if scheme not in STORE_SCHEMES:
            return [f"url has an unknown scheme {scheme!r} ({self.url!r}; known: "
                    f"{', '.join(STORE_SCHEMES)}, and a bare path is SQLite)"]
        return []


class ConsumerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Messages handed from the MQTT thread, not yet parsed. Must hold a full
    # receive window, else the MQTT thread blocks (backpressure, not loss).
    queue_size: PosInt = 2000
    # Payload bytes read and not yet acknowledged; beyond it the consumer stops reading
    # (the broker holds the rest). Bounds memory by bytes, not message counts.
    max_unacked_bytes: Annotated[int, msgspec.Meta(ge=128 * 1024)] = 32 * 1024 * 1024
    # Report bytes parsed and not yet committed (raw size; decoded they take about 3.5
    # times that); beyond it the consumer parses no more (what it read waits as bytes).
    max_in_flight_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024)] = 8 * 1024 * 1024
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


class MonitorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Monitoring histograms and usage counts (docs/monitoring.md), when on."""

    enabled: bool = True
    # Counts are held in memory and written with a commit this often (0: every commit):
    # the database sees one upsert per cell per flush; a crash loses at most this much.
    flush_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Histogram and usage cells of hour buckets older than this are pruned (each model
    # version's first day, its live reference, is kept); None: kept forever. At least 2
    # days (cloud.monitor.retention.MIN_RETENTION_DAYS: the live window and the reference).
    retention_days: Annotated[float, msgspec.Meta(ge=2)] | None = 400.0


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
    monitor: MonitorConfig = MonitorConfig()

    def __post_init__(self) -> None:
        if found := cross_checks({f: getattr(self, f) for f in self.__struct_fields__}):
            raise ConfigError(found)

    def route(self, site: str, pump: str) -> Target:
        """The target for a pump: the first matching route, else the endpoint defaults."""
        for r in self.routes:
            if r.matches(site, pump):
                return Target(
                    r.endpoint or self.endpoint.name,
                    r.target_model if r.target_model is not None else self.endpoint.target_model,
                )
        return Target(self.endpoint.name, self.endpoint.target_model)


def cross_checks(ok: Mapping[str, Any]) -> list[str]:
    """Problems across sections, each checked when the sections it needs are valid."""
    out: list[str] = []
    mqtt, batch, endpoint, consumer = (ok.get(k) for k in ("mqtt", "batch", "endpoint",
                                                           "consumer"))
    if isinstance(endpoint, EndpointConfig) and \
            endpoint.breaker_open_max_s < endpoint.breaker_open_s:
        out.append(f"[endpoint] breaker_open_max_s={endpoint.breaker_open_max_s} must "
                   f"be >= breaker_open_s={endpoint.breaker_open_s}")
    if isinstance(mqtt, MqttConfig) and isinstance(batch, BatchConfig) and \
            batch.max_bytes < mqtt.max_payload + 1024:
        out.append(f"[batch] max_bytes={batch.max_bytes} must exceed [mqtt] "
                   f"max_payload={mqtt.max_payload} (+1 KiB) so any accepted report "
                   "fits a batch")
    if isinstance(mqtt, MqttConfig) and isinstance(consumer, ConsumerSection) and \
            consumer.queue_size < mqtt.receive_maximum:
        out.append(f"[consumer] queue_size={consumer.queue_size} must hold a full "
                   f"receive window ([mqtt] receive_maximum={mqtt.receive_maximum})")
    return out


def config_from_dict(data: dict[str, Any], *, source: str = "consumer config") -> ConsumerConfig:
    """Check and build; :class:`ConfigError` lists every problem (with its TOML path)."""
    # TOML spells the list of routes [[route]]; accept both spellings.
    data = dict(data)
    if "route" in data:
        if "routes" in data:
            raise ConfigError("give routes as [[route]] or routes = [...], not both",
                              source=source)
        data["routes"] = data.pop("route")
    try:
        return load(data, ConsumerConfig, source=source, checks=cross_checks)
    except ConfigError as exc:  # raised by ConsumerConfig's own checks
        raise ConfigError(exc.problems, source=source) from None
    except ValueError as exc:  # dsp.config.InvalidConfigError
        raise ConfigError(getattr(exc, "problems", [str(exc)]), source=source) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's table; a file that cannot be read or parsed is a ConfigError naming it."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(p)) from None


def load_config(path: str | Path) -> ConsumerConfig:
    return config_from_dict(read_toml(path), source=str(path))
