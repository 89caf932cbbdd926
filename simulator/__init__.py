"""pumpwatch simulator: physics-based pump vibration with faults, recordings, sample sources.

Depends on nothing else of ours (not dsp, not edge): the edge agent reads a
:class:`Source` exactly as it would read a real sensor.
"""

from .bearings import BEARINGS, BearingGeometry, UnknownBearingError, lookup_bearing
from .pump import (
    FAULT_KINDS,
    MOUNTS,
    FaultConfig,
    PumpBearing,
    PumpConfig,
    PumpConfigError,
    Resonance,
    SensorConfig,
    SpeedProfile,
    fleet_configs,
    load_fleet_config,
    load_pump_config,
    pump_config_from_dict,
)
from .simulated import SimulatedSource
from .source import Block, Source

__all__ = [
    "BEARINGS",
    "FAULT_KINDS",
    "MOUNTS",
    "BearingGeometry",
    "Block",
    "FaultConfig",
    "PumpBearing",
    "PumpConfig",
    "PumpConfigError",
    "Resonance",
    "SensorConfig",
    "SimulatedSource",
    "Source",
    "SpeedProfile",
    "UnknownBearingError",
    "fleet_configs",
    "load_fleet_config",
    "load_pump_config",
    "lookup_bearing",
    "pump_config_from_dict",
]
