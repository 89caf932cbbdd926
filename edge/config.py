"""The edge agent's one TOML config: parsed, checked, every problem reported at once.

See ``docs/edge.md`` for the reference. :func:`load_config` raises
:class:`ConfigError` whose ``problems`` lists every problem found (the CLI prints
them all and exits 2); nothing is half-applied.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

import dsp
from simulator.bearings import lookup_bearing

#: DESIGN.md's name rule (also cloud.roles, which the edge does not import): a name is one
#: topic level and a broker username; \Z, not $, which would let a trailing newline through
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
NAME_RULE = "1-64 characters from A-Z a-z 0-9 _ . : - (no '/', '+', '#', spaces)"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "M": 10**6,
    "MB": 10**6,
    "MIB": 1024**2,
    "G": 10**9,
    "GB": 10**9,
    "GIB": 1024**3,
    "T": 10**12,
    "TB": 10**12,
    "TIB": 1024**4,
}

AWS_MAX_MESSAGE = 128 * 1024
# AWS IoT Core, per connection: publishes per second, unacknowledged QoS 1 messages;
# a topic has at most 7 '/'; thing names are [A-Za-z0-9:_-]{1,128}
AWS_MAX_PUBLISH_RATE = 100.0
AWS_MAX_INFLIGHT = 100
AWS_MAX_TOPIC_SLASHES = 7
THING_NAME_RE = re.compile(r"^[A-Za-z0-9:_-]{1,128}\Z")


class ConfigError(ValueError):
    """An invalid config; ``problems`` names each one (key and offending value)."""

    def __init__(self, problems: list[str], *, source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"invalid {source}: " + "; ".join(problems))

    def report(self) -> str:
        lines = [f"invalid edge config {self.source} ({len(self.problems)} problem(s)):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


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
class TlsConfig:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class MqttConfig:
    transport: Literal["paho", "awsiot"] = "paho"  # awsiot: AWS IoT Core (awsiotsdk, mTLS)
    host: str = "localhost"
    port: int = 1883  # awsiot: 8883 unless given
    client_id: str = ""  # default: the device name
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    topic_prefix: str = "pumpwatch"
    max_message_bytes: int = AWS_MAX_MESSAGE
    publish_rate: float = 100.0  # publishes per second (AWS IoT: 100)
    inflight: int = 20  # unacknowledged QoS 1 report messages (awsiot default: 100)
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    failure_backoff_s: float = 5.0  # first pause after a PUBACK failure (doubles, max 300)
    # End-to-end confirmation: keep reports after PUBACK until the cloud confirms them on
    # {topic_prefix}/acks/{device}; publish unconfirmed ones again after confirm_timeout_s.
    confirm: bool = True
    confirm_timeout_s: float = 120.0


@dataclass(frozen=True, kw_only=True)
class SpoolConfig:
    path: str = "/var/lib/pumpwatch/spool"
    max_bytes: int = 1024**3
    segment_bytes: int = 4 * 1024**2
    fsync: bool = True


@dataclass(frozen=True, kw_only=True)
class StatusConfig:
    interval_s: float = 10.0
    # Prometheus /metrics (edge/metrics.py): off unless a port is given; 0 = any free port
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # loopback: expose it to a network on purpose only


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    kind: Literal["simulated", "synthetic", "replay"] = "simulated"
    pace: str | float = "realtime"  # "realtime", "fast" or a speed factor
    seed: int = 0
    block_size: int = 2560
    duration_s: float | None = None  # stop after this much stream time
    tachometer: bool = False


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    ring_s: float = 1.0  # seconds of samples the acquisition ring holds (live sources)
    # when DSP falls behind: "drop" the oldest samples (a live sensor cannot wait) or
    # "block" the source (replays, faster-than-real-time); "auto": drop only when paced
    # in real time
    overflow: Literal["auto", "block", "drop"] = "auto"
    chunk_channels: int = 16  # channels per dsp.analyze call (bounds memory)


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


def parse_size(value: object) -> int:
    """``1073741824``, ``"1 GiB"``, ``"512MB"`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).upper() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ValueError(f"not a size (bytes, or e.g. '512 MiB'): {value!r}")


T = TypeVar("T")


class _Checker:
    """Collects problems while building the config, so all are reported together."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, msg: str) -> None:
        self.problems.append(msg)

    def table(self, d: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
        v = d.get(key, {})
        if not isinstance(v, Mapping):
            self.fail(f"{where}{key} must be a table, got {v!r}")
            return {}
        return v

    def unknown(self, d: Mapping[str, Any], known: set[str], where: str) -> None:
        extra = sorted(set(d) - known)
        if extra:
            self.fail(f"{where or 'top level'}: unknown key(s) {extra}; known: {sorted(known)}")

    def build(
        self,
        cls: type[T],
        d: Mapping[str, Any],
        where: str,
        conv: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        self.unknown(d, names, where)
        kw: dict[str, Any] = {}
        defaults = cls()
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in d:
                continue
            v = d[f.name]
            default = getattr(defaults, f.name)
            try:
                if conv and f.name in conv:
                    v = conv[f.name](v)
                elif isinstance(default, bool):
                    if not isinstance(v, bool):
                        raise ValueError(f"must be true or false, got {v!r}")
                elif isinstance(default, int) and not isinstance(default, bool):
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise ValueError(f"must be an integer, got {v!r}")
                elif isinstance(default, float):
                    if isinstance(v, bool) or not isinstance(v, int | float):
                        raise ValueError(f"must be a number, got {v!r}")
                    v = float(v)
                elif isinstance(default, str) and not isinstance(v, str):
                    raise ValueError(f"must be a string, got {v!r}")
            except ValueError as exc:
                self.fail(f"{where}{f.name} {exc}")
                continue
            kw[f.name] = v
        return cls(**kw)


def _port_or_none(v: object) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 65535:
        raise ValueError(f"must be a port number 0-65535 (0: any free port), got {v!r}")
    return v


def _positive(c: _Checker, value: float, name: str) -> None:
    if not value > 0:
        c.fail(f"{name} must be > 0, got {name}={value}")


def _bearing(c: _Checker, b: object, where: str) -> dsp.Bearing | None:
    if isinstance(b, str):
        b = {"designation": b}
    if not isinstance(b, Mapping):
        c.fail(f"{where} must be a designation string or a table, got {b!r}")
        return None
    c.unknown(
        b, {"designation", "n_balls", "ball_d_mm", "pitch_d_mm", "contact_deg", "location"}, where
    )
    loc = b.get("location")
    try:
        if "n_balls" in b:
            n, d, pd = int(b["n_balls"]), float(b["ball_d_mm"]), float(b["pitch_d_mm"])
            phi = float(b.get("contact_deg", 0.0))
            if not (n >= 3 and 0 < d < pd and 0 <= phi < 90):
                raise ValueError(
                    f"needs n_balls >= 3, 0 < ball_d_mm < pitch_d_mm, 0 <= contact_deg < 90, "
                    f"got {n}, {d}, {pd}, {phi}"
                )
            return dsp.Bearing(
                n_balls=n,
                ball_d_mm=d,
                pitch_d_mm=pd,
                contact_deg=phi,
                designation=b.get("designation"),
                location=loc,
            )
        if "designation" not in b:
            raise ValueError("give a designation or n_balls, ball_d_mm, pitch_d_mm")
        g = lookup_bearing(str(b["designation"]))
        return dsp.Bearing(
            n_balls=g.n_balls,
            ball_d_mm=g.ball_d_mm,
            pitch_d_mm=g.pitch_d_mm,
            contact_deg=g.contact_deg,
            designation=str(b["designation"]),
            location=loc,
        )
    except KeyError as exc:  # UnknownBearingError or a missing geometry key
        c.fail(f"{where}: {exc if exc.args and len(str(exc)) > 12 else f'missing {exc}'}")
    except (TypeError, ValueError) as exc:
        c.fail(f"{where}: {exc}")
    return None


_PUMP_KEYS = {
    "id",
    "kind",
    "vanes",
    "rated_rpm",
    "rpm",
    "iso_group",
    "foundation",
    "zone_limits",
    "bearings",
    "full_scale",
    "channels",
    "simulate",
}


def _pump(c: _Checker, d: object, i: int) -> PumpSpec | None:
    where = f"pumps[{i}]"
    if not isinstance(d, Mapping):
        c.fail(f"{where} must be a table")
        return None
    c.unknown(d, _PUMP_KEYS, where)
    pid = d.get("id")
    if not (isinstance(pid, str) and NAME_RE.match(pid)):
        c.fail(f"{where}.id must be {NAME_RULE}, got {pid!r}")
        pid = f"pump{i}"
    where = f"pumps[{i}] ({pid})"
    bearings: list[dsp.Bearing] = []
    for j, raw_b in enumerate(d.get("bearings", [])):
        got = _bearing(c, raw_b, f"{where}.bearings[{j}]")
        if got is not None:
            bearings.append(got)
    asset_kw: dict[str, Any] = {"bearings": bearings}
    for key in ("vanes", "rated_rpm", "iso_group", "foundation", "kind", "zone_limits"):
        if key in d:
            asset_kw[key] = tuple(d[key]) if key == "zone_limits" else d[key]
    asset = dsp.Asset()
    try:
        # build, then round-trip through the codec so the schema's constraints apply
        asset = msgspec.msgpack.decode(
            msgspec.msgpack.encode(dsp.Asset(**asset_kw)), type=dsp.Asset
        )
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        # the wire form is positional: name the field instead of `$[i]`
        msg = re.sub(
            r"`\$\[(\d+)\]",
            lambda m: f"`{dsp.Asset.__struct_fields__[int(m.group(1))]}",
            str(exc),
        )
        c.fail(f"{where}: {msg}")
    rpm = d.get("rpm")
    if rpm is not None and not (isinstance(rpm, int | float) and rpm > 0):
        c.fail(f"{where}.rpm must be a speed > 0 in rpm, got {rpm!r}")
        rpm = None
    default_fs = d.get("full_scale")
    if default_fs is not None and not (isinstance(default_fs, int | float) and default_fs > 0):
        c.fail(f"{where}.full_scale must be > 0 m/s^2, got {default_fs!r}")
        default_fs = None
    chans: list[ChannelConfig] = []
    raw = d.get("channels", [])
    if not raw:
        c.fail(f"{where}.channels: a pump needs at least one channel")
    for j, ch in enumerate(raw):
        if isinstance(ch, str):
            ch = {"name": ch}
        if not isinstance(ch, Mapping):
            c.fail(f"{where}.channels[{j}] must be a name or a table")
            continue
        c.unknown(ch, {"name", "source", "full_scale"}, f"{where}.channels[{j}]")
        name = ch.get("name")
        if not (isinstance(name, str) and NAME_RE.match(name)):
            c.fail(f"{where}.channels[{j}].name must be {NAME_RULE}, got {name!r}")
            continue
        fsc = ch.get("full_scale", default_fs)
        if fsc is not None and not (isinstance(fsc, int | float) and fsc > 0):
            c.fail(f"{where}.channels[{j}].full_scale must be > 0 m/s^2, got {fsc!r}")
            fsc = None
        chans.append(
            ChannelConfig(
                name=name,
                source=str(ch.get("source", f"{pid}.{name}")),
                full_scale=None if fsc is None else float(fsc),
            )
        )
    names = [ch.name for ch in chans]
    if len(set(names)) != len(names):
        c.fail(f"{where}.channels: names must be unique, got {names}")
    sim = d.get("simulate")
    if sim is not None and not isinstance(sim, str | Mapping):
        c.fail(f"{where}.simulate must be a simulator pump TOML path or table")
        sim = None
    return PumpSpec(
        id=pid,
        asset=asset,
        rpm=None if rpm is None else float(rpm),
        channels=tuple(chans),
        simulate=sim,
    )


