"""The asset alarm lifecycle: acknowledge, assign, close with a verdict (sans-IO).

``open`` -> ``acknowledged`` (ack) -> ``closed`` (close); ``assign`` names who
works on it, at any point before closing (and acknowledges an open alarm:
someone owns it now). Closing needs the confirmed failure mode (``verdict``: one
of the classes of the bundle manifest that raised it, or ``no_fault_found``) and
the action taken; the note and the fault's onset are optional. A closed alarm
is final (a label): a later change is refused, as is acknowledging twice.
:func:`apply` checks a change and returns the new lifecycle;
:meth:`cloud.store.Store.change_alarm` applies it in one transaction with its
event row.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import msgspec

from .records import NO_FAULT_FOUND, Lifecycle

Action = Literal["ack", "assign", "close"]
ACTIONS: tuple[Action, ...] = ("ack", "assign", "close")


class LifecycleError(ValueError):
    """A change the alarm's state or the verdict's vocabulary does not allow."""


class AlarmChange(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One operator's change to an asset alarm (the API's request body plus who/when)."""

    action: Action
    actor: str
    at_ns: int
    assignee: str | None = None
    verdict: str | None = None
    action_taken: str | None = None
    note: str | None = None
    onset_ns: int | None = None


def apply(lc: Lifecycle, change: AlarmChange, classes: Collection[str]) -> Lifecycle:
    """The lifecycle after ``change``; :class:`LifecycleError` naming why it is refused.
    ``classes``: the manifest's class names (empty: the manifest is unknown, so any
    verdict name is taken)."""
    if lc.status == "closed":
        raise LifecycleError(f"the alarm is closed (by {lc.closed_by}); it cannot change")
    rep = msgspec.structs.replace
    if change.action == "ack":
        if lc.status != "open":
            raise LifecycleError(f"the alarm is already acknowledged by {lc.acknowledged_by}")
        return rep(lc, status="acknowledged", acknowledged_by=change.actor,
                   acknowledged_ns=change.at_ns)
    if change.action == "assign":
        if not change.assignee:
            raise LifecycleError("assign needs an assignee")
        if lc.status == "open":
            lc = rep(lc, status="acknowledged", acknowledged_by=change.actor,
                     acknowledged_ns=change.at_ns)
        return rep(lc, assignee=change.assignee)
    problems = []
    if not change.verdict:
        problems.append("close needs a verdict (a class of the manifest or no_fault_found)")
    elif classes and change.verdict != NO_FAULT_FOUND and change.verdict not in classes:
        problems.append(f"verdict {change.verdict!r} is neither {NO_FAULT_FOUND} nor a class "
                        f"of the bundle that raised the alarm ({sorted(classes)})")
    if not change.action_taken:
        problems.append("close needs action_taken")
    if change.onset_ns is not None and change.onset_ns > change.at_ns:
        problems.append("onset is in the future")
    if problems:
        raise LifecycleError("; ".join(problems))
    return rep(lc, status="closed", closed_by=change.actor, closed_ns=change.at_ns,
               verdict=change.verdict, action_taken=change.action_taken, note=change.note,
               onset_ns=change.onset_ns,
               acknowledged_by=lc.acknowledged_by or change.actor,
               acknowledged_ns=lc.acknowledged_ns or change.at_ns)
