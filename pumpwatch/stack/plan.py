"""What the local stack runs: options, the simulated fleet and its fault schedule, state layout.

Theory of operation
-------------------
Everything lives under one state directory (``--state``, default ``./state``)
so a second start reuses it::

    state/pki/            local CA, broker, device and client certificates (mTLS)
    state/broker/         mosquitto.conf, acl, persistence (data/)
    state/models/         the trained classifier (trained once, on first start)
    state/registry/       model registry: trained and baseline bundles, deployments
    state/edge/gw-NN/     one edge agent's config (edge.toml) and disk spool
    state/cloud.toml      the consumer's config
    state/dashboard.toml  the dashboard's broker connection (publishes alarm changes)
    state/pumpwatch.db    results store (SQLite), read by the dashboard
    state/logs/           one log file per process

The fleet is ``pumps`` simulated pumps with ``axes`` sensor axes each, served
by edge agents of ``pumps_per_agent`` pumps (one device certificate each).
Pump physics (speed, vanes, bearing, resonances) come from
:func:`simulator.fleet_configs`; the fault schedule is ours: every pump whose
index is 1 mod 4 stays healthy (p02, p06, ...), the others develop one fault
each, starting ``fault_delay_s`` after the ``healthy_s`` the baselines are
fitted on (stream time from each agent's start) and ``onset_spacing_s``
apart, growing linearly over ``ramp_s`` to ``severity``. Onsets are stream
times of each agent's source (its ``t = 0`` is the wall-clock time of its
first report, ``t0_ns`` of seq 0).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from simulator.pump import FaultConfig, PumpConfig, fleet_configs

#: Fault kinds the stack injects, in order; all are classes the trained classifier knows.
FAULT_ORDER: tuple[str, ...] = (
    "outer_race",
    "imbalance",
    "inner_race",
    "misalignment",
    "cavitation",
    "looseness",
    "ball",
)

SITE = "plant-a"
CONSUMER_ID = "consumer"
DASHBOARD_ID = "dashboard"
ENDPOINT_NAME = "pumpwatch"
MODEL_GROUP = "pumps"


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """How big the stack is, where it listens, where it keeps state, how its faults go."""

    state: Path = Path("state")
    pumps: int = 8
    axes: int = 3
    fs: float = 25600.0
    pumps_per_agent: int = 2
    dashboard_port: int = 8000
    dashboard_host: str = "127.0.0.1"  # beyond loopback the stack sets a token (see below)
    broker_port: int = 8883
    endpoint_port: int = 8080
    seed: int = 1
    healthy_s: float = 60.0  # baseline period, from each agent's start
    fault_delay_s: float = 10.0  # after the baseline period: time to fit and deploy baselines
    onset_spacing_s: float = 30.0
    ramp_s: float = 120.0
    severity: float = 0.9
    duration_s: float | None = None  # demo: the sources stop after this much stream time
    train_pumps_per_class: int | None = None  # smaller training for tests (None: default)
    edge_transport: Literal["paho", "awsiot"] = "paho"  # awsiot: awsiotsdk, as for AWS IoT Core
    log_format: Literal["text", "json"] = "text"  # passed to every component (--log-format)

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.pumps <= 99:
            problems.append(f"pumps must be in 1..99, got {self.pumps}")
        if not 1 <= self.axes <= 3:
            problems.append(f"axes must be in 1..3, got {self.axes}")
        if not 1 <= self.pumps_per_agent <= 99:
            problems.append(f"pumps_per_agent must be >= 1, got {self.pumps_per_agent}")
        ports = {"dashboard": self.dashboard_port, "broker": self.broker_port,
                 "endpoint": self.endpoint_port}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                problems.append(f"{name} port must be in 1..65535, got {port}")
        if len(set(ports.values())) != len(ports):
            problems.append(f"ports must differ, got {ports}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def state_dir(self) -> Path:
        return self.state.resolve()

    @property
    def agents(self) -> int:
        return -(-self.pumps // self.pumps_per_agent)

    def path(self, *parts: str) -> Path:
        return self.state_dir.joinpath(*parts)

    @property
    def store_path(self) -> Path:
        return self.path("pumpwatch.db")

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.store_path}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}/"

    @property
    def dashboard_token_path(self) -> Path:
        return self.path("dashboard.token")

    @property
    def dashboard_public(self) -> bool:
        """Whether the dashboard binds beyond loopback (then it requires a token)."""
        if self.dashboard_host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self.dashboard_host.strip("[]")).is_loopback
        except ValueError:
            return True

    def dashboard_args(self) -> list[str]:
        """``pumpwatch dashboard`` arguments (the token file: :func:`ensure_dashboard_token`)."""
        args = ["--store", self.store_url, "--host", self.dashboard_host,
                "--port", str(self.dashboard_port), "--model-server", self.endpoint_url,
                "--mqtt-config", str(self.path("dashboard.toml"))]
        if self.dashboard_public:
            args += ["--token-file", str(self.dashboard_token_path)]
        return args

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.endpoint_port}"


@dataclass(frozen=True, kw_only=True)
class PlannedPump:
    id: str
    device: str
    config: PumpConfig  # the simulator pump (name = id), faults included

    @property
    def fault(self) -> FaultConfig | None:
        return self.config.faults[0] if self.config.faults else None


def device_name(i: int) -> str:
    return f"gw-{i + 1:02d}"


def pump_name(i: int) -> str:
    return f"p{i + 1:02d}"


def plan_fleet(opts: StackOptions) -> list[PlannedPump]:
    """The pumps, their device and fault (see the module docstring for the schedule)."""
    physics = fleet_configs(opts.pumps, opts.axes, seed=opts.seed, healthy_fraction=0.0,
                            fs=opts.fs)
    out: list[PlannedPump] = []
    k = 0
    for i, base in enumerate(physics):
        faults: tuple[FaultConfig, ...] = ()
        if i % 4 != 1:
            faults = (FaultConfig(
                kind=FAULT_ORDER[k % len(FAULT_ORDER)],  # type: ignore[arg-type]
                severity=opts.severity,
                onset_s=opts.healthy_s + opts.fault_delay_s + k * opts.onset_spacing_s,
                ramp_s=opts.ramp_s,
                progression="linear",
            ),)
            k += 1
        cfg = replace(base, name=pump_name(i), faults=faults)
        out.append(PlannedPump(id=cfg.name, device=device_name(i // opts.pumps_per_agent),
                               config=cfg))
    return out


def devices(fleet: list[PlannedPump]) -> dict[str, list[PlannedPump]]:
    by: dict[str, list[PlannedPump]] = {}
    for p in fleet:
        by.setdefault(p.device, []).append(p)
    return by


# --- TOML writing (tomllib only reads) ------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """One TOML value (inline tables and arrays); ``None`` entries of tables are left out."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"TOML cannot hold {v!r}")
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{_key(str(k))} = {toml_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_table(name: str | None, d: dict[str, Any]) -> str:
    head = [] if name is None else [f"[{name}]"]
    return "\n".join(head + [f"{_key(k)} = {toml_value(v)}" for k, v in d.items()
                             if v is not None]) + "\n"


# --- component configs ----------------------------------------------------------------------

def edge_config(opts: StackOptions, device: str, pumps: list[PlannedPump]) -> str:
    """One agent's ``edge.toml``: mTLS to the local broker, simulated pumps, its own spool."""
    pki = opts.path("pki")
    text = toml_table(None, {"device": device, "site": SITE})
    text += toml_table("report", {"fs": opts.fs})
    text += toml_table("source", {
        "kind": "simulated", "pace": "realtime", "seed": opts.seed,
        "duration_s": opts.duration_s,
    })
    text += toml_table("mqtt", {
        "transport": opts.edge_transport, "host": "localhost", "port": opts.broker_port,
        "reconnect_max_s": 5.0,
    })
    text += toml_table("mqtt.tls", {
        "ca": pki / "ca.crt",
        "cert": pki / "devices" / f"{device}.crt",
        "key": pki / "devices" / f"{device}.key",
    })
    text += toml_table("spool", {"path": opts.path("edge", device, "spool"),
                                 "max_bytes": "256 MiB"})
    text += toml_table("status", {"interval_s": 2.0})
    for p in pumps:
        c = p.config
        sim = c.to_dict()
        for k in ("name", "fs"):
            sim.pop(k)
        text += "\n[[pumps]]\n" + toml_table(None, {
            "id": p.id,
            "kind": c.kind,
            "vanes": c.vanes,
            "rated_rpm": c.speed.rpm,
            "iso_group": c.iso_group,
            "foundation": c.foundation,
            "bearings": [
                {"n_balls": b.geometry.n_balls, "ball_d_mm": b.geometry.ball_d_mm,
                 "pitch_d_mm": b.geometry.pitch_d_mm, "contact_deg": b.geometry.contact_deg,
                 "designation": b.geometry.designation, "location": b.location}
                for b in c.bearings
            ],
            "channels": list(c.channels),
            "simulate": sim,
        })
    return text


def cloud_config(opts: StackOptions) -> str:
    """The consumer's ``cloud.toml``: mTLS, the local model server, the SQLite store."""
    pki = opts.path("pki")
    text = toml_table("mqtt", {
        "host": "localhost", "port": opts.broker_port, "client_id": "pumpwatch-stack-consumer",
        "reconnect_max_s": 5.0,
    })
    text += toml_table("mqtt.tls", {
        "ca": pki / "ca.crt",
        "cert": pki / "clients" / f"{CONSUMER_ID}.crt",
        "key": pki / "clients" / f"{CONSUMER_ID}.key",
    })
    text += toml_table("endpoint", {"name": ENDPOINT_NAME, "endpoint_url": opts.endpoint_url})
    text += toml_table("store", {"url": opts.store_url, "synchronous": "normal"})
    text += toml_table("consumer", {"stats_interval_s": 10.0})
    return text


def dashboard_config(opts: StackOptions) -> str:
    """The dashboard's ``dashboard.toml``: mTLS with the dashboard's certificate (role
    ``dashboard``: it publishes the operators' alarm changes on the alarm topics)."""
    pki = opts.path("pki")
    text = toml_table("mqtt", {
        "host": "localhost", "port": opts.broker_port,
        "client_id": "pumpwatch-stack-dashboard", "reconnect_max_s": 5.0,
    })
    text += toml_table("mqtt.tls", {
        "ca": pki / "ca.crt",
        "cert": pki / "clients" / f"{DASHBOARD_ID}.crt",
        "key": pki / "clients" / f"{DASHBOARD_ID}.key",
    })
    return text


def ensure_dashboard_token(opts: StackOptions) -> Path | None:
    """When the dashboard binds beyond loopback: its token file (0600, made once, kept)."""
    if not opts.dashboard_public:
        return None
    p = opts.dashboard_token_path
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return p
