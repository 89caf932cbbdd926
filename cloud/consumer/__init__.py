"""The cloud consumer: MQTT reports in, idempotent results out (see :mod:`.service`)."""

from __future__ import annotations

from ._queue import Handoff, QueueStats
from ._response import ResponseError, Scored, decode_response
from ._validate import Accepted, Parsed, message_key, parse_message, topic_device
from .batcher import Batch, Batcher, BatcherStats, Target
from .config import (
    BatchConfig,
    ConsumerConfig,
    EndpointConfig,
    MqttConfig,
    Route,
    StoreConfig,
    config_from_dict,
    load_config,
)
from .endpoint import EndpointClient, request_body
from .errors import (
    ConfigError,
    ConsumerError,
    EndpointConfigError,
    EndpointError,
    EndpointRejectedError,
    EndpointUnavailableError,
    RemoteError,
)
from .mqtt import Delivery, MqttSource
from .service import Consumer, Invoker

__all__ = [
    "Accepted",
    "Batch",
    "BatchConfig",
    "Batcher",
    "BatcherStats",
    "ConfigError",
    "Consumer",
    "ConsumerConfig",
    "ConsumerError",
    "Delivery",
    "EndpointClient",
    "EndpointConfig",
    "EndpointConfigError",
    "EndpointError",
    "EndpointRejectedError",
    "EndpointUnavailableError",
    "Handoff",
    "Invoker",
    "MqttConfig",
    "MqttSource",
    "Parsed",
    "QueueStats",
    "RemoteError",
    "ResponseError",
    "Route",
    "Scored",
    "StoreConfig",
    "Target",
    "config_from_dict",
    "decode_response",
    "load_config",
    "message_key",
    "parse_message",
    "request_body",
    "topic_device",
]
