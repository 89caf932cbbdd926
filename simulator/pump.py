"""Pump configuration: speed profile, vanes, bearings, sensors, resonances, faults.

A pump is described by a small TOML file (every key optional; a default pump
needs no file at all)::

    name = "p1"
    fs = 25600              # Hz
    vanes = 6               # 0: no impeller (a motor or test rig: no blade pass)
    noise_floor = 0.02      # m/s^2 RMS, sensor and broadband floor
    shaft_level = 1.0       # healthy shaft-line levels relative to a typical pump
    structure_rms = 1.5     # m/s^2 RMS of the broadband structural (resonance) response
    rpm = 2950              # shorthand for [speed] mode = "constant"

    [speed]                 # or a full speed profile
    mode = "drift"          # "constant" | "ramp" | "drift"
    rpm = 2950
    drift_pct = 1.0         # drift: amplitude in % of rpm ...
    drift_period_s = 120.0  # ... and its period (a variable-speed drive hunting)
    # ramp: rpm -> rpm_end from ramp_start_s over ramp_s seconds

    [[bearings]]            # first bearing: the one the report's asset names
    designation = "6308"    # or n_balls, ball_d_mm, pitch_d_mm, contact_deg
    location = "DE"
    slip_pct = 0.0          # rolling-element slip: defect lines this % off catalog

    [[sensors]]             # one channel each, named "<sensor name>"
    name = "de_h"
    axis = "horizontal"     # "horizontal" | "vertical" | "axial"
    location = "DE"
    sensitivity_mv_per_g = 100.0
    full_scale_v = 5.0      # +-5 V at 100 mV/g = +-50 g before clipping
    adc_bits = 16           # 0: ideal sensor chain (no quantization, no clipping)
    mount = "ideal"         # "ideal" | "stud" | "adhesive" | "magnet" | "probe"
    # mount_hz = 8000.0     # mounted resonance (default: the mount's nominal) ...
    # mount_q = 10.0        # ... and its quality factor

    [[resonances]]          # omitted: drawn per pump from the seed
    freq_hz = 3100.0
    damping = 0.04          # damping ratio zeta
    gain = 1.0

    [[faults]]
    kind = "outer_race"     # see FAULT_KINDS
    severity = 0.6          # 0..1, reached at onset_s + ramp_s
    onset_s = 0.0
    ramp_s = 0.0            # 0: a step at onset
    progression = "linear"  # "linear" | "exponential" growth over the ramp
    bearing = 0             # bearing faults: which bearing
    position_deg = 0.0      # outer race: defect angle from the load-zone centre (omitted:
                            # a constant impact size, no load-zone model)
    cage_depth = 0.6        # ball: impact modulation depth at cage rate (FTF)
    race_ratio = 0.6        # ball: inner-race strike size relative to the outer-race one
    spin_wander = 0.0       # ball: how much a strike depends on the wandering spin axis
                            # (0: every strike lands; 1: half of them miss)

Units: rpm, Hz, seconds, mm, m/s^2. Severity 1 is a machine due for repair
(ISO zone D for the synchronous faults; impacts that clip a +-50 g sensor).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import msgspec
import numpy as np
from numpy.typing import NDArray

from dsp.config import InvalidConfigError, convert

from .bearings import BearingGeometry, lookup_bearing

F64 = NDArray[np.float64]

FaultKind = Literal[
    "imbalance",
    "misalignment",
    "looseness",
    "outer_race",
    "inner_race",
    "ball",
    "cage",
    "cavitation",
    "flow",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
BEARING_FAULTS: frozenset[str] = frozenset({"outer_race", "inner_race", "ball", "cage"})
SpeedMode = Literal["constant", "ramp", "drift"]
Axis = Literal["horizontal", "vertical", "axial"]
Mount = Literal["ideal", "stud", "adhesive", "magnet", "probe"]
Progression = Literal["linear", "exponential"]

G = 9.80665  # m/s^2 per g

#: Nominal mounted resonance (Hz) and its quality factor per accelerometer mounting: above
#: it the sensor rolls off at 40 dB/decade, at it the response peaks by about Q (a stud on a
#: flat spot rings near 28 kHz; a flat magnet near 8 kHz; a hand-held probe near 1.5 kHz).
MOUNTS: dict[str, tuple[float, float]] = {
    "stud": (28000.0, 25.0),
    "adhesive": (20000.0, 15.0),
    "magnet": (8000.0, 10.0),
    "probe": (1500.0, 5.0),
}


class PumpConfigError(InvalidConfigError):
    """A pump configuration that cannot be used; ``problems`` names each key at fault and the
    message names the file too.

    Also raised with one message (``PumpConfigError("fs must be ...")``) by the
    configuration classes' own checks.
    """

    def __init__(self, problems: str | list[str], *, source: str = "pump config") -> None:
        super().__init__([problems] if isinstance(problems, str) else problems, source=source)


@dataclass(frozen=True, kw_only=True)
class SpeedProfile:
    """Shaft speed over stream time ``t`` (s since the source started)."""

    mode: SpeedMode = "constant"
    rpm: float = 2950.0
    rpm_end: float | None = None  # ramp target
    ramp_start_s: float = 0.0
    ramp_s: float = 10.0
    drift_pct: float = 1.0
    drift_period_s: float = 120.0

    def __post_init__(self) -> None:
        if self.mode not in get_args(SpeedMode):
            raise PumpConfigError(
                f"speed.mode must be one of {get_args(SpeedMode)}, got {self.mode!r}"
            )
        if not (math.isfinite(self.rpm) and 0 < self.rpm <= 60000):
            raise PumpConfigError(f"speed.rpm must be in (0, 60000], got rpm={self.rpm}")
        if self.mode == "ramp":
            end = self.rpm_end
            if end is None or not (math.isfinite(end) and 0 < end <= 60000):
                raise PumpConfigError(f"a ramp needs speed.rpm_end in (0, 60000], got {end}")
            if not self.ramp_s > 0:
                raise PumpConfigError(f"speed.ramp_s must be > 0, got ramp_s={self.ramp_s}")
        if self.mode == "drift":
            if not 0 <= self.drift_pct < 50:
                raise PumpConfigError(f"speed.drift_pct must be in [0, 50), got {self.drift_pct}")
            if not self.drift_period_s > 0:
                raise PumpConfigError(
                    f"speed.drift_period_s must be > 0, got {self.drift_period_s}"
                )

    def revolutions(self, t: F64) -> F64:
        """Shaft revolutions since t=0 (the integral of speed), float64."""
        f0 = self.rpm / 60.0
        if self.mode == "constant":
            return f0 * t
        if self.mode == "ramp":
            f1 = float(self.rpm_end or self.rpm) / 60.0
            t0, T = self.ramp_start_s, self.ramp_s
            u = np.clip(t - t0, 0.0, T)
            after = np.maximum(t - t0 - T, 0.0)
            before = np.minimum(t, t0)
            return f0 * before + f0 * u + (f1 - f0) * u * u / (2 * T) + f1 * after
        a = self.drift_pct / 100.0
        w = 2 * math.pi / self.drift_period_s
        # The drift term is small (a few revolutions): float32 cosine of the reduced phase is
        # plenty, and much faster than float64.
        ph = np.mod(w * t, 2 * math.pi).astype(np.float32)
        return f0 * t + f0 * a / w * (1.0 - np.cos(ph).astype(np.float64))

    def revolutions_at(self, t: float) -> float:
        """:meth:`revolutions` for one time, in plain floats (cheap per-block truth)."""
        f0 = self.rpm / 60.0
        if self.mode == "constant":
            return f0 * t
        if self.mode == "ramp":
            f1 = float(self.rpm_end or self.rpm) / 60.0
            t0, T = self.ramp_start_s, self.ramp_s
            u = min(max(t - t0, 0.0), T)
            return (
                f0 * min(t, t0) + f0 * u + (f1 - f0) * u * u / (2 * T) + f1 * max(t - t0 - T, 0.0)
            )
        a = self.drift_pct / 100.0
        w = 2 * math.pi / self.drift_period_s
        return f0 * t + f0 * a / w * (1.0 - math.cos(w * t))

    def revolutions_block(self, i0: int, n: int, fs: float) -> F64:
        """Revolutions at samples ``i0 .. i0+n-1`` of a stream at ``fs`` (fast path).

        Same values as :meth:`revolutions` to float rounding; the drift cosine is
        taken in float32 from the block's reduced start phase (the drift term is
        a few revolutions at most, so that is precise to ~1e-5 revolutions).
        """
        k = np.arange(n, dtype=np.float64)
        if self.mode != "drift":
            return self.revolutions((i0 + k) / fs)
        f0 = self.rpm / 60.0
        base = (f0 / fs) * (k + i0)
        a = self.drift_pct / 100.0
        w = 2 * math.pi / self.drift_period_s
        ph0 = math.fmod(w * i0 / fs, 2 * math.pi)
        ph = np.float32(ph0) + np.float32(w / fs) * k.astype(np.float32)
        return base + (f0 * a / w) * (1.0 - np.cos(ph).astype(np.float64))

    def rpm_at(self, t: F64) -> F64:
        f0 = self.rpm
        if self.mode == "constant":
            return np.full_like(t, f0)
        if self.mode == "ramp":
            f1 = float(self.rpm_end or self.rpm)
            u = np.clip((t - self.ramp_start_s) / self.ramp_s, 0.0, 1.0)
            return f0 + (f1 - f0) * u
        a = self.drift_pct / 100.0
        return f0 * (1 + a * np.sin(2 * math.pi * t / self.drift_period_s))


@dataclass(frozen=True, kw_only=True)
class SensorConfig:
    """One accelerometer axis = one channel."""

    name: str = "de_h"
    axis: Axis = "horizontal"
    location: str = "DE"
    sensitivity_mv_per_g: float = 100.0
    full_scale_v: float = 5.0
    adc_bits: int = 16  # 0: ideal chain (no quantization, no clipping)
    mount: Mount = "ideal"  # "ideal": flat response at every frequency
    mount_hz: float | None = None  # None: the mount's nominal resonance (MOUNTS)
    mount_q: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise PumpConfigError("sensor name must not be empty")
        if self.mount not in get_args(Mount):
            raise PumpConfigError(
                f"sensor {self.name!r}: mount must be one of {get_args(Mount)}, got {self.mount!r}"
            )
        for key in ("mount_hz", "mount_q"):
            v = getattr(self, key)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise PumpConfigError(f"sensor {self.name!r}: {key} must be > 0, got {v}")
        if self.axis not in get_args(Axis):
            raise PumpConfigError(
                f"sensor {self.name!r}: axis must be one of {get_args(Axis)}, got {self.axis!r}"
            )
        if not self.sensitivity_mv_per_g > 0 or not self.full_scale_v > 0:
            raise PumpConfigError(
                f"sensor {self.name!r}: sensitivity_mv_per_g and full_scale_v must be > 0, got "
                f"{self.sensitivity_mv_per_g}, {self.full_scale_v}"
            )
        if not (self.adc_bits == 0 or 8 <= self.adc_bits <= 32):
            raise PumpConfigError(
                f"sensor {self.name!r}: adc_bits must be 0 or 8..32, got {self.adc_bits}"
            )

    def mount_resonance(self) -> tuple[float, float] | None:
        """(Hz, Q) of the mounted resonance; None for an ideal (flat) sensor."""
        if self.mount == "ideal":
            return None
        hz, q = MOUNTS[self.mount]
        return (self.mount_hz or hz, self.mount_q or q)

    @property
    def full_scale_ms2(self) -> float | None:
        """Acceleration (m/s^2) at which the chain saturates; None for an ideal chain."""
        if self.adc_bits == 0:
            return None
        return self.full_scale_v * 1000.0 / self.sensitivity_mv_per_g * G


@dataclass(frozen=True)
class Resonance:
    """A structural mode: natural frequency (Hz), damping ratio, relative gain."""

    freq_hz: float
    damping: float = 0.04
    gain: float = 1.0

    def __post_init__(self) -> None:
        if not (self.freq_hz > 0 and 0 < self.damping < 0.5):
            raise PumpConfigError(
                "resonance needs freq_hz > 0 and damping in (0, 0.5), got "
                f"{self.freq_hz}, {self.damping}"
            )


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """A fault with its final severity (0..1) and when and how fast it grows."""

    kind: FaultKind
    severity: float
    onset_s: float = 0.0
    ramp_s: float = 0.0
    progression: Progression = "linear"
    bearing: int = 0
    position_deg: float | None = None  # outer race: angle from the load-zone centre
    cage_depth: float = 0.6  # ball: impact modulation depth at cage rate
    race_ratio: float = 0.6  # ball: inner-race strike size / outer-race strike size
    # ball: the defect faces the race contact paths only on some spins (the ball's spin
    # axis wanders): each strike loses this share of its size on a random half of them
    spin_wander: float = 0.0

    def __post_init__(self) -> None:
        if not (0 <= self.cage_depth <= 1 and 0 <= self.race_ratio <= 1
                and 0 <= self.spin_wander <= 1):
            raise PumpConfigError(
                f"fault {self.kind}: cage_depth, race_ratio and spin_wander must be in 0..1, "
                f"got {self.cage_depth}, {self.race_ratio}, {self.spin_wander}"
            )
        if self.position_deg is not None and not math.isfinite(self.position_deg):
            raise PumpConfigError(f"fault {self.kind}: position_deg must be finite")
        if self.kind not in FAULT_KINDS:
            raise PumpConfigError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if not 0 <= self.severity <= 1:
            raise PumpConfigError(
                f"fault {self.kind}: severity must be in 0..1, got {self.severity}"
            )
        if self.onset_s < 0 or self.ramp_s < 0:
            raise PumpConfigError(f"fault {self.kind}: onset_s and ramp_s must be >= 0")
        if self.progression not in get_args(Progression):
            raise PumpConfigError(
                f"fault {self.kind}: progression must be one of {get_args(Progression)}, "
                f"got {self.progression!r}"
            )

    def severity_scalar(self, t: float) -> float:
        """:meth:`severity_at` for one time, in plain floats."""
        if t < self.onset_s:
            return 0.0
        if self.ramp_s == 0:
            return self.severity
        u = min(max((t - self.onset_s) / self.ramp_s, 0.0), 1.0)
        if self.progression == "exponential":
            u = math.expm1(5.0 * u) / math.expm1(5.0)
        return self.severity * u

    def severity_at(self, t: F64) -> F64:
        """Severity at stream times ``t`` (s): 0 before onset, then growing to ``severity``."""
        t = np.asarray(t, dtype=np.float64)
        if self.ramp_s == 0:
            return np.where(t >= self.onset_s, self.severity, 0.0)
        u = np.clip((t - self.onset_s) / self.ramp_s, 0.0, 1.0)
        if self.progression == "exponential":
            # e-folding of 1/5 of the ramp: slow start, fast end, as bearing damage grows.
            u = np.expm1(5.0 * u) / math.expm1(5.0)
        return np.where(t >= self.onset_s, self.severity * u, 0.0)


@dataclass(frozen=True)
class PumpBearing:
    geometry: BearingGeometry
    location: str = "DE"
    slip_pct: float = 0.0  # rolling-element slip: real lines sit this % off the catalog orders

    def __post_init__(self) -> None:
        if not 0 <= self.slip_pct < 10:
            raise PumpConfigError(f"bearing slip_pct must be in [0, 10), got {self.slip_pct}")

    def defect_orders(self) -> dict[str, float]:
        """The running bearing's defect orders (catalog kinematics with its slip)."""
        return self.geometry.defect_orders(self.slip_pct / 100.0)


