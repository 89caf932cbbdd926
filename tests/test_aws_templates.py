"""deploy/aws/ templates: cfn-lint, the security properties, the IoT policies = the role table,
and the consumer container (Dockerfile paths, the ECS command) - no AWS needed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cloud.aws_ecs import MaterializeError, materialize
from cloud.aws_stacks import TEMPLATES, iot_template, template_path
from cloud.roles import ROLE_NAMES, THING, iot_policy
from pumpwatch.cli import build_parser
from pumpwatch.commands import aws as aws_cmd
from tests.infra.moto_server import cfn_lint_missing
from tests.infra.require import need

ROOT = Path(__file__).resolve().parent.parent
#: actions that have no resource-level permissions in IAM: '*' resources allowed only for them
RESOURCE_STAR_OK = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
                    "sagemaker:ListEndpointConfigs"}


def load(name: str) -> dict[str, Any]:
    need("cfn-lint", cfn_lint_missing())
    from cfnlint.decode import decode_str

    template, errors = decode_str(template_path(name).read_text())
    assert not errors, errors
    return dict(template)


def policies(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(resource, policy document)`` of every IAM role policy and IoT policy."""
    out = []
    for rid, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            out += [(f"{rid}/{p['PolicyName']}", p["PolicyDocument"]) for p in props["Policies"]]
        elif res["Type"] == "AWS::IoT::Policy":
            out.append((rid, props["PolicyDocument"]))
    return out


def as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_passes_cfn_lint(name: str) -> None:
    need("cfn-lint", cfn_lint_missing())
    from cfnlint.api import lint_file

    matches = lint_file(template_path(name))
    assert not matches, "\n".join(str(m) for m in matches)


def test_the_iot_template_is_generated_from_the_role_table() -> None:
    assert template_path("iot").read_text() == iot_template()
    t = load("iot")
    for role in ROLE_NAMES:
        assert t["Resources"][f"{role.capitalize()}Policy"]["Properties"]["PolicyDocument"] == (
            iot_policy(role)
        )
    assert json.loads((ROOT / "deploy/aws/iot-policy.json").read_text()) == iot_policy("device")


@pytest.mark.parametrize("name", TEMPLATES)
def test_no_policy_grants_every_action_and_star_resources_only_where_iam_has_no_other(
    name: str,
) -> None:
    found = policies(load(name))
    assert found, f"{name} has no policies?"
    for where, doc in found:
        for st in doc["Statement"]:
            assert st["Effect"] == "Allow", where
            actions = as_list(st["Action"])
            for a in actions:
                assert a != "*" and not a.endswith(":*") and "*" not in a, (where, a)
            if "*" in as_list(st["Resource"]):
                assert set(actions) <= RESOURCE_STAR_OK, (where, actions)
                if "cloudwatch:PutMetricData" in actions:
                    assert "cloudwatch:namespace" in json.dumps(st.get("Condition")), where