def _pace(v: object) -> str | float:
    if v in ("realtime", "fast"):
        return str(v)
    if isinstance(v, int | float) and not isinstance(v, bool) and v > 0:
        return float(v)
    raise ValueError(f"must be 'realtime', 'fast' or a speed factor > 0, got {v!r}")


def _literal(*options: str) -> Callable[[Any], Any]:
    def conv(v: Any) -> Any:
        if v not in options:
            raise ValueError(f"must be one of {list(options)}, got {v!r}")
        return v

    return conv


def _tls_files(c: _Checker, tls: TlsConfig, base_dir: Path | None) -> TlsConfig:
    """Resolve relative certificate paths against the config's folder; each must exist
    (else the transport would fail deep inside its TLS library at start)."""
    got: dict[str, str | None] = {}
    for name in ("ca", "cert", "key"):
        v = getattr(tls, name)
        if v:
            p = Path(v)
            if base_dir is not None and not p.is_absolute():
                p = base_dir / p
            if not p.is_file():
                c.fail(f"mqtt.tls.{name}: no such file {str(p)!r}")
            v = str(p)
        got[name] = v
    if bool(got["cert"]) != bool(got["key"]):
        c.fail("mqtt.tls: give both cert and key (mutual TLS) or neither")
    return TlsConfig(**got)