def _default_sensors() -> tuple[SensorConfig, ...]:
    return (
        SensorConfig(name="de_h", axis="horizontal", location="DE"),
        SensorConfig(name="de_a", axis="axial", location="DE"),
    )


def _default_bearings() -> tuple[PumpBearing, ...]:
    return (PumpBearing(lookup_bearing("6308"), "DE"), PumpBearing(lookup_bearing("6306"), "NDE"))


@dataclass(frozen=True, kw_only=True)
class PumpConfig:
    """One pump: what it is, how it runs, how it is instrumented, what is wrong with it."""

    name: str = "pump1"
    fs: float = 25600.0
    speed: SpeedProfile = field(default_factory=SpeedProfile)
    vanes: int = 6
    bearings: tuple[PumpBearing, ...] = field(default_factory=_default_bearings)
    sensors: tuple[SensorConfig, ...] = field(default_factory=_default_sensors)
    resonances: tuple[Resonance, ...] | None = None  # None: drawn per pump from the seed
    noise_floor: float = 0.02
    shaft_level: float = 1.0  # healthy shaft lines (1x, 2x, 3x, blade pass) relative to nominal
    structure_rms: float = 1.5  # m/s^2 RMS, broadband structural response per channel
    iso_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    kind: str = "centrifugal pump"
    faults: tuple[FaultConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            raise PumpConfigError("pump name must not be empty")
        if not (math.isfinite(self.fs) and 1000 <= self.fs <= 1_000_000):
            raise PumpConfigError(f"fs must be in 1 kHz..1 MHz, got fs={self.fs}")
        if not 0 <= self.vanes <= 64:
            raise PumpConfigError(f"vanes must be in 0..64, got vanes={self.vanes}")
        if self.vanes == 0 and any(f.kind in ("flow", "cavitation") for f in self.faults):
            raise PumpConfigError(
                f"pump {self.name!r} has no impeller (vanes = 0): no flow or cavitation faults"
            )
        if not (self.shaft_level >= 0 and self.structure_rms >= 0):
            raise PumpConfigError(
                f"shaft_level and structure_rms must be >= 0, got {self.shaft_level}, "
                f"{self.structure_rms}"
            )
        if not self.sensors:
            raise PumpConfigError(f"pump {self.name!r} needs at least one sensor")
        names = [s.name for s in self.sensors]
        if len(set(names)) != len(names):
            raise PumpConfigError(f"pump {self.name!r}: sensor names must be unique, got {names}")
        if not self.noise_floor >= 0:
            raise PumpConfigError(f"noise_floor must be >= 0 m/s^2, got {self.noise_floor}")
        for f in self.faults:
            if f.kind in BEARING_FAULTS and not 0 <= f.bearing < len(self.bearings):
                raise PumpConfigError(
                    f"fault {f.kind} names bearing {f.bearing}, pump {self.name!r} has "
                    f"{len(self.bearings)}"
                )
        if self.resonances is not None:
            for r in self.resonances:
                if r.freq_hz >= self.fs / 2:
                    raise PumpConfigError(
                        f"resonance {r.freq_hz} Hz is above Nyquist for fs={self.fs}"
                    )

    @classmethod
    def default(cls, **changes: Any) -> PumpConfig:
        """The built-in pump: 2950 rpm, 6 vanes, 6308/6306 bearings, DE horizontal + axial."""
        return cls(**changes)

    def with_faults(self, *faults: FaultConfig) -> PumpConfig:
        return replace(self, faults=tuple(faults))

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors)

    def bearing_frequencies_hz(
        self, rpm: float | None = None, bearing: int = 0
    ) -> dict[str, float]:
        """Defect frequencies (Hz) of a bearing at ``rpm`` (default: the configured speed)."""
        if not self.bearings:
            return {}
        b = self.bearings[bearing]
        return b.geometry.defect_frequencies_hz(rpm or self.speed.rpm, b.slip_pct / 100.0)

    def asset_descriptor(self) -> dict[str, Any]:
        """The report's asset: keyword arguments for ``dsp.Asset`` (bearings as dicts)."""
        return {
            "bearings": [
                {
                    "n_balls": b.geometry.n_balls,
                    "ball_d_mm": b.geometry.ball_d_mm,
                    "pitch_d_mm": b.geometry.pitch_d_mm,
                    "contact_deg": b.geometry.contact_deg,
                    "designation": b.geometry.designation,
                    "location": b.location,
                }
                for b in self.bearings
            ],
            "vanes": self.vanes or None,
            "iso_group": self.iso_group,
            "foundation": self.foundation,
            "rated_rpm": self.speed.rpm,
            "kind": self.kind,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; :func:`pump_config_from_dict` reads it back."""
        d = asdict(self)
        d["bearings"] = [
            {**asdict(b.geometry), "location": b.location, "slip_pct": b.slip_pct}
            for b in self.bearings
        ]
        d["sensors"] = [asdict(s) for s in self.sensors]
        d["faults"] = [asdict(f) for f in self.faults]
        d["resonances"] = None if self.resonances is None else [asdict(r) for r in self.resonances]
        return d


# --- loading -----------------------------------------------------------------------------


class BearingFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A pump file's bearing: a designation (built-in table) or its geometry (mm, degrees)."""

    __config_shorthand__: ClassVar[str] = "designation"  # "6205" = {designation = "6205"}

    designation: str | None = None
    n_balls: int | None = None
    ball_d_mm: float | None = None
    pitch_d_mm: float | None = None
    contact_deg: float = 0.0
    location: str = "DE"
    slip_pct: float = 0.0  # rolling-element slip, % off the catalog orders

    def problems(self) -> list[str]:
        try:
            self.bearing()
        except KeyError as exc:  # UnknownBearingError
            return [str(exc)]
        except ValueError as exc:
            return [str(exc)]
        return []

    def bearing(self) -> PumpBearing:
        if self.n_balls is not None:
            if self.ball_d_mm is None or self.pitch_d_mm is None:
                raise ValueError("n_balls needs ball_d_mm and pitch_d_mm")
            return PumpBearing(BearingGeometry(self.designation, self.n_balls, self.ball_d_mm,
                                               self.pitch_d_mm, self.contact_deg), self.location,
                               self.slip_pct)
        if self.designation is None:
            raise ValueError("give a designation or n_balls, ball_d_mm, pitch_d_mm")
        return PumpBearing(lookup_bearing(self.designation), self.location, self.slip_pct)


class PumpFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A pump file (``pumpwatch simulate --pump``, an edge pump's ``simulate``) as written.

    Absent keys take :class:`PumpConfig`'s defaults; ``rpm`` is a constant
    speed, the shorthand of a ``[speed]`` table.
    """

    name: str = "pump1"
    fs: float = 25600.0
    speed: SpeedProfile | None = None
    rpm: float | None = None
    vanes: int = 6
    bearings: list[str | BearingFile] | None = None
    sensors: list[SensorConfig] | None = None
    resonances: list[Resonance] | None = None
    noise_floor: float = 0.02
    shaft_level: float = 1.0
    structure_rms: float = 1.5
    iso_group: Literal[1, 2] = 2
    foundation: Literal["rigid", "flexible"] = "rigid"
    kind: str = "centrifugal pump"
    faults: list[FaultConfig] = []

    def problems(self) -> list[str]:
        """The checks across keys, as :class:`PumpConfig` makes them (first found)."""
        if self.rpm is not None and self.speed is not None:
            return ["give either rpm or [speed], not both"]
        try:
            self.pump()
        except (PumpConfigError, ValueError) as exc:
            return [str(exc)]
        return []

    def pump(self) -> PumpConfig:
        kw: dict[str, Any] = {k: getattr(self, k) for k in (
            "name", "fs", "vanes", "noise_floor", "shaft_level", "structure_rms", "iso_group",
            "foundation", "kind")}
        kw["fs"] = float(self.fs)
        if self.speed is not None:
            kw["speed"] = self.speed
        if self.rpm is not None:
            kw["speed"] = SpeedProfile(rpm=float(self.rpm))
        if self.bearings is not None:
            kw["bearings"] = tuple((BearingFile(designation=b) if isinstance(b, str) else b)
                                   .bearing() for b in self.bearings)
        if self.sensors is not None:
            kw["sensors"] = tuple(self.sensors)
        if self.resonances is not None:
            kw["resonances"] = tuple(self.resonances)
        kw["faults"] = tuple(self.faults)
        return PumpConfig(**kw)


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise PumpConfigError(f"unknown key(s) {unknown}; known: {sorted(allowed)}",
                              source=where)


def pump_config_from_dict(d: Mapping[str, Any], *, where: str = "pump config") -> PumpConfig:
    """Build a :class:`PumpConfig` from parsed TOML/JSON; :class:`PumpConfigError` lists every
    problem, each naming ``where`` and its TOML path (checked section by section by
    :mod:`dsp.config`)."""
    file, problems = convert(d, PumpFile)
    if file is None:
        raise PumpConfigError(problems, source=where)
    return file.pump()


def load_pump_config(path: str | Path) -> PumpConfig:
    """Read one pump from a TOML file; errors name the file and the problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PumpConfigError(f"cannot read pump config: {exc.strerror or exc}",
                              source=str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PumpConfigError(f"not valid TOML: {exc}", source=str(p)) from None
    return pump_config_from_dict(data, where=str(p))


# --- fleets --------------------------------------------------------------------------------

_FLEET_FAULTS: tuple[FaultKind, ...] = (
    "outer_race",
    "imbalance",
    "inner_race",
    "misalignment",
    "cavitation",
    "looseness",
    "ball",
    "flow",
    "cage",
)


def fleet_configs(
    n_pumps: int,
    channels_per_pump: int = 2,
    *,
    seed: int = 0,
    healthy_fraction: float = 0.25,
    onset_spacing_s: float = 60.0,
    ramp_s: float = 300.0,
    fs: float = 25600.0,
) -> list[PumpConfig]:
    """``n_pumps`` pumps with ``channels_per_pump`` sensors each and staggered faults.

    Speeds, vanes, bearings and resonances vary from pump to pump (from
    ``seed``); about ``healthy_fraction`` of the pumps stay healthy; the others
    develop one fault each, starting ``onset_spacing_s`` apart and growing
    over ``ramp_s`` to a severity between 0.4 and 1.
    """
    if n_pumps < 1 or not 1 <= channels_per_pump <= 3 * 2:
        raise PumpConfigError(
            f"need n_pumps >= 1 and channels_per_pump in 1..6, got {n_pumps}, {channels_per_pump}"
        )
    rng = np.random.default_rng([seed, 0xF1EE7])
    axes: tuple[tuple[str, Axis, str], ...] = (
        ("de_h", "horizontal", "DE"),
        ("de_a", "axial", "DE"),
        ("de_v", "vertical", "DE"),
        ("nde_h", "horizontal", "NDE"),
        ("nde_v", "vertical", "NDE"),
        ("nde_a", "axial", "NDE"),
    )
    designations = ("6205", "6206", "6305", "6308", "6310", "6309")
    out: list[PumpConfig] = []
    k_fault = 0
    for i in range(n_pumps):
        rpm = float(rng.choice([1480.0, 1780.0, 2950.0, 3550.0]) * rng.uniform(0.98, 1.0))
        speed = SpeedProfile(
            mode="drift",
            rpm=rpm,
            drift_pct=float(rng.uniform(0.2, 1.0)),
            drift_period_s=float(rng.uniform(60, 300)),
        )
        sensors = tuple(
            SensorConfig(name=n, axis=a, location=loc) for n, a, loc in axes[:channels_per_pump]
        )
        bearing = PumpBearing(lookup_bearing(str(rng.choice(designations))), "DE")
        faults: tuple[FaultConfig, ...] = ()
        if rng.random() >= healthy_fraction:
            kind = _FLEET_FAULTS[k_fault % len(_FLEET_FAULTS)]
            faults = (
                FaultConfig(
                    kind=kind,
                    severity=float(rng.uniform(0.4, 1.0)),
                    onset_s=k_fault * onset_spacing_s,
                    ramp_s=ramp_s,
                    progression="exponential" if kind in BEARING_FAULTS else "linear",
                ),
            )
            k_fault += 1
        out.append(
            PumpConfig(
                name=f"pump{i + 1}",
                fs=fs,
                speed=speed,
                vanes=int(rng.integers(5, 8)),
                bearings=(bearing,),
                sensors=sensors,
                faults=faults,
            )
        )
    return out


_FLEET_KEYS = {
    "pumps",
    "channels_per_pump",
    "seed",
    "healthy_fraction",
    "onset_spacing_s",
    "ramp_s",
    "fs",
}


def load_fleet_config(path: str | Path) -> list[PumpConfig]:
    """Pumps of one device from TOML: explicit ``[[pump]]`` tables and/or a generated ``[fleet]``.

    ::

        [fleet]                 # generated pumps (see fleet_configs)
        pumps = 8
        channels_per_pump = 4
        seed = 1
        onset_spacing_s = 60.0
        ramp_s = 300.0

        [[pump]]                # explicit pumps, same keys as a pump file
        name = "feed"
        rpm = 1480
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PumpConfigError(f"cannot read fleet config: {exc.strerror or exc}",
                              source=str(p)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PumpConfigError(f"not valid TOML: {exc}", source=str(p)) from None
    _check_keys(data, {"fleet", "pump"}, str(p))
    pumps = [
        pump_config_from_dict(d, where=f"{p} pump[{i}]") for i, d in enumerate(data.get("pump", []))
    ]
    if "fleet" in data:
        f = dict(data["fleet"])
        _check_keys(f, _FLEET_KEYS, f"{p} [fleet]")
        n = f.pop("pumps", 4)
        try:
            generated = fleet_configs(int(n), **f)
        except TypeError as exc:
            raise PumpConfigError(f"[fleet] {exc}", source=str(p)) from None
        taken = {q.name for q in pumps}
        pumps += [q for q in generated if q.name not in taken]
    if not pumps:
        raise PumpConfigError("no pumps (give [fleet] or [[pump]] tables)", source=str(p))
    names = [q.name for q in pumps]
    if len(set(names)) != len(names):
        raise PumpConfigError(f"pump names must be unique, got {names}", source=str(p))
    return pumps
