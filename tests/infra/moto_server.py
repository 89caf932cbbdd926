"""moto in server mode on a free port (one per test session), and clients pointed at it.

``moto_server`` is the base URL; :func:`client` makes a boto3 client for it.
:class:`MotoWarnings` collects moto's "No Moto CloudFormation support for TYPE"
warnings while it is entered, so a test can fail on a resource type that moto
skipped instead of creating it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
_UNSUPPORTED = re.compile(r"^No Moto CloudFormation support for (\S+)$")


def moto_missing() -> str | None:
    try:
        import moto.server  # noqa: F401
    except ModuleNotFoundError as exc:
        return f"moto[server] is not installed ({exc}): pip install -e '.[dev]'"
    return None


def cfn_lint_missing() -> str | None:
    try:
        import cfnlint.api  # noqa: F401
    except ModuleNotFoundError as exc:
        return f"cfn-lint is not installed ({exc}): pip install -e '.[dev]'"
    return None


def client(url: str, service: str) -> Any:
    import boto3

    return boto3.client(
        service, endpoint_url=url, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


class MotoWarnings(logging.Handler):
    """The resource types moto's CloudFormation skipped while entered."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.skipped: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        m = _UNSUPPORTED.match(record.getMessage())
        if m:
            self.skipped.add(m.group(1))

    def __enter__(self) -> MotoWarnings:
        logging.getLogger("moto").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("moto").removeHandler(self)