def _awsiot_checks(
    c: _Checker, mqtt: MqttConfig, given: Mapping[str, Any], device: str
) -> MqttConfig:
    """AWS IoT Core's defaults and limits (see docs/aws-iot.md)."""
    if "port" not in given:
        mqtt = dataclasses.replace(mqtt, port=8883)
    if "inflight" not in given:
        mqtt = dataclasses.replace(mqtt, inflight=AWS_MAX_INFLIGHT)
    if mqtt.tls is None or not mqtt.tls.cert or not mqtt.tls.key:
        c.fail("mqtt.transport 'awsiot' needs [mqtt.tls] cert and key (the device certificate)")
    if mqtt.max_message_bytes > AWS_MAX_MESSAGE:
        c.fail(
            f"mqtt.max_message_bytes must be <= 128 KiB for awsiot, got {mqtt.max_message_bytes}"
        )
    if mqtt.publish_rate > AWS_MAX_PUBLISH_RATE:
        c.fail(f"mqtt.publish_rate must be <= 100/s for awsiot, got {mqtt.publish_rate}")
    if mqtt.inflight > AWS_MAX_INFLIGHT:
        c.fail(f"mqtt.inflight must be <= 100 for awsiot, got {mqtt.inflight}")
    if not THING_NAME_RE.match(device):
        c.fail(f"device must be an AWS IoT thing name ([A-Za-z0-9:_-]) for awsiot, got {device!r}")
    if mqtt.client_id and mqtt.client_id != device:
        c.fail(f"mqtt.client_id must be the device (thing) name for awsiot, got {mqtt.client_id!r}")
    slashes = mqtt.topic_prefix.count("/") + 3  # {prefix}/devices/{device}/reports
    if slashes > AWS_MAX_TOPIC_SLASHES:
        c.fail(
            f"mqtt.topic_prefix {mqtt.topic_prefix!r} makes topics with {slashes} '/' "
            f"(AWS IoT allows {AWS_MAX_TOPIC_SLASHES})"
        )
    return mqtt


