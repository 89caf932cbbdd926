"""The AWS deployment against moto in server mode (one server per session, free port).

What moto cannot do is not faked here: its CloudFormation skips resource types it does
not implement with only a warning, so every stack is created under
:class:`~tests.infra.moto_server.MotoWarnings` and a skipped type not on
:data:`LINT_ONLY` fails the test (those are checked by cfn-lint only,
tests/test_aws_templates.py). moto has no UpdateEndpoint, so the registry flow here
creates a fresh endpoint; updates are tested with botocore's Stubber
(tests/test_aws_sagemaker_rollout.py).
"""

from __future__ import annotations

import ast
import json
import re
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from cloud import pki
from cloud.aws_iot import provision_device
from cloud.aws_stacks import deploy_stack, describe_stack
from models.registry.deployer import registry_from_outputs, stack_outputs
from models.serving.bundle import write_bundle
from pumpwatch.cli import build_parser
from pumpwatch.commands import aws as aws_cmd
from tests.infra.fixtures import MOSQUITTO_MISSING
from tests.infra.mosquitto import Mosquitto, mosquitto_available
from tests.infra.moto_server import ACCOUNT, MotoWarnings, cfn_lint_missing, client
from tests.infra.require import need

ROOT = Path(__file__).resolve().parent.parent
EVENT = ROOT / "tests" / "fixtures" / "aws" / "model-package-approved.json"

#: resource types moto's CloudFormation does not implement: linted only (cfn-lint)
LINT_ONLY = {
    "AWS::IoT::ThingGroup",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::CloudWatch::Alarm",
    "AWS::SageMaker::ModelPackageGroup",
}
SUBNET, SG = "subnet-0123456789abcdef0", "sg-0123456789abcdef0"
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:pumpwatch"
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS::")


def _document(doc: Any) -> Any:
    """A policy document as moto returns it: moto's CloudFormation stores some as Python's
    repr of the parsed template (AWS returns JSON), so both are read."""
    if isinstance(doc, dict):
        return doc
    try:
        return json.loads(doc)
    except ValueError:
        return ast.literal_eval(doc)


def params(name: str, suffix: str) -> dict[str, str]:
    return {
        "iot": {"PolicyPrefix": f"pw{suffix}", "ThingTypeName": f"gw{suffix}"},
        "sagemaker": {"ImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pumpwatch-model:1",
                      "ArtifactBucket": f"art{suffix}", "ReaderAccounts": "111122223333",
                      "ModelPackageGroupName": f"pumps{suffix}"},
        "consumer": {"ImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pumpwatch:1",
                     "ConsumerConfig": '[mqtt]\nhost = "iot.example"\n',
                     "StoreUrl": "postgresql://pumpwatch@db.example:5432/pumpwatch",
                     "StorePasswordSecretArn": f"{SECRET}-pg", "TlsSecretArn": f"{SECRET}-tls",
                     "Subnets": SUBNET, "SecurityGroups": SG},
        "approval": {"ImageUri": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/pumpwatch:1",
                     "SageMakerStackName": f"pw-sagemaker{suffix}",
                     "ModelPackageGroupName": f"pumps{suffix}",
                     "ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/sm",
                     "Subnets": SUBNET, "SecurityGroups": SG},
    }[name]


@pytest.fixture(scope="module")
def stacks(moto_server: str) -> dict[str, Any]:
    """Every template created as a stack once per module; what moto skipped, per template."""
    suffix = uuid.uuid4().hex[:6]
    cfn = client(moto_server, "cloudformation")
    made: dict[str, Any] = {"suffix": suffix, "skipped": {}}
    for name in ("iot", "sagemaker", "consumer", "approval"):
        with MotoWarnings() as w:
            assert deploy_stack(cfn, name, f"pw-{name}{suffix}", params(name, suffix)) == "created"
        made["skipped"][name] = w.skipped
        made[name] = describe_stack(cfn, f"pw-{name}{suffix}")
        assert made[name]["status"] == "CREATE_COMPLETE", made[name]
    return made


def test_moto_skips_only_the_types_on_the_lint_only_list(stacks: dict[str, Any]) -> None:
    skipped = set().union(*stacks["skipped"].values())
    assert skipped <= LINT_ONLY, f"moto skipped {skipped - LINT_ONLY}: add a test or lint-only"
    assert skipped == LINT_ONLY, f"{LINT_ONLY - skipped} is created by moto now: test it"


