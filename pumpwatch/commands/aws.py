"""``pumpwatch aws``: devices on AWS IoT Core, the deployment's stacks, their deployer.

``provision-device NAME``: thing + certificate + policy (:mod:`cloud.aws_iot`,
docs/aws-iot.md). ``deploy-stack|describe-stack|delete-stack``: the CloudFormation
templates of ``deploy/aws/`` (:mod:`cloud.aws_stacks`, docs/aws.md).
``deploy-approved``: the approval deployer (:mod:`models.registry.deployer`).
``ecs-consumer``: the consumer's start inside its ECS task (:mod:`cloud.aws_ecs`).
Wiring only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ._roles import Role

ROLE = Role("cloud", ("boto3",))
THING_RE = re.compile(r"^[A-Za-z0-9:_-]{1,64}\Z")  # the name rule, without "." (AWS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("aws", help="AWS: provision devices, deploy the stacks")
    acts = p.add_subparsers(dest="aws_command", metavar="ACTION", required=True)
    d = acts.add_parser(
        "provision-device",
        help="create a thing, its certificate and key, attach the device policy",
        description="Create (or reuse) the least-privilege device policy, create thing NAME, "
        "a new active certificate and key (written to DIR/devices/NAME.crt|.key, key 0600), "
        "attach both; print the account's IoT endpoint and the edge config's [mqtt] part. "
        "Uses the usual AWS credential chain (AWS_PROFILE, AWS_REGION, ...).",
    )
    d.add_argument("name", metavar="NAME", help="thing name = device name = MQTT client id")
    d.add_argument("--dir", required=True, help="where devices/NAME.crt|.key go")
    d.add_argument("--policy-name", default="pumpwatch-device")
    d.add_argument("--cert", type=Path, default=None,
                   help="register this certificate (PEM, e.g. from pumpwatch certs) without "
                   "its CA instead of creating one in AWS; needs --key")
    d.add_argument("--key", type=Path, default=None, help="the private key of --cert")
    _aws_options(d)
    d.set_defaults(func=run_provision)

    from cloud.aws_stacks import TEMPLATES

    ds = acts.add_parser("deploy-stack", help="create or update a stack from deploy/aws/",
                         description="Create the stack, or update it if it exists, from "
                         "deploy/aws/TEMPLATE.yaml; waits until it is complete.")
    ds.add_argument("template", choices=TEMPLATES)
    ds.add_argument("--stack-name", default=None, help="default pumpwatch-TEMPLATE")
    ds.add_argument("--parameter", "-p", action="append", default=[], metavar="KEY=VALUE")
    ds.add_argument("--no-wait", action="store_true")
    _aws_options(ds)
    ds.set_defaults(func=run_deploy_stack)
    for name, fn, hlp in (("describe-stack", run_describe_stack, "status, parameters, outputs"),
                          ("delete-stack", run_delete_stack, "delete a stack")):
        c = acts.add_parser(name, help=hlp)
        c.add_argument("stack_name", metavar="STACK")
        c.add_argument("--json", action="store_true")
        if name == "delete-stack":
            c.add_argument("--no-wait", action="store_true")
        _aws_options(c)
        c.set_defaults(func=fn)

    da = acts.add_parser(
        "deploy-approved", help="deploy an approved model package (the approval deployer)",
        description="Deploy an approved version through the SageMaker registry's deploy, "
        "configured by the SageMaker stack's outputs (endpoint, variant, guardrails). "
        "Either --event FILE (an EventBridge event, - for stdin) or --group and --version.",
    )
    da.add_argument("--stack", required=True, help="the SageMaker stack's name")
    da.add_argument("--event", default=None, help="EventBridge event JSON file, - for stdin")
    da.add_argument("--group", default=None)
    da.add_argument("--version", type=int, default=None)
    da.add_argument("--event-id", default="", help="the event's id (for the deployment record)")
    da.add_argument("--mode", choices=("all", "canary", "shadow"), default="canary")
    _aws_options(da)
    da.set_defaults(func=run_deploy_approved)

    ec = acts.add_parser(
        "ecs-consumer", help="run the consumer from an ECS task's injected config and secrets",
        description="Write PUMPWATCH_CONSUMER_CONFIG, PUMPWATCH_TLS_CA|CERT|KEY and "
        "PUMPWATCH_STORE_URL from the environment as files below DIR, then run "
        "pumpwatch cloud with them.",
    )
    ec.add_argument("--dir", type=Path, required=True)
    ec.set_defaults(func=run_ecs_consumer)


def _aws_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", default=None, help="AWS region (default: the SDK's)")
    p.add_argument("--profile", default=None, help="AWS profile (default: the SDK's)")


def _client(args: argparse.Namespace, service: str) -> Any:
    import boto3

    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    return session.client(service)


def run_deploy_stack(args: argparse.Namespace, client: Any = None) -> int:
    from cloud.aws_stacks import StackError, deploy_stack, parse_parameters

    name = args.stack_name or f"pumpwatch-{args.template}"
    try:
        params = parse_parameters(args.parameter)
    except StackError as exc:
        print(f"pumpwatch aws deploy-stack: {exc}", file=sys.stderr)
        return 2
    try:
        outcome = deploy_stack(client or _client(args, "cloudformation"), args.template, name,
                               params, wait=not args.no_wait)
    except StackError as exc:
        print(f"pumpwatch aws deploy-stack: {exc}", file=sys.stderr)
        return 1
    print(f"stack {name} ({args.template}): {outcome}")
    return 0


def run_describe_stack(args: argparse.Namespace, client: Any = None) -> int:
    from cloud.aws_stacks import StackError, describe_stack

    try:
        got = describe_stack(client or _client(args, "cloudformation"), args.stack_name)
    except StackError as exc:
        print(f"pumpwatch aws describe-stack: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(got))
        return 0
    print(f"stack   {got['stack']}  {got['status']}  {got['reason']}".rstrip())
    for k, v in sorted(got["outputs"].items()):
        print(f"output  {k} = {v}")
    return 0


def run_delete_stack(args: argparse.Namespace, client: Any = None) -> int:
    from cloud.aws_stacks import StackError, delete_stack

    try:
        delete_stack(client or _client(args, "cloudformation"), args.stack_name,
                     wait=not args.no_wait)
    except StackError as exc:
        print(f"pumpwatch aws delete-stack: {exc}", file=sys.stderr)
        return 1
    print(f"stack {args.stack_name}: deleted")
    return 0


def run_deploy_approved(args: argparse.Namespace, clients: Any = None) -> int:
    """``clients``: ``(cloudformation, sagemaker, s3)`` (tests), else the SDK's."""
    from models.registry.deployer import DETAIL_TYPE, handle, registry_from_outputs, stack_outputs
    from models.serving.errors import RegistryError

    if (args.event is None) == (args.group is None or args.version is None):
        print("pumpwatch aws deploy-approved: give --event, or --group and --version",
              file=sys.stderr)
        return 2
    if args.event is not None:
        try:
            text = sys.stdin.read() if args.event == "-" else Path(args.event).read_text()
            event = json.loads(text)
        except (OSError, ValueError) as exc:
            print(f"pumpwatch aws deploy-approved: cannot read the event {args.event}: {exc}",
                  file=sys.stderr)
            return 2
        if not isinstance(event, dict):
            print("pumpwatch aws deploy-approved: the event is not a JSON object",
                  file=sys.stderr)
            return 2
    else:
        event = {"source": "aws.sagemaker", "detail-type": DETAIL_TYPE, "id": args.event_id,
                 "detail": {"ModelPackageGroupName": args.group,
                            "ModelPackageVersion": args.version,
                            "ModelApprovalStatus": "Approved"}}
    cfn, sm, s3 = clients or (_client(args, "cloudformation"), _client(args, "sagemaker"),
                              _client(args, "s3"))
    try:
        registry = registry_from_outputs(sm, s3, stack_outputs(cfn, args.stack))
        dep = handle(event, registry, mode=args.mode)
    except RegistryError as exc:
        print(f"pumpwatch aws deploy-approved: {exc}", file=sys.stderr)
        return 1
    if dep is None:
        print("not an approval: nothing deployed")
    else:
        print(f"endpoint {dep.endpoint} -> {dep.model_version} ({args.mode})")
    return 0