def test_the_device_policy_is_bound_to_the_connecting_thing() -> None:
    doc = load("iot")["Resources"]["DevicePolicy"]["Properties"]["PolicyDocument"]
    for st in doc["Statement"]:
        for r in as_list(st["Resource"]):
            assert THING in r, (st["Sid"], r)  # connect, publish, subscribe: its own name only
    connect = next(s for s in doc["Statement"] if s["Action"] == "iot:Connect")
    assert connect["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}


def test_the_consumer_may_invoke_only_its_endpoint_and_read_only_its_secrets() -> None:
    t = load("consumer")
    task = dict(policies({"Resources": {"T": t["Resources"]["TaskRole"]}}))["T/consume"]
    invoke = next(s for s in task["Statement"] if s["Action"] == ["sagemaker:InvokeEndpoint"])
    assert invoke["Resource"]["Fn::Sub"].endswith(":endpoint/${EndpointName}")
    assert {a for s in task["Statement"] for a in s["Action"]} == {
        "sagemaker:InvokeEndpoint", "cloudwatch:PutMetricData"}
    execution = dict(policies({"Resources": {"E": t["Resources"]["ExecutionRole"]}}))
    secrets = next(s for s in execution["E/start-consumer"]["Statement"]
                   if s["Sid"] == "ItsSecrets")
    assert secrets["Resource"] == [{"Ref": "TlsSecretArn"}, {"Ref": "StorePasswordSecretArn"}]
    assert "DBInstance" not in json.dumps(t) and "DBCluster" not in json.dumps(t)


def test_encryption_where_offered() -> None:
    sm = load("sagemaker")["Resources"]
    enc = sm["CaptureBucket"]["Properties"]["BucketEncryption"]
    rule = enc["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert rule["SSEAlgorithm"] == "aws:kms"
    assert all(sm["CaptureBucket"]["Properties"]["PublicAccessBlockConfiguration"].values())
    # secrets only by reference (Secrets Manager encrypts them); the SSM parameter holds no
    # secret (no password in the store URL: it comes from Secrets Manager as PGPASSWORD)
    consumer = load("consumer")
    env = consumer["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {s["Name"] for s in env["Secrets"]} >= {"PGPASSWORD", "PUMPWATCH_TLS_KEY"}
    assert not [e for e in env["Environment"] if "KEY" in e["Name"] or "PASS" in e["Name"]]


def test_the_endpoint_rolls_out_behind_canary_guardrails_with_the_alarms_defined_here() -> None:
    r = load("sagemaker")["Resources"]
    dc = r["Endpoint"]["Properties"]["DeploymentConfig"]
    routing = dc["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY" and routing["CanarySize"]["Type"] == "CAPACITY_PERCENT"
    alarms = [a["AlarmName"]["Ref"] for a in dc["AutoRollbackConfiguration"]["Alarms"]]
    assert {r[a]["Properties"]["MetricName"] for a in alarms} == {"Invocation5XXErrors",
                                                                  "ModelLatency"}
    policy = r["ScalingPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance")
    assert r["Model"]["Properties"]["PrimaryContainer"]["Mode"] == "MultiModel"
    capture = r["FirstEndpointConfig"]["Properties"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True


def test_the_consumer_dockerfile_copies_only_paths_that_exist() -> None:
    text = (ROOT / "docker" / "pumpwatch.Dockerfile").read_text()
    # (COPY --from=STAGE copies from an earlier build stage, not from the context)
    copies = [line.split()[1:-1] for line in text.splitlines()
              if line.startswith("COPY ") and "--from=" not in line]
    assert len(copies) >= 5
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such path"


def test_the_ecs_commands_are_pumpwatch_commands() -> None:
    t = load("consumer")
    cmd = t["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Command"]
    assert cmd[0] == "pumpwatch"
    args = build_parser().parse_args(cmd[1:])
    assert args.func is aws_cmd.run_ecs_consumer
    deployer = load("approval")["Resources"]["TaskDefinition"]["Properties"]
    dcmd = deployer["ContainerDefinitions"][0]["Command"]
    assert dcmd[:3] == ["pumpwatch", "aws", "deploy-approved"]


def test_materialize_writes_config_and_identity_privately(tmp_path: Path) -> None:
    env = {
        "PUMPWATCH_CONSUMER_CONFIG": '[mqtt]\nhost = "a.iot.amazonaws.com"\nport = 8883\n'
        '[endpoint]\nname = "pumpwatch"\n',
        "PUMPWATCH_TLS_CA": "CA", "PUMPWATCH_TLS_CERT": "CERT", "PUMPWATCH_TLS_KEY": "KEY",
        "PUMPWATCH_STORE_URL": "postgresql://pw@db:5432/pumpwatch",
        "HOSTNAME": "ip-10-0-1-23.ec2.internal",
    }
    import tomllib

    path = materialize(env, tmp_path / "run")
    data = tomllib.loads(path.read_text())
    assert data["store"]["url"] == "postgresql://pw@db:5432/pumpwatch"
    assert data["mqtt"]["client_id"] == "pumpwatch-consumer-ip-10-0-1-23"  # one per task
    assert data["mqtt"]["host"] == "a.iot.amazonaws.com" and data["endpoint"]["name"] == "pumpwatch"
    key = Path(data["mqtt"]["tls"]["key"])
    assert key.read_text() == "KEY" and key.stat().st_mode & 0o077 == 0
    with pytest.raises(MaterializeError, match="PUMPWATCH_TLS_CA, PUMPWATCH_TLS_CERT"):
        materialize({"PUMPWATCH_CONSUMER_CONFIG": ""}, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written before every problem is named


def test_deploy_stack_refuses_malformed_parameters_before_calling_aws(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["aws", "deploy-stack", "iot", "-p", "novalue", "-p", "=x"])
    assert aws_cmd.run_deploy_stack(args, client=object()) == 2
    err = capsys.readouterr().err
    assert re.search(r"'novalue', '=x'", err), err


def test_the_materialized_config_is_one_the_consumer_loads(tmp_path: Path) -> None:
    from cloud.consumer import load_config

    text = (ROOT / "docker" / "compose" / "cloud.toml").read_text()
    text = text.replace('endpoint_url = "http://model-server:8080"\n', "")  # SageMaker's
    env = {"PUMPWATCH_CONSUMER_CONFIG": text, "PUMPWATCH_TLS_CA": "CA",
           "PUMPWATCH_TLS_CERT": "CERT", "PUMPWATCH_TLS_KEY": "KEY",
           "PUMPWATCH_STORE_URL": "postgresql://pw@db.example:5432/pumpwatch",
           "HOSTNAME": "ip-10-0-1-23"}
    config = load_config(materialize(env, tmp_path / "run"))
    assert config.store.url == "postgresql://pw@db.example:5432/pumpwatch"
    assert config.mqtt.client_id == "pumpwatch-compose-consumer-ip-10-0-1-23"
    assert config.mqtt.tls is not None
    assert Path(config.mqtt.tls.key or "").read_text() == "KEY"
