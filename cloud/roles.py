"""The one role and permission table: who may publish, retain, subscribe and receive what.

Theory of operation
-------------------
Every MQTT identity has exactly one role. :data:`ROLES` lists, per role, the
grants it holds as MQTT topic filters over two placeholders: ``{root}`` (the
topic root, ``pumpwatch`` unless configured) and ``{self}`` (the identity's own
name: the certificate CN on Mosquitto, the thing name on AWS IoT). Nothing else
is granted; everything not listed is denied.

Two renderers turn the table into what the brokers enforce:

* :func:`dynsec_config` -- the Mosquitto dynamic-security plugin's JSON: one
  client per identity (its username = its certificate CN, taken by
  ``use_identity_as_username``) holding one role whose ACLs are that role's
  grants with ``{self}`` replaced by the name. Default access is deny for
  everything, so a name the file does not list can do nothing at all, and a
  SUBSCRIBE that no ``subscribe`` grant matches (in particular any
  ``$share/...`` for a device) is refused with SUBACK 0x87. The plugin in
  Mosquitto 2.0.11 has no ``%u`` substitution, hence one role per identity.
* :func:`iot_policy` -- the AWS IoT Core policy of a role, with ``{self}`` as
  the policy variable ``${iot:Connection.Thing.ThingName}`` and MQTT wildcards
  as the policy wildcard ``*``.

``retain`` is enforced by AWS IoT (``iot:RetainPublish``). Mosquitto's ACLs
cannot tell a retained publish from another, so there a third renderer,
:func:`retain_filters`, gives the pumpwatch retain guard (a small broker plugin,
``pumpwatch/retain_guard.c``, loaded before dynamic security) the union of every
role's ``retain`` grants with ``{self}`` as ``%u`` (the client's own username):
a retained publish outside them is refused, one inside them still needs the
role's ``publish`` grant. The union is exact because no role's ``publish``
grants meet another role's ``retain`` grants (``test_roles`` checks it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dsp.report import NAME_RE, NAME_RULE  # DESIGN.md's name rule, defined once

Role = Literal["device", "consumer", "dashboard", "operator"]
Action = Literal["publish", "retain", "subscribe", "receive"]

ROLE_NAMES: tuple[Role, ...] = ("device", "consumer", "dashboard", "operator")


#: the AWS IoT policy variable that stands for the connecting device's name
THING = "${iot:Connection.Thing.ThingName}"


@dataclass(frozen=True, slots=True)
class Grant:
    action: Action
    filter: str  # an MQTT topic filter over {root} and {self}


def _g(action: Action, *filters: str) -> tuple[Grant, ...]:
    return tuple(Grant(action, f) for f in filters)


ROLES: Mapping[Role, tuple[Grant, ...]] = {
    # a gateway: its own reports and status (retained, also its will); its own confirmations
    "device": (
        *_g("publish", "{root}/devices/{self}/reports", "{root}/devices/{self}/status"),
        *_g("retain", "{root}/devices/{self}/status"),
        *_g("subscribe", "{root}/acks/{self}"),
        *_g("receive", "{root}/acks/{self}"),
    ),
    # the cloud consumer: reads every report (shared subscription), writes results and
    # confirmations; retains only each pump's condition (its latest state)
    "consumer": (
        *_g("subscribe", "$share/+/{root}/devices/+/reports", "{root}/devices/+/reports"),
        *_g("receive", "{root}/devices/+/reports"),
        *_g("publish", "{root}/sites/#", "{root}/acks/+"),
        *_g("retain", "{root}/sites/+/pumps/+/condition"),
    ),
    # a dashboard: reads results and device status; publishes (never retained) the
    # operators' alarm lifecycle changes it stores (cloud/dashboard/publish.py)
    "dashboard": (
        *_g("subscribe", "{root}/sites/#", "{root}/devices/+/status"),
        *_g("receive", "{root}/sites/#", "{root}/devices/+/status"),
        *_g("publish", "{root}/sites/+/pumps/+/alarms"),
    ),
    # an operator's diagnostic client: reads everything below the root (never as a share
    # member, so it cannot take reports away from the consumers), writes nothing
    "operator": (
        *_g("subscribe", "{root}/#"),
        *_g("receive", "{root}/#"),
    ),
}


class RoleError(ValueError):
    """A name or topic root that the table cannot be rendered with."""


def check_name(name: str, what: str = "name") -> str:
    if not NAME_RE.match(name):
        raise RoleError(f"{what} must be {NAME_RULE}, got {name!r}")
    return name


def check_root(root: str) -> str:
    if not all(NAME_RE.match(level) for level in root.split("/")):
        raise RoleError(f"topic root must be topic levels of {NAME_RULE}, got {root!r}")
    return root


def grants(role: Role, *, root: str, name: str) -> list[Grant]:
    """``role``'s grants rendered for identity ``name`` under ``root``."""
    check_root(root)
    return [Grant(g.action, g.filter.format(root=root, self=name)) for g in ROLES[role]]


