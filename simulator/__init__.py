"""pumpwatch simulator: physics-based pump vibration with faults, recordings, sample sources.

Depends on nothing else of ours (not dsp, not edge): the edge agent reads a
:class:`Source` exactly as it would read a real sensor.

The package's names load on first use (PEP 562): the edge agent imports
``simulator.source`` (the source protocol) and ``simulator.bearings`` (the
geometry table) without the synthesizer, whose ``scipy.signal`` and
``scipy.stats`` cost a gateway about 50 MB and a second at startup.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "BEARINGS": "bearings",
    "BearingGeometry": "bearings",
    "UnknownBearingError": "bearings",
    "lookup_bearing": "bearings",
    "FAULT_KINDS": "pump",
    "MOUNTS": "pump",
    "FaultConfig": "pump",
    "PumpBearing": "pump",
    "PumpConfig": "pump",
    "PumpConfigError": "pump",
    "Resonance": "pump",
    "SensorConfig": "pump",
    "SpeedProfile": "pump",
    "fleet_configs": "pump",
    "load_fleet_config": "pump",
    "load_pump_config": "pump",
    "pump_config_from_dict": "pump",
    "SimulatedSource": "simulated",
    "Block": "source",
    "Source": "source",
}

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


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