def config_from_dict(
    data: Mapping[str, Any], *, source: str = "config", base_dir: Path | None = None
) -> EdgeConfig:
    """Build and check an :class:`EdgeConfig`; raises :class:`ConfigError` with every problem."""
    c = _Checker()
    c.unknown(
        data,
        {"device", "site", "report", "pumps", "mqtt", "spool", "status", "source", "pipeline"},
        "",
    )
    device = data.get("device")
    if not (isinstance(device, str) and NAME_RE.match(device)):
        c.fail(f"device must be {NAME_RULE}, got device={device!r}")
        device = "invalid"
    site = data.get("site")
    if not (isinstance(site, str) and NAME_RE.match(site)):
        c.fail(f"site must be {NAME_RULE}, got site={site!r}")
        site = "invalid"

    rep = dict(c.table(data, "report", ""))
    for key in ("velocity_band", "env_band", "rpm_range"):
        if isinstance(rep.get(key), list):
            rep[key] = tuple(rep[key])
    if isinstance(rep.get("bands"), list):
        rep["bands"] = tuple(tuple(b) if isinstance(b, list) else b for b in rep["bands"])
    report = dsp.ReportConfig()
    known = {f.name for f in dataclasses.fields(dsp.ReportConfig)}
    c.unknown(rep, known, "report: ")
    rep = {k: v for k, v in rep.items() if k in known}
    try:
        # dsp.ReportConfig checks itself and lists every problem
        report = dsp.ReportConfig(**rep)
    except ValueError as exc:
        msg = str(exc).removeprefix("invalid report config: ")
        c.problems += [f"report: {p}" for p in msg.split("; ")]
    except TypeError as exc:
        c.fail(f"report: {exc}")

    pumps: list[PumpSpec] = []
    raw_pumps = data.get("pumps", [])
    if not isinstance(raw_pumps, list) or not raw_pumps:
        c.fail("pumps: give at least one [[pumps]] table")
        raw_pumps = []
    for i, p in enumerate(raw_pumps):
        spec = _pump(c, p, i)
        if spec is not None:
            pumps.append(spec)
    ids = [p.id for p in pumps]
    if len(set(ids)) != len(ids):
        c.fail(f"pumps: ids must be unique, got {ids}")
    sources = [ch.source for p in pumps for ch in p.channels]
    if len(set(sources)) != len(sources):
        c.fail("pumps: two channels read the same source channel")

    mqtt_d = dict(c.table(data, "mqtt", ""))
    tls = None
    if "tls" in mqtt_d:
        tls_d = mqtt_d.pop("tls")
        if isinstance(tls_d, Mapping):
            tls = c.build(TlsConfig, tls_d, "mqtt.tls.")
        else:
            c.fail("mqtt.tls must be a table")
    mqtt = c.build(
        MqttConfig,
        mqtt_d,
        "mqtt.",
        {"transport": _literal("paho", "awsiot"), "max_message_bytes": parse_size},
    )
    if tls is not None:
        tls = _tls_files(c, tls, base_dir)
    mqtt = dataclasses.replace(mqtt, tls=tls)
    if mqtt.transport == "awsiot":
        mqtt = _awsiot_checks(c, mqtt, mqtt_d, str(device))
    if not 1 <= mqtt.port <= 65535:
        c.fail(f"mqtt.port must be in 1..65535, got {mqtt.port}")
    if mqtt.client_id and not NAME_RE.match(mqtt.client_id):
        c.fail(f"mqtt.client_id must be {NAME_RULE}, got {mqtt.client_id!r}")
    too_big = mqtt.max_message_bytes > AWS_MAX_MESSAGE and mqtt.transport != "awsiot"
    if mqtt.max_message_bytes < 8 * 1024 or too_big:  # (awsiot: reported above)
        # the broker (AWS IoT Core; the generated Mosquitto config: max_packet_size)
        # disconnects a client that sends a bigger packet
        c.fail(f"mqtt.max_message_bytes must be in 8 KiB..128 KiB, got {mqtt.max_message_bytes}")
    for name in ("publish_rate", "reconnect_min_s", "reconnect_max_s", "failure_backoff_s",
                 "confirm_timeout_s"):
        _positive(c, getattr(mqtt, name), f"mqtt.{name}")
    if not 1 <= mqtt.inflight <= 65535:
        c.fail(f"mqtt.inflight must be in 1..65535, got {mqtt.inflight}")
    if not 5 <= mqtt.keepalive_s <= 65535:
        c.fail(f"mqtt.keepalive_s must be in 5..65535 s, got {mqtt.keepalive_s}")
    if not 0 <= mqtt.session_expiry_s <= 0xFFFFFFFF:
        c.fail(f"mqtt.session_expiry_s must be in 0..4294967295, got {mqtt.session_expiry_s}")
    if not re.match(r"^[A-Za-z0-9_.:-]+(/[A-Za-z0-9_.:-]+)*$", mqtt.topic_prefix):
        c.fail(
            f"mqtt.topic_prefix must be topic levels without wildcards, got {mqtt.topic_prefix!r}"
        )

    spool = c.build(
        SpoolConfig,
        c.table(data, "spool", ""),
        "spool.",
        {"max_bytes": parse_size, "segment_bytes": parse_size},
    )
    if spool.max_bytes < 64 * 1024:
        c.fail(f"spool.max_bytes must be >= 64 KiB, got {spool.max_bytes}")
    if spool.segment_bytes < 16 * 1024:
        c.fail(f"spool.segment_bytes must be >= 16 KiB, got {spool.segment_bytes}")
    if base_dir is not None and not Path(spool.path).is_absolute():
        spool = dataclasses.replace(spool, path=str(base_dir / spool.path))
    status = c.build(
        StatusConfig, c.table(data, "status", ""), "status.", {"metrics_port": _port_or_none}
    )
    _positive(c, status.interval_s, "status.interval_s")
    src = c.build(
        SourceConfig,
        c.table(data, "source", ""),
        "source.",
        {
            "kind": _literal("simulated", "synthetic", "replay"),
            "pace": _pace,
            "duration_s": lambda v: None if v is None else float(v),
        },
    )
    if src.block_size < 1:
        c.fail(f"source.block_size must be >= 1, got {src.block_size}")
    pipe = c.build(
        PipelineConfig,
        c.table(data, "pipeline", ""),
        "pipeline.",
        {"overflow": _literal("auto", "block", "drop")},
    )
    _positive(c, pipe.ring_s, "pipeline.ring_s")
    if pipe.chunk_channels < 1:
        c.fail(f"pipeline.chunk_channels must be >= 1, got {pipe.chunk_channels}")

    if c.problems:
        raise ConfigError(c.problems, source=source)
    return EdgeConfig(
        device=device,
        site=site,
        report=report,
        pumps=tuple(pumps),
        mqtt=mqtt,
        spool=spool,
        status=status,
        source=src,
        pipeline=pipe,
        path=source,
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