# -- Mosquitto dynamic security -----------------------------------------------------------

_DYNSEC_ACL: Mapping[Action, str | None] = {
    "publish": "publishClientSend",
    "retain": None,  # not expressible in Mosquitto's ACLs
    "subscribe": "subscribePattern",
    "receive": "publishClientReceive",
}


def dynsec_config(identities: Mapping[str, Role], *, root: str = "pumpwatch") -> dict[str, Any]:
    """The dynamic-security JSON for ``identities`` (CN -> role); default access: deny."""
    clients: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for name in sorted(identities):
        role = identities[name]
        check_name(name, f"{role} name")
        rolename = f"{role}:{name}"
        acls = [
            {"acltype": acltype, "topic": g.filter, "priority": 0, "allow": True}
            for g in grants(role, root=root, name=name)
            if (acltype := _DYNSEC_ACL[g.action]) is not None
        ]
        roles.append({"rolename": rolename, "textname": f"pumpwatch {role}", "acls": acls})
        clients.append(
            {"username": name, "textname": f"pumpwatch {role}", "roles": [{"rolename": rolename}]}
        )
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def retain_filters(*, root: str = "pumpwatch") -> list[str]:
    """Every role's ``retain`` grants under ``root``, ``{self}`` as ``%u``, for the retain
    guard plugin (a retained publish matching none of them is refused)."""
    check_root(root)
    out: list[str] = []
    for role in ROLE_NAMES:
        for g in ROLES[role]:
            f = g.filter.format(root=root, self="%u")
            if g.action == "retain" and f not in out:
                out.append(f)
    return out


# -- AWS IoT Core -------------------------------------------------------------------------

_IOT: Mapping[Action, tuple[str, str, str]] = {
    # action -> (IoT action, resource kind, statement id)
    "publish": ("iot:Publish", "topic", "Publish"),
    "retain": ("iot:RetainPublish", "topic", "RetainPublish"),
    "subscribe": ("iot:Subscribe", "topicfilter", "Subscribe"),
    "receive": ("iot:Receive", "topic", "Receive"),
}


def iot_resource(kind: str, mqtt_filter: str) -> str:
    """An IoT policy resource for an MQTT filter (``+`` and ``#`` become the policy's ``*``)."""
    levels = ["*" if level in ("+", "#") else level for level in mqtt_filter.split("/")]
    return f"arn:aws:iot:*:*:{kind}/{'/'.join(levels)}"


def iot_policy(role: Role, *, root: str = "pumpwatch") -> dict[str, Any]:
    """The AWS IoT policy document of ``role`` (one policy serves every identity of it)."""
    if role == "device":
        connect: dict[str, Any] = {
            "Sid": "ConnectAsItsOwnThingOnly",
            "Effect": "Allow",
            "Action": "iot:Connect",
            "Resource": f"arn:aws:iot:*:*:client/{THING}",
            "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}},
        }
    else:
        connect = {
            "Sid": "ConnectWithItsRolePrefix",
            "Effect": "Allow",
            "Action": "iot:Connect",
            "Resource": f"arn:aws:iot:*:*:client/pumpwatch-{role}*",
        }
    statements = [connect]
    by_action: dict[Action, list[str]] = {}
    for g in grants(role, root=root, name=THING):
        by_action.setdefault(g.action, []).append(iot_resource(_IOT[g.action][1], g.filter))
    for action, resources in by_action.items():
        iot_action, _, sid = _IOT[action]
        statements.append(
            {
                "Sid": sid,
                "Effect": "Allow",
                "Action": iot_action,
                "Resource": resources[0] if len(resources) == 1 else resources,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
