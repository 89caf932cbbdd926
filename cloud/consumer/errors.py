"""The consumer's error tree, named for who is at fault.

* :class:`RemoteError` -- a device sent something we cannot accept. Carries
  the dead-letter ``kind``, the ``reason`` and whatever identity is known. It
  never escapes the ingest step: it becomes a dead letter and the message is
  acknowledged.
* :class:`EndpointError` -- the model endpoint failed. ``EndpointUnavailableError``
  (throttled, not ready, 5xx, timeout, connection) is worth retrying;
  ``EndpointRejectedError`` (ModelError, ValidationError) says the request itself
  was refused, so the batch is bisected down to the report at fault.
* :class:`ConfigError` -- the operator's configuration is wrong.
* :class:`cloud.store.StoreError` -- our own storage failed.

Library exceptions (msgspec, botocore, sqlite3) are converted to these at one
boundary each: :mod:`._validate`, :mod:`.endpoint`, :mod:`cloud.store.sqlite`.
"""

from __future__ import annotations

from cloud.store import Identity, StoreError
from dsp.config import InvalidConfigError


class ConsumerError(Exception):
    """Root of the consumer's own errors."""


class RemoteError(ConsumerError):
    """Bad input from a device: dead-lettered with ``kind`` and ``reason``."""

    def __init__(self, kind: str, reason: str, *, identity: Identity | None = None) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.identity = identity


class EndpointError(ConsumerError):
    """The model endpoint failed for a batch."""

    retryable: bool = True


class EndpointUnavailableError(EndpointError):
    """Throttled, loading, overloaded, unreachable or too slow: try again later."""

    retryable = True


class EndpointRejectedError(EndpointError):
    """The model failed on this input (ModelError): bisect to the poison report."""

    retryable = False


class EndpointConfigError(EndpointUnavailableError):
    """ValidationError: unknown endpoint or target model, or a request refused as a whole."""

    retryable = True


class ConfigError(ConsumerError, InvalidConfigError):
    """The configuration is invalid: ``problems`` names every setting and value at fault."""

    def __init__(self, problems: str | list[str], *, source: str = "consumer config") -> None:
        InvalidConfigError.__init__(self, [problems] if isinstance(problems, str) else problems,
                                source=source)


__all__ = [
    "ConfigError",
    "ConsumerError",
    "EndpointConfigError",
    "EndpointError",
    "EndpointRejectedError",
    "EndpointUnavailableError",
    "RemoteError",
    "StoreError",
]
