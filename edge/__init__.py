"""pumpwatch edge: the gateway agent (acquisition, spectra, spool, MQTT publishing)."""

from .agent import Agent
from .config import ConfigError, EdgeConfig, config_from_dict, load_config
from .publisher import Publisher
from .ring import SampleRing
from .sources import SyntheticSource
from .spool import Spool, SpoolError
from .transport import Transport, TransportError

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
