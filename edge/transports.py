"""Pick the MQTT transport named in the config (imported lazily: a paho-only gateway
never loads awscrt, and the other way round)."""

from __future__ import annotations

from .config import MqttConfig
from .transport import Transport, Will


def make_transport(
    cfg: MqttConfig, *, client_id: str, will: Will | None = None, subscribe: str | None = None
) -> Transport:
    """``mqtt.transport``: ``"paho"`` (any MQTT 5 broker) or ``"awsiot"`` (awsiotsdk MQTT 5).
    ``subscribe``: a topic to receive (the confirmations topic)."""
    if cfg.transport == "awsiot":
        from .mqtt_awsiot import AwsIotTransport

        return AwsIotTransport(cfg, client_id=client_id, will=will, subscribe=subscribe)
    from .mqtt_paho import PahoTransport

    return PahoTransport(cfg, client_id=client_id, will=will, subscribe=subscribe)
