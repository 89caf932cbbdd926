"""Model monitoring: histograms the consumer adds per commit, and the drift computation.

:mod:`.histograms` (the consumer's side, in the commit), :mod:`.drift` (the tests),
:mod:`.run` (a monitoring run over the store), :mod:`.report` (its files). See
docs/monitoring.md.
"""

from .histograms import BUCKET_NS, FEATURES, Histograms

__all__ = ["BUCKET_NS", "FEATURES", "Histograms"]