def run_ecs_consumer(args: argparse.Namespace) -> int:
    import os

    from cloud.aws_ecs import MaterializeError, materialize

    try:
        config = materialize(os.environ, args.dir)
    except MaterializeError as exc:
        print(f"pumpwatch aws ecs-consumer: {exc}", file=sys.stderr)
        return 2
    from . import cloud

    return cloud.run(argparse.Namespace(config=str(config), print_config=False, retire=False))


def run_provision(args: argparse.Namespace, client: Any = None) -> int:
    from cloud.aws_iot import ProvisionError, provision_device

    if not THING_RE.match(args.name):
        print(
            f"pumpwatch aws provision-device: a device (thing) name is 1-64 characters from "
            f"A-Z a-z 0-9 : _ -, got {args.name!r}",
            file=sys.stderr,
        )
        return 2
    cert, key = getattr(args, "cert", None), getattr(args, "key", None)
    if (cert is None) != (key is None):
        print("pumpwatch aws provision-device: --cert and --key go together", file=sys.stderr)
        return 2
    if client is None:
        client = _client(args, "iot")
    try:
        got = provision_device(client, args.name, args.dir, policy_name=args.policy_name,
                               cert=cert, key=key)
    except ProvisionError as exc:
        print(f"pumpwatch aws provision-device: {exc}", file=sys.stderr)
        return 1
    print(f"thing        {got.thing} ({'created' if got.thing_created else 'existing'})")
    print(f"certificate  {got.certificate_arn}")
    print(f"             {got.cert} (key {got.key})")
    print(f"policy       {got.policy_name} ({'created' if got.policy_created else 'existing'})")
    print(f"endpoint     {got.endpoint}")
    print("\n# edge config (root CA: https://www.amazontrust.com/repository/AmazonRootCA1.pem)")
    print(got.edge_toml())
    return 0
