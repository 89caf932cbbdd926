"""`pumpwatch aws provision-device` against botocore's Stubber (no AWS account here):
the exact calls, in order, with the exact parameters; files and permissions; rollback."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cloud.aws_iot import ProvisionError, device_policy, provision_device
from pumpwatch.commands.aws import run_provision

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com"
ARN = "arn:aws:iot:eu-west-1:123456789012:cert/" + "c" * 64
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"


def iot() -> Any:
    return boto3.client(
        "iot", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def expect_until_certificate(st: Stubber, name: str, *, policy: bool, thing: bool) -> None:
    st.add_response(
        "describe_endpoint", {"endpointAddress": ENDPOINT}, {"endpointType": "iot:Data-ATS"}
    )
    if policy:
        st.add_response(
            "get_policy",
            {"policyName": "pumpwatch-device", "policyDocument": json.dumps(device_policy())},
            {"policyName": "pumpwatch-device"},
        )
    else:
        st.add_client_error("get_policy", "ResourceNotFoundException", http_status_code=404)
        st.add_response(
            "create_policy",
            {"policyName": "pumpwatch-device"},
            {"policyName": "pumpwatch-device", "policyDocument": json.dumps(device_policy())},
        )
    if thing:
        st.add_response("describe_thing", {"thingName": name}, {"thingName": name})
        st.add_response("list_thing_principals", {"principals": []}, {"thingName": name})
    else:
        st.add_client_error("describe_thing", "ResourceNotFoundException", http_status_code=404)
        st.add_response("create_thing", {"thingName": name}, {"thingName": name})
    st.add_response(
        "create_keys_and_certificate",
        {
            "certificateArn": ARN,
            "certificateId": "c" * 64,
            "certificatePem": PEM,
            "keyPair": {"PublicKey": "pub", "PrivateKey": KEY},
        },
        {"setAsActive": True},
    )


def test_the_committed_policy_is_the_one_provisioned() -> None:
    committed = json.loads((ROOT / "deploy" / "aws" / "iot-policy.json").read_text())
    assert committed == device_policy()
    text = json.dumps(committed)
    # least privilege: no wildcard actions or topics, own thing only; it subscribes to and
    # receives only its own confirmations
    actions = {s["Action"] for s in committed["Statement"]}
    assert actions == {"iot:Connect", "iot:Publish", "iot:RetainPublish", "iot:Subscribe",
                       "iot:Receive"}
    assert not any("*" in s["Action"] for s in committed["Statement"])
    assert "/*" not in text.replace(":*:*:", "")
    thing = "${iot:Connection.Thing.ThingName}"
    assert f"client/{thing}" in text
    by = {s["Action"]: s["Resource"] for s in committed["Statement"]}
    assert by["iot:Subscribe"] == f"arn:aws:iot:*:*:topicfilter/pumpwatch/acks/{thing}"
    assert by["iot:Receive"] == f"arn:aws:iot:*:*:topic/pumpwatch/acks/{thing}"


@pytest.mark.parametrize(("policy", "thing"), [(False, False), (True, True)])
def test_provision_device_calls_and_files(tmp_path: Path, policy: bool, thing: bool) -> None:
    client = iot()
    with Stubber(client) as st:
        expect_until_certificate(st, "gw-7", policy=policy, thing=thing)
        st.add_response("attach_policy", {}, {"policyName": "pumpwatch-device", "target": ARN})
        st.add_response("attach_thing_principal", {}, {"thingName": "gw-7", "principal": ARN})
        got = provision_device(client, "gw-7", tmp_path)
        st.assert_no_pending_responses()
    assert got.endpoint == ENDPOINT and got.certificate_arn == ARN
    assert (got.policy_created, got.thing_created) == (not policy, not thing)
    assert got.key == tmp_path / "devices" / "gw-7.key" and got.key.read_text() == KEY
    assert stat.S_IMODE(got.key.stat().st_mode) == 0o600
    assert got.cert.read_text() == PEM
    assert 'transport = "awsiot"' in got.edge_toml() and ENDPOINT in got.edge_toml()


def test_a_thing_with_a_certificate_is_refused(tmp_path: Path) -> None:
    client = iot()
    with Stubber(client) as st:
        st.add_response("describe_endpoint", {"endpointAddress": ENDPOINT})
        st.add_response("get_policy", {"policyDocument": json.dumps(device_policy())})
        st.add_response("describe_thing", {"thingName": "gw-7"})
        st.add_response("list_thing_principals", {"principals": [ARN]})
        with pytest.raises(ProvisionError, match="one certificate per thing"):
            provision_device(client, "gw-7", tmp_path)
        st.assert_no_pending_responses()
    assert not (tmp_path / "devices").exists()


def test_failed_attach_revokes_the_new_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = iot()
    with Stubber(client) as st:
        expect_until_certificate(st, "gw-7", policy=True, thing=False)
        st.add_response("attach_policy", {})
        st.add_client_error("attach_thing_principal", "ThrottlingException", http_status_code=429)
        st.add_response("detach_policy", {}, {"policyName": "pumpwatch-device", "target": ARN})
        st.add_response(
            "update_certificate", {}, {"certificateId": "c" * 64, "newStatus": "INACTIVE"}
        )
        st.add_response("delete_certificate", {}, {"certificateId": "c" * 64})
        args = argparse.Namespace(name="gw-7", dir=str(tmp_path), policy_name="pumpwatch-device")
        assert run_provision(args, client=client) == 1
        st.assert_no_pending_responses()
    assert "AttachThingPrincipal failed" in capsys.readouterr().err
    assert not (tmp_path / "devices" / "gw-7.key").exists()


def test_cli_prints_endpoint_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = iot()
    with Stubber(client) as st:
        expect_until_certificate(st, "gw-8", policy=True, thing=False)
        st.add_response("attach_policy", {})
        st.add_response("attach_thing_principal", {})
        args = argparse.Namespace(name="gw-8", dir=str(tmp_path), policy_name="pumpwatch-device")
        assert run_provision(args, client=client) == 0
    out = capsys.readouterr().out
    assert ENDPOINT in out and "[mqtt.tls]" in out
    bad = argparse.Namespace(name="gw.8", dir=str(tmp_path), policy_name="p")
    assert run_provision(bad, client=client) == 2
