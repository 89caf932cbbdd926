"""Model registries: a local directory registry and the SageMaker Model Registry.

The SageMaker backend (:mod:`models.registry.sagemaker`) imports boto3 when it
is used; the local one needs nothing beyond the standard library.
"""

from .local import (
    Deployment,
    LocalRegistry,
    ModelPackage,
    ModelRegistry,
    default_registry_path,
    is_bundle_dir,
)
from .rollout import (
    ROLLOUT_MODES,
    Candidate,
    HistoryEntry,
    RolloutLimits,
    RolloutMode,
    RolloutRegistry,
)

__all__ = [
    "ROLLOUT_MODES",
    "Candidate",
    "Deployment",
    "HistoryEntry",
    "LocalRegistry",
    "ModelPackage",
    "ModelRegistry",
    "RolloutLimits",
    "RolloutMode",
    "RolloutRegistry",
    "default_registry_path",
    "is_bundle_dir",
]
