"""One role table, three renderings: the Mosquitto dynamic-security file, the AWS IoT
policies and the committed deploy/aws/iot-policy.json must grant exactly the same."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from cloud.aws_iot import device_policy, role_policy
from cloud.roles import (
    ROLE_NAMES,
    THING,
    Role,
    RoleError,
    dynsec_config,
    grants,
    retain_filters,
)
from pumpwatch.mosquitto_conf import security_json

ROOT = Path(__file__).resolve().parents[1]
DYNSEC = {"publish": "publishClientSend", "subscribe": "subscribePattern",
          "receive": "publishClientReceive"}
IOT = {"publish": "iot:Publish", "subscribe": "iot:Subscribe", "receive": "iot:Receive",
       "retain": "iot:RetainPublish"}


def mqtt_match(filt: str, topic: str) -> bool:
    """MQTT filter matching (a subscription filter is matched as a topic string)."""
    f, t = filt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


def probes(root: str, me: str) -> list[str]:
    other = "gw-other"
    out = []
    for who in (me, other, "+"):
        out += [f"{root}/devices/{who}/reports", f"{root}/devices/{who}/status",
                f"{root}/devices/{who}/x", f"{root}/acks/{who}"]
    out += [f"{root}/sites/s1/pumps/p1/condition", f"{root}/sites/s1/pumps/p1/alarms",
            f"{root}/sites/#", f"{root}/#", "#", f"{root}/acks/#", "other/devices/x/reports",
            f"$share/pumpwatch/{root}/devices/+/reports", f"$share/g/{root}/acks/{me}",
            f"$share/g/{root}/#"]
    return out


def dynsec_allows(cfg: dict[str, object], name: str, action: str, topic: str) -> bool:
    client = next(c for c in cfg["clients"] if c["username"] == name)  # type: ignore[attr-defined]
    rolenames = {r["rolename"] for r in client["roles"]}
    acls = [a for r in cfg["roles"] if r["rolename"] in rolenames  # type: ignore[attr-defined]
            for a in r["acls"]]
    return any(a["acltype"] == DYNSEC[action] and a["allow"] and mqtt_match(a["topic"], topic)
               for a in acls)


def iot_allows(policy: dict[str, object], thing: str, action: str, topic: str) -> bool:
    kind = "topicfilter" if action == "subscribe" else "topic"
    arn = f"arn:aws:iot:eu-west-1:123456789012:{kind}/{topic}"
    for st in policy["Statement"]:  # type: ignore[attr-defined]
        if st["Action"] != IOT[action]:
            continue
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for r in res:
            # policy variables are substituted first; '*' is the only wildcard, and it does
            # not treat MQTT's '+' and '#' specially (fnmatch's '[' never occurs here)
            if fnmatch.fnmatchcase(arn, r.replace(THING, thing)):
                return True
    return False


@pytest.mark.parametrize("root", ["pumpwatch", "plant/7"])
@pytest.mark.parametrize("role", ROLE_NAMES)
def test_mosquitto_and_aws_iot_grant_the_same(role: Role, root: str) -> None:
    me = "gw-1" if role == "device" else f"pumpwatch-{role}"
    cfg = dynsec_config({me: role}, root=root)
    policy = role_policy(role, root)
    disagree = [
        (action, topic)
        for action in ("publish", "subscribe", "receive")
        for topic in probes(root, me)
        if dynsec_allows(cfg, me, action, topic) != iot_allows(policy, me, action, topic)
    ]
    assert disagree == []
    # and each grants what the table says, no more: a device only its own tree and acks
    allowed = {(a, t) for a in ("publish", "subscribe", "receive") for t in probes(root, me)
               if dynsec_allows(cfg, me, a, t)}
    if role == "device":
        assert allowed == {("publish", f"{root}/devices/gw-1/reports"),
                           ("publish", f"{root}/devices/gw-1/status"),
                           ("subscribe", f"{root}/acks/gw-1"), ("receive", f"{root}/acks/gw-1")}
    if role == "dashboard":  # it publishes the operators' alarm changes, nothing else
        assert {t for a, t in allowed if a == "publish"} == {f"{root}/sites/s1/pumps/p1/alarms"}
    if role != "consumer":
        assert not any(t.startswith("$share/") for _, t in allowed)
        assert not any(a == "publish" and "/acks/" in t for a, t in allowed)


def test_retain_is_granted_only_on_status_and_results() -> None:
    retained = {r: [g.filter for g in grants(r, root="pumpwatch", name="n") if g.action == "retain"]
                for r in ROLE_NAMES}
    assert retained == {"device": ["pumpwatch/devices/n/status"],
                        "consumer": ["pumpwatch/sites/+/pumps/+/condition"], "dashboard": [],
                        "operator": []}
    assert iot_allows(device_policy(), "gw", "retain", "pumpwatch/devices/gw/status")
    assert not iot_allows(device_policy(), "gw", "retain", "pumpwatch/devices/gw/reports")


@pytest.mark.parametrize("root", ["pumpwatch", "plant/7"])
@pytest.mark.parametrize("role", ROLE_NAMES)
def test_mosquitto_retains_exactly_where_aws_iot_does(role: Role, root: str) -> None:
    """On Mosquitto a retained publish needs the publish ACL (dynamic security) and one of
    the retain guard's filters (%u = the client's own name); on AWS IoT iot:Publish and
    iot:RetainPublish. The two agree on every probe topic, for every role."""
    me = "gw-1" if role == "device" else f"pumpwatch-{role}"
    cfg = dynsec_config({me: role}, root=root)
    policy = role_policy(role, root)
    guard = [f.replace("%u", me) for f in retain_filters(root=root)]
    for topic in probes(root, me):
        if "+" in topic or "#" in topic:
            continue  # a PUBLISH names a topic, not a filter
        mosquitto = dynsec_allows(cfg, me, "publish", topic) and any(
            mqtt_match(f, topic) for f in guard)
        aws = iot_allows(policy, me, "publish", topic) and iot_allows(policy, me, "retain", topic)
        assert mosquitto == aws, (role, topic)
    assert retain_filters(root=root) == [f"{root}/devices/%u/status",
                                         f"{root}/sites/+/pumps/+/condition"]


def test_the_committed_policy_is_rendered_from_the_table() -> None:
    assert json.loads((ROOT / "deploy" / "aws" / "iot-policy.json").read_text()) == device_policy()


def test_the_broker_file_is_rendered_from_the_table() -> None:
    who: dict[str, Role] = {"gw-1": "device", "consumer": "consumer", "dash": "dashboard"}
    cfg = json.loads(security_json(who))
    assert cfg == dynsec_config(who)
    assert cfg["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                       "subscribe": False, "unsubscribe": True}
    assert {c["username"] for c in cfg["clients"]} == set(who)


@pytest.mark.parametrize("bad", ["a/b", "+", "x#", "", "a b", "x" * 65, "gw\n"])
def test_names_and_roots_outside_the_rule_cannot_be_rendered(bad: str) -> None:
    with pytest.raises(RoleError):
        dynsec_config({bad: "device"})
    with pytest.raises(RoleError):
        dynsec_config({"gw": "device"}, root=bad if bad != "a/b" else "a/+")


def test_without_a_compiler_the_prebuilt_retain_guard_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pumpwatch image has no compiler: its prebuilt plugin ($PUMPWATCH_RETAIN_GUARD)
    is copied into the broker's directory; with neither, no guard (and the caller says so)."""
    from pumpwatch.mosquitto_conf import RETAIN_GUARD_NAME, build_retain_guard

    built = build_retain_guard(tmp_path)  # this machine has a compiler (system-deps)
    assert built is not None
    prebuilt = tmp_path / "prebuilt.so"
    built.rename(prebuilt)
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.delenv("PUMPWATCH_RETAIN_GUARD", raising=False)
    out = tmp_path / "broker"
    out.mkdir()
    assert build_retain_guard(out) is None
    monkeypatch.setenv("PUMPWATCH_RETAIN_GUARD", str(prebuilt))
    got = build_retain_guard(out)
    assert got == out / RETAIN_GUARD_NAME
    assert got.read_bytes() == prebuilt.read_bytes()
