"""The model side's error tree, named for who is at fault.

Each error knows how SageMaker would report it: the HTTP status and the
``x-amzn-ErrorType`` code that makes botocore raise its own exception class
(``client.exceptions.ValidationError``, ``ModelError``,
``ModelNotReadyException``, ``ServiceUnavailable``). The HTTP adapter
converts these, and only these, into responses; anything else escaping the
handler is a bug and becomes a ModelError.
"""

from __future__ import annotations


class ModelServerError(Exception):
    """Base: ``status`` and ``error_type`` say how the HTTP layer reports it."""

    status = 500
    error_type = "InternalFailure"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestError(ModelServerError):
    """The caller sent something we cannot serve (bad body, unknown name): a 4xx."""

    status = 400
    error_type = "ValidationError"


class PayloadTooLargeError(RequestError):
    """Body over the SageMaker InvokeEndpoint limit (6 MB)."""

    status = 413


class UnsupportedMediaTypeError(RequestError):
    status = 415


class UnknownTargetModelError(RequestError):
    """``X-Amzn-SageMaker-Target-Model`` names no bundle this server can find."""

    def __init__(self, target: str, where: str) -> None:
        super().__init__(f"target model {target!r} not found under {where}")
        self.target = target


class UnknownEndpointError(RequestError):
    """``/endpoints/{name}/invocations`` for a name this server was not started with."""

    def __init__(self, name: str, served: str) -> None:
        super().__init__(
            f"Endpoint {name} not found: this server serves endpoint {served!r}"
        )
        self.name = name


class ModelNotReadyError(ModelServerError):
    """The (target) bundle is still loading; retry shortly."""

    status = 429
    error_type = "ModelNotReadyException"


class ModelFailureError(ModelServerError):
    """The model raised while scoring, or an artifact is corrupt (checksum, format)."""

    status = 424
    error_type = "ModelError"


class BundleError(ValueError):
    """A bundle directory or archive that cannot be loaded; names the file and reason."""


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown group/version, bad state)."""


class ChecksumMismatchError(BundleError):
    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(f"SHA-256 mismatch for {path}: expected {expected}, got {actual}")
        self.path = path
        self.expected = expected
        self.actual = actual


class ConfigError(Exception):
    """The server's model configuration cannot work (a path that is no bundle, a bad registry).

    Raised before the server listens; the message names the path and the reason.
    """
