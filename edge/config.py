"""The edge agent's one TOML config: typed sections, every problem reported at once.

See ``docs/edge.md`` for the reference. The file is checked by
:mod:`dsp.config` section by section (:class:`EdgeFile` and its sections are
the schema; ``pumpwatch config schema edge`` prints it as JSON Schema), with
the semantic checks of each section (``hop`` > ``nfft``, ``segment_bytes`` >
``max_bytes / 4``, AWS IoT's limits, certificate files that do not exist) and
across sections (unique pump ids, the AWS IoT thing name). :func:`load_config`
raises :class:`ConfigError` whose ``problems`` lists every problem, each with
its TOML path (the CLI prints them all and exits 2); nothing is half-applied.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec

import dsp
from dsp.config import (
    ByteSize,
    InvalidConfigError,
    MqttSection,
    PositiveS,
    TlsSection,
    convert,
    parse_size,
    where,
)
from dsp.report import NAME_PATTERN, NAME_RE, NAME_RULE
from simulator.bearings import lookup_bearing

# DESIGN.md's name rule, defined once (dsp.report): a name is one topic level and a
# broker username; anchored with \Z (a '$' would let a trailing newline through)
# (the pattern alone, so that a long or empty name is told the rule too)
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
CLIENT_ID_PATTERN = r"^([A-Za-z0-9_.:\-]{1,64})?\Z"  # a name, or empty (the device)
Positive = Annotated[float, msgspec.Meta(gt=0)]

AWS_MAX_MESSAGE = 128 * 1024
# AWS IoT Core, per connection: publishes per second, unacknowledged QoS 1 messages;
# a topic has at most 7 '/'; thing names are [A-Za-z0-9:_-]{1,128}
AWS_MAX_PUBLISH_RATE = 100.0
AWS_MAX_INFLIGHT = 100
AWS_MAX_TOPIC_SLASHES = 7
THING_NAME_PATTERN = r"^[A-Za-z0-9:_-]{1,128}\Z"

__all__ = ["AWS_MAX_MESSAGE", "NAME_RE", "NAME_RULE", "ChannelConfig", "ConfigError",
           "EdgeConfig", "EdgeFile", "MqttConfig", "PipelineConfig", "PumpSpec",
           "SourceConfig", "SpoolConfig", "StatusConfig", "TlsConfig", "config_from_dict",
           "load_config", "parse_size"]


class ConfigError(InvalidConfigError):
    """An invalid edge config; ``problems`` names each one (TOML path and offending value)."""

    def __init__(self, problems: list[str], *, source: str = "config") -> None:
        # a name's rule in words rather than its regex
        words = {f"matching {NAME_PATTERN!r}": NAME_RULE,
                 f"matching {CLIENT_ID_PATTERN!r}": f"empty (the device) or {NAME_RULE}"}
        for pattern, rule in words.items():
            problems = [p.replace(pattern, rule) for p in problems]
        super().__init__(problems, source=source)

    def report(self) -> str:
        return f"invalid edge config {super().report()}"


# --- sections (the file's schema, and what the agent uses) ------------------------------------

TlsConfig = TlsSection  # one definition for the edge and the consumer (dsp.config)


class MqttConfig(MqttSection, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[mqtt]``: the shared connection keys (dsp.config.MqttSection) and the edge's own."""

    transport: Literal["paho", "awsiot"] = "paho"  # awsiot: AWS IoT Core (awsiotsdk, mTLS)
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883  # awsiot: 8883 unless given
    client_id: Annotated[str, msgspec.Meta(pattern=CLIENT_ID_PATTERN)] = ""  # "": the device
    topic_prefix: Annotated[str, msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*\Z")] = "pumpwatch"
    max_message_bytes: ByteSize = AWS_MAX_MESSAGE
    publish_rate: PositiveS = 100.0  # publishes per second (AWS IoT: 100)
    # unacknowledged QoS 1 report messages (awsiot default: 100)
    inflight: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 20
    reconnect_max_s: PositiveS = 60.0
    failure_backoff_s: PositiveS = 5.0  # first pause after a PUBACK failure (doubles, max 300)
    # End-to-end confirmation: keep reports after PUBACK until the cloud confirms them on
    # {topic_prefix}/acks/{device}; publish unconfirmed ones again after confirm_timeout_s.
    confirm: bool = True
    confirm_timeout_s: PositiveS = 120.0

    def problems(self) -> list[str]:
        out = super().problems()
        too_big = self.max_message_bytes > AWS_MAX_MESSAGE and self.transport != "awsiot"
        if self.max_message_bytes < 8 * 1024 or too_big:  # (awsiot: reported below)
            # the broker (AWS IoT Core; the generated Mosquitto config: max_packet_size)
            # disconnects a client that sends a bigger packet
            out.append(f"max_message_bytes must be in 8 KiB..128 KiB, got "
                       f"{self.max_message_bytes}")
        if self.transport == "awsiot":
            out += self._awsiot_problems()
        return out

    def _awsiot_problems(self) -> list[str]:
        """AWS IoT Core's limits (see docs/aws-iot.md)."""
        out = []
        if self.tls is None or not self.tls.cert or not self.tls.key:
            out.append("transport 'awsiot' needs [mqtt.tls] cert and key (the device "
                       "certificate)")
        if self.max_message_bytes > AWS_MAX_MESSAGE:
            out.append(f"max_message_bytes must be <= 128 KiB for awsiot, got "
                       f"{self.max_message_bytes}")
        if self.publish_rate > AWS_MAX_PUBLISH_RATE:
            out.append(f"publish_rate must be <= 100/s for awsiot, got {self.publish_rate}")
        if self.inflight > AWS_MAX_INFLIGHT:
            out.append(f"inflight must be <= 100 for awsiot, got {self.inflight}")
        slashes = self.topic_prefix.count("/") + 3  # {prefix}/devices/{device}/reports
        if slashes > AWS_MAX_TOPIC_SLASHES:
            out.append(f"topic_prefix {self.topic_prefix!r} makes topics with {slashes} '/' "
                       f"(AWS IoT allows {AWS_MAX_TOPIC_SLASHES})")
        return out


class SpoolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str = "/var/lib/pumpwatch/spool"  # relative: to the config file's folder
    max_bytes: ByteSize = 1024**3
    segment_bytes: ByteSize = 4 * 1024**2  # at most max_bytes / 4
    fsync: bool = True

    def problems(self) -> list[str]:
        out = []
        if self.max_bytes < 64 * 1024:
            out.append(f"max_bytes must be >= 64 KiB, got {self.max_bytes}")
        if self.segment_bytes < 16 * 1024:
            out.append(f"segment_bytes must be >= 16 KiB, got {self.segment_bytes}")
        elif self.segment_bytes > self.max_bytes // 4:
            # the spool drops whole segments: at least four must fit
            out.append(f"segment_bytes={self.segment_bytes} must be <= max_bytes / 4 "
                       f"({self.max_bytes // 4})")
        return out


class StatusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: PositiveS = 10.0
    # Prometheus /metrics (edge/metrics.py): off unless a port is given; 0 = any free port
    metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"  # loopback: expose it to a network on purpose only


class SourceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: Literal["simulated", "synthetic", "replay"] = "simulated"
    pace: Literal["realtime", "fast"] | Positive = "realtime"  # or a speed factor
    seed: int = 0
    block_size: Annotated[int, msgspec.Meta(ge=1)] = 2560
    duration_s: float | None = None  # stop after this much stream time
    tachometer: bool = False


class PipelineConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ring_s: PositiveS = 1.0  # seconds DSP may fall behind: the ring holds an interval + this
    # when DSP falls behind: "drop" the oldest samples (a live sensor cannot wait) or
    # "block" the source (replays, faster-than-real-time); "auto": drop only when paced
    # in real time
    overflow: Literal["auto", "block", "drop"] = "auto"
    chunk_channels: Annotated[int, msgspec.Meta(ge=1)] = 32  # channels per dsp.analyze call


class BearingSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A bearing by designation (built-in table) or by geometry (mm, degrees)."""

    __config_shorthand__: ClassVar[str] = "designation"  # "6205" = {designation = "6205"}

    designation: str | None = None
    n_balls: Annotated[int, msgspec.Meta(ge=3, le=200)] | None = None
    ball_d_mm: Positive | None = None
    pitch_d_mm: Positive | None = None
    contact_deg: Annotated[float, msgspec.Meta(ge=0, lt=90)] = 0.0
    location: str | None = None

    def problems(self) -> list[str]:
        if self.n_balls is not None:
            if self.ball_d_mm is None or self.pitch_d_mm is None:
                return ["n_balls needs ball_d_mm and pitch_d_mm"]
            if not self.ball_d_mm < self.pitch_d_mm:
                return [f"ball_d_mm={self.ball_d_mm} must be < pitch_d_mm={self.pitch_d_mm}"]
            return []
        if self.designation is None:
            return ["give a designation or n_balls, ball_d_mm, pitch_d_mm"]
        return _designation_problems(self.designation)

    def bearing(self) -> dsp.Bearing:
        if self.n_balls is not None:
            return dsp.Bearing(n_balls=self.n_balls, ball_d_mm=float(self.ball_d_mm or 0),
                               pitch_d_mm=float(self.pitch_d_mm or 0),
                               contact_deg=self.contact_deg, designation=self.designation,
                               location=self.location)
        g = lookup_bearing(str(self.designation))
        return dsp.Bearing(n_balls=g.n_balls, ball_d_mm=g.ball_d_mm, pitch_d_mm=g.pitch_d_mm,
                           contact_deg=g.contact_deg, designation=self.designation,
                           location=self.location)


def _designation_problems(designation: str) -> list[str]:
    try:
        lookup_bearing(designation)
    except KeyError as exc:  # UnknownBearingError names the known ones
        return [str(exc)]
    return []


class ChannelSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    __config_shorthand__: ClassVar[str] = "name"  # "de_h" = {name = "de_h"}

    name: Name
    source: str | None = None  # the source's channel name (default "<pump>.<name>")
    full_scale: Positive | None = None  # m/s^2 at which the sensor chain saturates


class PumpSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[[pumps]]``: one pump, its asset description and its channels."""

    id: Name
    kind: str | None = None
    vanes: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    rated_rpm: Positive | None = None
    rpm: Positive | None = None  # a given running speed; None: estimated from the spectrum
    iso_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    zone_limits: tuple[float, float, float] | None = None  # A/B, B/C, C/D in mm/s
    bearings: list[str | BearingSection] = []
    full_scale: Positive | None = None  # default of every channel's, m/s^2
    channels: Annotated[list[Name | ChannelSection], msgspec.Meta(min_length=1)]
    simulate: str | dict[str, Any] | None = None  # simulator pump (TOML path or table)

    def problems(self) -> list[str]:
        out = []
        names = [c if isinstance(c, str) else c.name for c in self.channels]
        if len(set(names)) != len(names):
            out.append(f"channels: names must be unique, got {names}")
        return out

    def spec(self) -> PumpSpec:
        bearings = [(BearingSection(designation=b) if isinstance(b, str) else b).bearing()
                    for b in self.bearings]
        asset = dsp.Asset(bearings=bearings, vanes=self.vanes, iso_group=self.iso_group,
                          foundation=self.foundation, rated_rpm=self.rated_rpm,
                          zone_limits=self.zone_limits, kind=self.kind)
        chans = []
        for c in self.channels:
            ch = ChannelSection(name=c) if isinstance(c, str) else c
            full = ch.full_scale if ch.full_scale is not None else self.full_scale
            chans.append(ChannelConfig(name=ch.name, source=ch.source or f"{self.id}.{ch.name}",
                                       full_scale=None if full is None else float(full)))
        return PumpSpec(id=self.id, asset=asset, rpm=self.rpm, channels=tuple(chans),
                        simulate=self.simulate)


class EdgeFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The edge config file as written (see docs/edge.md and edge/example.toml)."""

    device: Name  # the gateway: MQTT client id, AWS IoT thing name, a topic level
    site: Name
    report: dsp.ReportConfig = dsp.ReportConfig()
    pumps: Annotated[list[PumpSection], msgspec.Meta(min_length=1)]
    mqtt: MqttConfig = MqttConfig()
    spool: SpoolConfig = SpoolConfig()
    status: StatusConfig = StatusConfig()
    source: SourceConfig = SourceConfig()
    pipeline: PipelineConfig = PipelineConfig()


def cross_checks(ok: Mapping[str, Any]) -> list[str]:
    """Problems across sections, each checked when the sections it needs are valid."""
    out: list[str] = []
    pumps = ok.get("pumps")
    if isinstance(pumps, list):
        ids = [p.id for p in pumps]
        if len(set(ids)) != len(ids):
            out.append(f"{where((), 'pumps')}: ids must be unique, got {ids}")
        sources = [ch.source for p in pumps for ch in p.spec().channels]
        if len(set(sources)) != len(sources):
            out.append(f"{where((), 'pumps')}: two channels read the same source channel")
    mqtt, device = ok.get("mqtt"), ok.get("device")
    if isinstance(mqtt, MqttConfig) and isinstance(device, str) and mqtt.transport == "awsiot":
        if not re.match(THING_NAME_PATTERN, device):
            out.append(f"device must be an AWS IoT thing name ([A-Za-z0-9:_-]) for awsiot, "
                       f"got {device!r}")
        if mqtt.client_id and mqtt.client_id != device:
            out.append(f"[mqtt] client_id must be the device (thing) name for awsiot, got "
                       f"{mqtt.client_id!r}")
    return out


# --- what the agent uses ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChannelConfig:
    name: str
    source: str  # the source's channel name (default "<pump>.<name>")
    full_scale: float | None = None  # m/s^2 at which the sensor chain saturates


@dataclass(frozen=True, kw_only=True)
class PumpSpec:
    id: str
    asset: dsp.Asset
    rpm: float | None = None  # given running speed; None: estimated from the spectrum
    channels: tuple[ChannelConfig, ...] = ()
    simulate: Mapping[str, Any] | str | None = None  # simulator pump (table or TOML path)


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    device: str
    site: str
    report: dsp.ReportConfig
    pumps: tuple[PumpSpec, ...]
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    path: str | None = None

    @property
    def channels(self) -> list[tuple[PumpSpec, ChannelConfig]]:
        return [(p, c) for p in self.pumps for c in p.channels]

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or self.device

    def topic(self, leaf: Literal["reports", "status"]) -> str:
        return f"{self.mqtt.topic_prefix}/devices/{self.device}/{leaf}"

    @property
    def acks_topic(self) -> str:
        """Where the cloud confirms this device's committed reports (cloud-written)."""
        return f"{self.mqtt.topic_prefix}/acks/{self.device}"


def config_notes(cfg: EdgeConfig) -> list[str]:
    """Settings that are valid but may not be what the user meant, one line each (shown by
    ``pumpwatch config check`` and logged by the agent at start)."""
    return [f"pump {p.id} states no vanes: read as a machine without an impeller (a motor "
            "or test rig: no blade-pass line, and the model never names cavitation); state "
            "vanes for a pump" for p in cfg.pumps if not p.asset.impeller]


def _resolved(data: Mapping[str, Any], base_dir: Path | None) -> tuple[dict[str, Any],
                                                                       list[str]]:
    """``data`` with what the file's context decides filled in (relative certificate and
    spool paths against the config's folder, AWS IoT's port and inflight defaults), and
    the problems of that context: certificate files that do not exist (else the
    transport would fail deep inside its TLS library at start)."""
    problems: list[str] = []
    out = dict(data)
    mqtt = out.get("mqtt")
    if isinstance(mqtt, Mapping):
        mqtt = dict(mqtt)
        if mqtt.get("transport") == "awsiot":
            mqtt.setdefault("port", 8883)
            mqtt.setdefault("inflight", AWS_MAX_INFLIGHT)
        tls = mqtt.get("tls")
        if isinstance(tls, Mapping):
            tls = dict(tls)
            for k in ("ca", "cert", "key"):
                v = tls.get(k)
                if isinstance(v, str) and v:
                    if base_dir is not None and not Path(v).is_absolute():
                        tls[k] = v = str(base_dir / v)
                    if not Path(v).is_file():
                        problems.append(f"[mqtt.tls] {k}: no such file {v!r}")
            mqtt["tls"] = tls
        out["mqtt"] = mqtt
    spool = out.get("spool")
    if base_dir is not None:
        spool = dict(spool) if isinstance(spool, Mapping) else spool
        if spool is None:
            spool = {}
        if isinstance(spool, dict):
            path = spool.get("path", SpoolConfig().path)
            if isinstance(path, str) and not Path(path).is_absolute():
                spool["path"] = str(base_dir / path)
            out["spool"] = spool
    return out, problems


def config_from_dict(
    data: Mapping[str, Any], *, source: str = "config", base_dir: Path | None = None
) -> EdgeConfig:
    """Build and check an :class:`EdgeConfig`; raises :class:`ConfigError` with every problem."""
    resolved, missing = _resolved(data, base_dir)
    file, problems = convert(resolved, EdgeFile, checks=cross_checks)
    if file is None or missing:
        raise ConfigError(missing + problems, source=source)
    return EdgeConfig(
        device=file.device, site=file.site, report=file.report,
        pumps=tuple(p.spec() for p in file.pumps), mqtt=file.mqtt, spool=file.spool,
        status=file.status, source=file.source, pipeline=file.pipeline, path=source,
    )


def load_config(path: str | Path) -> EdgeConfig:
    """Read and check ``path``; :class:`ConfigError` lists every problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror or exc}"], source=str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None
    return config_from_dict(data, source=str(p), base_dir=p.resolve().parent)
