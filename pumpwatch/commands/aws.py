"""``pumpwatch aws provision-device NAME``: thing + certificate + policy in AWS IoT Core.

Wiring only: the logic is :mod:`cloud.aws_iot`; see docs/aws-iot.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from ._roles import Role

ROLE = Role("cloud", ("boto3",))
THING_RE = re.compile(r"^[A-Za-z0-9:_-]{1,64}\Z")  # the name rule, without "." (AWS)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("aws", help="AWS IoT Core: provision devices")
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
    d.add_argument("--region", default=None, help="AWS region (default: the SDK's)")
    d.add_argument("--profile", default=None, help="AWS profile (default: the SDK's)")
    d.set_defaults(func=run_provision)


def run_provision(args: argparse.Namespace, client: Any = None) -> int:
    from cloud.aws_iot import ProvisionError, provision_device

    if not THING_RE.match(args.name):
        print(
            f"pumpwatch aws provision-device: a device (thing) name is 1-64 characters from "
            f"A-Z a-z 0-9 : _ -, got {args.name!r}",
            file=sys.stderr,
        )
        return 2
    if client is None:
        import boto3

        session = boto3.Session(profile_name=args.profile, region_name=args.region)
        client = session.client("iot")
    try:
        got = provision_device(client, args.name, args.dir, policy_name=args.policy_name)
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
