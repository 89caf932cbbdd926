"""The local stack behind ``pumpwatch up`` and ``pumpwatch demo``: wiring only.

:mod:`.plan` (options, fleet and fault schedule, component configs),
:mod:`.procs` (process groups, readiness, ports), :mod:`.models` (train once,
register/approve/deploy, baselines), :mod:`.monitor` (device status, store
reads), :mod:`.score` (demo scoring), :mod:`.runner` (the whole sequence).
"""

from .plan import StackOptions, plan_fleet
from .procs import StackError
from .runner import Stack, demo_options

__all__ = ["Stack", "StackError", "StackOptions", "demo_options", "plan_fleet"]