def test_the_iot_stack_creates_the_thing_type_and_every_role_policy(
    moto_server: str, stacks: dict[str, Any],
) -> None:
    from cloud.roles import ROLE_NAMES, iot_policy

    iot, s = client(moto_server, "iot"), stacks["suffix"]
    assert iot.describe_thing_type(thingTypeName=f"gw{s}")["thingTypeName"] == f"gw{s}"
    for role in ROLE_NAMES:
        doc = iot.get_policy(policyName=f"pw{s}-{role}")["policyDocument"]
        assert _document(doc) == iot_policy(role)


def test_the_sagemaker_stack_creates_model_capture_config_and_endpoint(
    moto_server: str, stacks: dict[str, Any],
) -> None:
    sm, out = client(moto_server, "sagemaker"), stacks["sagemaker"]["outputs"]
    ep = sm.describe_endpoint(EndpointName=out["EndpointName"])
    config = sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == out["VariantName"] == "AllTraffic"
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["DestinationS3Uri"] == out["CaptureS3Uri"]
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Mode"] == "MultiModel"
    assert model["ExecutionRoleArn"] == out["ExecutionRoleArn"]
    bucket = out["CaptureS3Uri"].split("/")[2]
    enc = client(moto_server, "s3").get_bucket_encryption(Bucket=bucket)
    rules = enc["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert out["CanaryPercent"] == "10" and out["BakeSeconds"] == "600"


def test_the_consumer_stack_runs_the_consumer_command_on_fargate(
    moto_server: str, stacks: dict[str, Any],
) -> None:
    ecs, out = client(moto_server, "ecs"), stacks["consumer"]["outputs"]
    td = ecs.describe_task_definition(taskDefinition=out["TaskDefinitionArn"])["taskDefinition"]
    (c,) = td["containerDefinitions"]
    assert build_parser().parse_args(c["command"][1:]).func is aws_cmd.run_ecs_consumer
    assert {s["name"] for s in c["secrets"]} == {
        "PUMPWATCH_CONSUMER_CONFIG", "PUMPWATCH_TLS_CA", "PUMPWATCH_TLS_CERT",
        "PUMPWATCH_TLS_KEY", "PGPASSWORD"}
    # moto's CloudFormation drops the task definition's RequiresCompatibilities, NetworkMode
    # and roles (they are linted only); the task role is read through the stack's resources
    svc = ecs.describe_services(cluster=out["ClusterName"], services=[out["ServiceName"]])
    assert svc["services"][0]["desiredCount"] == 2  # (moto also drops the service's LaunchType)
    iam = client(moto_server, "iam")
    role = client(moto_server, "cloudformation").describe_stack_resource(
        StackName=f"pw-consumer{stacks['suffix']}", LogicalResourceId="TaskRole",
    )["StackResourceDetail"]["PhysicalResourceId"]
    (name,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
    doc = _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    actions = {a for st in doc["Statement"] for a in st["Action"]}
    assert actions == {"sagemaker:InvokeEndpoint", "cloudwatch:PutMetricData"}
    ssm = client(moto_server, "ssm")
    ref = next(s["valueFrom"] for s in c["secrets"] if s["name"] == "PUMPWATCH_CONSUMER_CONFIG")
    assert ssm.get_parameter(Name=ref)["Parameter"]["Value"].startswith("[mqtt]")
    logs = client(moto_server, "logs")
    assert logs.describe_log_groups(logGroupNamePrefix=out["LogGroupName"])["logGroups"]


def test_the_approval_rule_matches_approvals_of_the_group(
    moto_server: str, stacks: dict[str, Any],
) -> None:
    events, s = client(moto_server, "events"), stacks["suffix"]
    rule = events.describe_rule(Name=stacks["approval"]["outputs"]["RuleName"])
    pattern = json.loads(rule["EventPattern"])
    assert pattern["detail"] == {"ModelPackageGroupName": [f"pumps{s}"],
                                 "ModelApprovalStatus": ["Approved"]}
    # moto answers TestEventPattern with nothing: its own matcher (the one PutEvents uses)
    from moto.events.models import EventPattern

    matcher = EventPattern.load(rule["EventPattern"])
    event = json.loads(EVENT.read_text().replace("GROUP", f"pumps{s}"))
    assert matcher.matches_event(event)
    for field, other in (("ModelApprovalStatus", "Rejected"), ("ModelPackageGroupName", "x")):
        changed = json.loads(json.dumps(event))
        changed["detail"][field] = other
        assert not matcher.matches_event(changed), field


def _transformed_command(template_text: str, event: dict[str, Any], subs: dict[str, str]) -> Any:
    """EventBridge's input transformer applied to ``event``: the container's command."""
    need("cfn-lint", cfn_lint_missing())
    from cfnlint.decode import decode_str

    t, _ = decode_str(template_text)
    target = t["Resources"]["ApprovedRule"]["Properties"]["Targets"][0]
    tr = target["InputTransformer"]
    text = re.sub(r"\$\{(\w+)\}", lambda m: subs[m.group(1)], tr["InputTemplate"]["Fn::Sub"])
    for key, path in tr["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        text = text.replace(f'"<{key}>"', json.dumps(str(value)))  # quoted: the raw value
        text = text.replace(f"<{key}>", json.dumps(value))  # bare: the JSON value
    (override,) = json.loads(text)["containerOverrides"]
    return override["command"]


def test_approval_event_to_deployer_creates_model_config_and_endpoint(
    moto_server: str, stacks: dict[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Register (metrics + drift-check baselines) -> approve -> the deployer, started with the
    command the rule's input transformer makes of a sample approval event, against moto.

    moto has no UpdateEndpoint, so the deployer deploys to a new endpoint (CreateEndpoint):
    the stack's own endpoint would be updated (that path: the Stubber tests)."""
    s = stacks["suffix"]
    sm, s3, cfn = (client(moto_server, x) for x in ("sagemaker", "s3", "cloudformation"))
    s3.create_bucket(Bucket=f"art{s}")
    group = f"pumps{s}"
    reg = registry_from_outputs(sm, s3, stack_outputs(cfn, f"pw-sagemaker{s}"))
    baselines = {"ModelQuality": {"Statistics": {
        "ContentType": "application/json", "S3Uri": f"s3://art{s}/pumpwatch/stats.json"}}}
    pkg = reg.register(group, write_bundle(tmp_path / "b", model_version="dev"),
                       metrics={"macro_f1": 0.91}, drift_check_baselines=baselines)
    described = sm.describe_model_package(ModelPackageName=pkg.arn)
    assert described["DriftCheckBaselines"] == baselines
    assert reg.describe(group, pkg.version).metrics == {"macro_f1": 0.91}
    assert reg.approve(group, pkg.version, "ok").status == "Approved"

    event = json.loads(EVENT.read_text().replace("GROUP", group))
    command = _transformed_command(
        template_path_text("approval"), event,
        {"SageMakerStackName": f"pw-sagemaker{s}", "DeployMode": "canary"},
    )
    assert command[0] == "pumpwatch"
    args = build_parser().parse_args(command[1:])
    assert args.func is aws_cmd.run_deploy_approved and args.group == group
    endpoint = f"pw-flow-{s}"
    cfn_fresh = _OutputsOverride(cfn, {"EndpointName": endpoint})
    assert aws_cmd.run_deploy_approved(args, clients=(cfn_fresh, sm, s3)) == 0
    assert f"endpoint {endpoint} -> {group}/1 (canary)" in capsys.readouterr().out

    ep = sm.describe_endpoint(EndpointName=endpoint)
    config = sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"  # the stack's, as in every later config
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == reg.capture_s3_uri
    model = sm.describe_model(ModelName=variant["ModelName"])
    container = model.get("Containers", [model.get("PrimaryContainer")])[0]
    assert container["ModelPackageName"] == pkg.arn
    assert container["Environment"] == {"PUMPWATCH_MODEL_VERSION": f"{group}/1"}
    reg.endpoint = endpoint
    (record,) = reg.deployments(group)
    assert (record.version, record.mode, record.actor) == (1, "all", "approval")
    assert event["id"] in record.reason


def template_path_text(name: str) -> str:
    from cloud.aws_stacks import template_path

    return template_path(name).read_text()


class _OutputsOverride:
    """A CloudFormation client whose DescribeStacks answers with some outputs replaced."""

    def __init__(self, cfn: Any, replace: dict[str, str]) -> None:
        self.cfn, self.replace = cfn, replace

    def describe_stacks(self, **kw: Any) -> Any:
        r = self.cfn.describe_stacks(**kw)
        for o in r["Stacks"][0]["Outputs"]:
            o["OutputValue"] = self.replace.get(o["OutputKey"], o["OutputValue"])
        return r


def test_a_device_registered_with_its_local_ca_certificate_connects_to_mosquitto(
    moto_server: str, stacks: dict[str, Any], tmp_path: Path,
) -> None:
    need("mosquitto", MOSQUITTO_MISSING if not mosquitto_available() else None)
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    pkidir = tmp_path / "pki"
    pki.init_ca(pkidir)
    name = f"gw-{stacks['suffix']}"
    issued = pki.issue(pkidir, "device", name)
    iot = client(moto_server, "iot")
    got = provision_device(iot, name, tmp_path / "out", policy_name=f"pw{stacks['suffix']}-device",
                           cert=issued.cert, key=issued.key)
    assert (got.cert, got.key) == (tmp_path / "out/devices" / f"{name}.crt",
                                   tmp_path / "out/devices" / f"{name}.key")
    assert not got.policy_created  # the IoT stack made it
    cert = iot.describe_certificate(certificateId=got.certificate_id)["certificateDescription"]
    assert cert["status"] == "ACTIVE" and cert["certificatePem"] == issued.cert.read_text()
    assert iot.list_thing_principals(thingName=name)["principals"] == [got.certificate_arn]
    assert got.key.stat().st_mode & 0o077 == 0

    with Mosquitto(tmp_path / "mosquitto", tls_pki=pkidir, tls_roles={name: "device"}) as broker:
        acked: dict[int, int] = {}
        connected, done = threading.Event(), threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=str(pkidir / "ca.crt"), certfile=str(got.cert), keyfile=str(got.key),
                  cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if rc == 0 else None

        def on_publish(_c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
            acked[mid] = rc.value
            done.set()

        c.on_publish = on_publish
        c.connect(broker.host, broker.port)
        c.loop_start()
        try:
            assert connected.wait(10), broker.log_tail()
            info = c.publish(f"pumpwatch/devices/{name}/status", b"online", qos=1)
            assert done.wait(10)
            assert acked[info.mid] < 0x80  # accepted (0 or 16: no subscribers)
        finally:
            c.loop_stop()
            c.disconnect()


def test_the_stack_commands_create_and_describe(
    moto_server: str, capsys: pytest.CaptureFixture[str],
) -> None:
    cfn, s = client(moto_server, "cloudformation"), uuid.uuid4().hex[:6]
    parser = build_parser()
    args = parser.parse_args(["aws", "deploy-stack", "iot", "--stack-name", f"cli{s}",
                              "-p", f"PolicyPrefix=cli{s}", "-p", f"ThingTypeName=cli{s}"])
    assert aws_cmd.run_deploy_stack(args, client=cfn) == 0
    assert f"stack cli{s} (iot): created" in capsys.readouterr().out
    args = parser.parse_args(["aws", "describe-stack", f"cli{s}", "--json"])
    assert aws_cmd.run_describe_stack(args, client=cfn) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["status"] == "CREATE_COMPLETE"
    assert got["outputs"]["ThingTypeName"] == f"cli{s}"  # (moto's Ref of a policy: a repr)
    # (delete-stack is not exercised: moto fails deleting the stack's IoT policies with an
    # error body botocore cannot parse)
    args = parser.parse_args(["aws", "describe-stack", f"nope{s}"])
    assert aws_cmd.run_describe_stack(args, client=cfn) == 1
    assert f"nope{s}" in capsys.readouterr().err


def test_deploy_approved_from_an_event_file_deploys_nothing_for_a_rejection(
    moto_server: str, stacks: dict[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = stacks["suffix"]
    clients = tuple(client(moto_server, x) for x in ("cloudformation", "sagemaker", "s3"))
    event = json.loads(EVENT.read_text().replace("GROUP", f"pumps{s}"))
    event["detail"]["ModelApprovalStatus"] = "Rejected"
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    parser = build_parser()
    args = parser.parse_args(["aws", "deploy-approved", "--stack", f"pw-sagemaker{s}",
                              "--event", str(path)])
    assert aws_cmd.run_deploy_approved(args, clients=clients) == 0
    assert "not an approval: nothing deployed" in capsys.readouterr().out
    args = parser.parse_args(["aws", "deploy-approved", "--stack", f"pw-sagemaker{s}",
                              "--group", "g"])
    assert aws_cmd.run_deploy_approved(args, clients=clients) == 2  # no version: refused
    path.write_text(json.dumps({"source": "aws.s3", "detail-type": "Object Created"}))
    args = parser.parse_args(["aws", "deploy-approved", "--stack", f"pw-sagemaker{s}",
                              "--event", str(path)])
    assert aws_cmd.run_deploy_approved(args, clients=clients) == 1
    assert "not a 'SageMaker Model Package State Change' event" in capsys.readouterr().err
    path.write_text("{not json")
    assert aws_cmd.run_deploy_approved(args, clients=clients) == 2
    assert "cannot read the event" in capsys.readouterr().err
