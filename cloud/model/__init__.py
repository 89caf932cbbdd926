"""The model side of the cloud: inference handler, SageMaker-compatible server, registry.

Kept apart from the pipeline side (consumer, batcher, store): the two meet
only at the endpoint contract (:mod:`dsp.results`) and the report schema.
Inference code needs numpy, msgspec and aiohttp only.
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
from .registry import Deployment, LocalRegistry, ModelPackage, ModelRegistry

__all__ = [
    "BUILTIN_VERSION",
    "Bundle",
    "BundleError",
    "ChecksumMismatchError",
    "Deployment",
    "LocalRegistry",
    "ModelFailureError",
    "ModelNotReadyError",
    "ModelPackage",
    "ModelRegistry",
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
