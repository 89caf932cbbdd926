"""pumpwatch edge: the gateway agent (acquisition, spectra, spool, MQTT publishing).

Public names are re-exported lazily, so ``import edge.spool`` (a spool tool, the
kill test's writer) does not pay for numpy, scipy and paho.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent
    from .config import ConfigError, EdgeConfig, config_from_dict, load_config
    from .publisher import Publisher
    from .ring import SampleRing
    from .sources import SyntheticSource
    from .spool import Spool, SpoolError
    from .transport import Transport, TransportError

_EXPORTS = {
    "Agent": "agent",
    "ConfigError": "config",
    "EdgeConfig": "config",
    "Publisher": "publisher",
    "SampleRing": "ring",
    "Spool": "spool",
    "SpoolError": "spool",
    "SyntheticSource": "sources",
    "Transport": "transport",
    "TransportError": "transport",
    "config_from_dict": "config",
    "load_config": "config",
}

__all__ = [
    "Agent",
    "ConfigError",
    "EdgeConfig",
    "Publisher",
    "SampleRing",
    "Spool",
    "SpoolError",
    "SyntheticSource",
    "Transport",
    "TransportError",
    "config_from_dict",
    "load_config",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
