"""The SageMaker inference container: server, handler, bundles, physics evidence.

Everything a served bundle needs to load and score, and nothing of training:
this package imports :mod:`dsp` and the third-party inference stack (numpy,
scipy, msgspec, zstandard, aiohttp) only. The pipeline reaches it through the
endpoint contract (:mod:`dsp.results`) and the report schema, never by import.
"""

from .bundle import BUILTIN_VERSION, Bundle, builtin_bundle, load_bundle, pack_bundle, write_bundle
from .errors import (
    BundleError,
    ChecksumMismatchError,
    ModelFailureError,
    ModelNotReadyError,
    ModelServerError,
    PayloadTooLargeError,
    RegistryError,
    RequestError,
    UnknownEndpointError,
    UnknownTargetModelError,
)

__all__ = [
    "BUILTIN_VERSION",
    "Bundle",
    "BundleError",
    "ChecksumMismatchError",
    "ModelFailureError",
    "ModelNotReadyError",
    "ModelServerError",
    "PayloadTooLargeError",
    "RegistryError",
    "RequestError",
    "UnknownEndpointError",
    "UnknownTargetModelError",
    "builtin_bundle",
    "load_bundle",
    "pack_bundle",
    "write_bundle",
]
