"""AWS IoT Core provisioning for one device: thing, certificate, least-privilege policy.

Theory of operation
-------------------
One device (gateway) = one AWS IoT thing = one X.509 certificate. The policy
(:func:`device_policy`, also committed as ``deploy/aws/iot-policy.json``) is rendered
from the role table in :mod:`cloud.roles` (as is the Mosquitto configuration)
and uses policy variables, so one policy serves the whole fleet: a certificate
may connect only with client id = the name of the thing it is attached to,
publish only ``pumpwatch/devices/{that thing}/reports`` and ``.../status``,
retain only the status (retained status and the will need
``iot:RetainPublish``), and subscribe to and receive only its own
confirmations ``pumpwatch/acks/{that thing}``. :func:`role_policy` renders the
consumer's, dashboard's and operator's policies from the same table. Region and
account are wildcards because an IoT policy only ever applies inside the
account that holds it.

:func:`provision_device` does what docs/aws-iot.md shows with the AWS CLI:

1. ``DescribeEndpoint(iot:Data-ATS)``: the account's MQTT endpoint;
2. ``GetPolicy``, else ``CreatePolicy`` (an existing policy is left as is, with a
   warning when its document differs);
3. ``DescribeThing``, else ``CreateThing``; a thing that already has a
   certificate is refused (one certificate per thing; rotate explicitly);
4. ``CreateKeysAndCertificate(setAsActive)``: the key exists only in this
   response, so it is written (0600) before anything else can fail; or, with a
   certificate of one's own CA (``cert``/``key``, e.g. from :mod:`cloud.pki`),
   ``RegisterCertificateWithoutCA(ACTIVE)``: the key never leaves the machine;
5. ``AttachPolicy`` to the certificate, ``AttachThingPrincipal``.

If step 5 fails the new certificate is deactivated and deleted and its files
removed, so a retry starts clean. AWS errors surface as :class:`ProvisionError`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cloud.roles import THING, Role, iot_policy

log = logging.getLogger(__name__)

DEFAULT_POLICY_NAME = "pumpwatch-device"
__all__ = ["THING", "ProvisionError", "Provisioned", "device_policy", "provision_device",
           "role_policy"]


class ProvisionError(RuntimeError):
    """Provisioning stopped; the message says at which step and why."""


def role_policy(role: Role, prefix: str = "pumpwatch") -> dict[str, Any]:
    """The AWS IoT policy of ``role`` (from :data:`cloud.roles.ROLES`)."""
    return iot_policy(role, root=prefix)


def device_policy(prefix: str = "pumpwatch") -> dict[str, Any]:
    """The least-privilege device policy (identical to ``deploy/aws/iot-policy.json``)."""
    return role_policy("device", prefix)


@dataclass(frozen=True, slots=True)
class Provisioned:
    thing: str
    endpoint: str
    certificate_arn: str
    certificate_id: str
    cert: Path
    key: Path
    policy_name: str
    policy_created: bool
    thing_created: bool

    def edge_toml(self, ca: str = "/etc/pumpwatch/AmazonRootCA1.pem") -> str:
        """The ``[mqtt]`` part of the device's edge config."""
        return (
            "[mqtt]\n"
            'transport = "awsiot"\n'
            f'host = "{self.endpoint}"\n'
            "port = 8883\n\n"
            "[mqtt.tls]\n"
            f'ca = "{ca}"\n'
            f'cert = "{self.cert}"\n'
            f'key = "{self.key}"\n'
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _document(text: str) -> Any:
    """A policy document as JSON, or None when it is not JSON (it then differs)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def provision_device(
    iot: Any,
    name: str,
    out_dir: str | Path,
    *,
    policy_name: str = DEFAULT_POLICY_NAME,
    prefix: str = "pumpwatch",
    cert: Path | None = None,
    key: Path | None = None,
) -> Provisioned:
    """Provision thing ``name`` with a certificate in ``out_dir/devices/``.

    ``iot`` is a boto3 ``iot`` client (its region is the one provisioned). With
    ``cert`` and ``key`` (PEM files) that certificate is registered without its CA
    and copied with its key into the same layout; else AWS creates both."""
    own: tuple[str, str] | None = None
    if cert is not None and key is not None:
        try:
            own = (Path(cert).read_text(), Path(key).read_text())
        except OSError as exc:
            raise ProvisionError(f"cannot read the certificate or key: {exc}") from exc
    step = "DescribeEndpoint"
    try:
        endpoint = str(iot.describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"])

        step = "GetPolicy"
        wanted = device_policy(prefix)
        policy_created = False
        try:
            have = iot.get_policy(policyName=policy_name)
            if _document(have.get("policyDocument", "")) != wanted:
                log.warning(
                    "policy %s exists with a different document; left unchanged (compare "
                    "with deploy/aws/iot-policy.json)",
                    policy_name,
                )
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            step = "CreatePolicy"
            iot.create_policy(policyName=policy_name, policyDocument=json.dumps(wanted))
            policy_created = True

        step = "DescribeThing"
        thing_created = False
        try:
            iot.describe_thing(thingName=name)
            step = "ListThingPrincipals"
            principals = iot.list_thing_principals(thingName=name).get("principals", [])
            if principals:
                raise ProvisionError(
                    f"thing {name!r} already has a certificate ({principals[0]}): one "
                    "certificate per thing; detach and revoke it first to rotate"
                )
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            step = "CreateThing"
            iot.create_thing(thingName=name)
            thing_created = True

        if own is None:
            step = "CreateKeysAndCertificate"
            made = iot.create_keys_and_certificate(setAsActive=True)
        else:
            step = "RegisterCertificateWithoutCA"
            reg = iot.register_certificate_without_ca(certificatePem=own[0], status="ACTIVE")
            made = {"certificateArn": reg["certificateArn"],
                    "certificateId": reg["certificateId"], "certificatePem": own[0],
                    "keyPair": {"PrivateKey": own[1]}}
    except ClientError as exc:
        raise ProvisionError(f"{step} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise ProvisionError(f"{step} failed: {exc}") from exc

    cert_arn, cert_id = str(made["certificateArn"]), str(made["certificateId"])
    base = Path(out_dir) / "devices"
    cert_path, key_path = base / f"{name}.crt", base / f"{name}.key"
    _write_private(key_path, made["keyPair"]["PrivateKey"])
    cert_path.write_text(made["certificatePem"])
    os.chmod(cert_path, 0o644)
    try:
        step = "AttachPolicy"
        iot.attach_policy(policyName=policy_name, target=cert_arn)
        step = "AttachThingPrincipal"
        iot.attach_thing_principal(thingName=name, principal=cert_arn)
    except (ClientError, BotoCoreError) as exc:
        log.error("%s failed: %s; deactivating and deleting certificate %s", step, exc, cert_id)
        try:
            if step == "AttachThingPrincipal":
                iot.detach_policy(policyName=policy_name, target=cert_arn)
            iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
            iot.delete_certificate(certificateId=cert_id)
        except (ClientError, BotoCoreError) as cleanup:
            log.error("cleanup of certificate %s failed: %s", cert_id, cleanup)
        key_path.unlink(missing_ok=True)
        cert_path.unlink(missing_ok=True)
        raise ProvisionError(f"{step} failed: {exc}") from exc
    return Provisioned(
        thing=name,
        endpoint=endpoint,
        certificate_arn=cert_arn,
        certificate_id=cert_id,
        cert=cert_path,
        key=key_path,
        policy_name=policy_name,
        policy_created=policy_created,
        thing_created=thing_created,
    )
