"""InvokeEndpoint through aiobotocore ``sagemaker-runtime``: the endpoint adapter.

The request body is built from the reports' bytes as received, with no
re-encoding: a ``list[msgspec.Raw]`` encodes its items inline, so the body is
``{"v": 1, "reports": [<raw>, <raw>, ...]}`` in msgpack, exactly the
:class:`dsp.results.InvocationRequest` the server decodes.

Retries: botocore's own retries are switched off (``total_max_attempts=1``)
so that exactly one layer retries -- the consumer's dispatcher, which knows
whether a batch is worth retrying (see :mod:`.errors`) and feeds the circuit
breaker (:mod:`.breaker`). Deliberately: botocore's ``standard`` mode does not
retry HTTP 429 (SageMaker's ModelNotReadyException) while it does retry
others, so stacking it under ours would multiply some attempts and miss
others; and a retried read timeout runs the model again on the same batch
(the first call may still be running), which only the layer that also holds
the breaker should decide. Re-running is harmless for correctness because
results are idempotent on the report identity. See docs/consumer.md,
"Endpoint faults".

This module is the one boundary where botocore's exceptions become
:class:`EndpointUnavailableError` / :class:`EndpointRejectedError`. A response
that does not decode (see :mod:`._response`) or has the wrong number of results
is the model failing on its input, deterministically: rejected, so the batch is
bisected and the report at fault dead-lettered rather than retried forever.

``manifest=True`` sends ``CustomAttributes: manifest=1``, asking the bundle to
include its full manifest in the response (the consumer asks when it sees a
manifest digest it has not stored; see :mod:`.service`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from ._response import ResponseError, Scored, decode_response
from .batcher import Target
from .config import EndpointConfig
from .errors import EndpointConfigError, EndpointRejectedError, EndpointUnavailableError


class _RawRequest(msgspec.Struct, frozen=True):
    """Wire-identical to InvocationRequest, with reports kept as their received bytes."""

    v: int
    reports: list[msgspec.Raw]


_encoder = msgspec.msgpack.Encoder()
MANIFEST_ATTRIBUTE = "manifest=1"

# The container failed on this input: bisect. ValidationError: configuration (unknown
# endpoint / target model) or a request refused as a whole: retry, loudly. Else: retry.
REJECTED_CODES = frozenset({"ModelError"})
# One attempt per call: the consumer's own layer retries (see the module docstring).
BOTOCORE_RETRIES: dict[str, Any] = {"total_max_attempts": 1, "mode": "standard"}
CONFIG_CODES = frozenset({"ValidationError", "ValidationException"})


def request_body(raw_reports: Sequence[bytes]) -> bytes:
    """The msgpack InvocationRequest around already-encoded reports."""
    return _encoder.encode(_RawRequest(1, [msgspec.Raw(r) for r in raw_reports]))


class EndpointClient:
    """One aiobotocore client; ``invoke`` is safe to call concurrently."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def __aenter__(self) -> EndpointClient:
        cfg = self.config
        session = get_session()
        kwargs: dict[str, Any] = {
            "region_name": cfg.region,
            "config": AioConfig(
                connect_timeout=cfg.connect_timeout_s,
                read_timeout=cfg.timeout_s,
                retries=BOTOCORE_RETRIES,
                max_pool_connections=max(10, cfg.max_concurrency * 2),
            ),
        }
        if cfg.endpoint_url:
            kwargs["endpoint_url"] = cfg.endpoint_url
        creds = cfg.credentials
        if creds == "dummy" or (creds == "auto" and cfg.endpoint_url):
            kwargs["aws_access_key_id"] = "pumpwatch-local"
            kwargs["aws_secret_access_key"] = "pumpwatch-local"  # noqa: S105 -- not a secret
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(
            session.create_client("sagemaker-runtime", **kwargs)
        )
        self._stack = stack
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def invoke(
        self, target: Target, raw_reports: Sequence[bytes], *, manifest: bool = False
    ) -> Scored:
        """Score reports; one result per report, in order, or an EndpointError.
        ``manifest``: ask for the bundle's manifest in the response."""
        if self._client is None:
            raise RuntimeError("EndpointClient used outside `async with`")
        cfg = self.config
        body = request_body(raw_reports)
        params: dict[str, Any] = {
            "EndpointName": target.endpoint,
            "Body": body,
            "ContentType": "application/x-msgpack",
            "Accept": cfg.content_type,
        }
        if target.model:
            params["TargetModel"] = target.model
        if manifest:
            params["CustomAttributes"] = MANIFEST_ATTRIBUTE
        try:
            async with asyncio.timeout(cfg.timeout_s + cfg.connect_timeout_s + 5):
                resp = await self._client.invoke_endpoint(**params)
                async with resp["Body"] as stream:
                    data: bytes = await stream.read()
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "?"))
            message = str(err.get("Message", exc))
            if code in REJECTED_CODES:
                raise EndpointRejectedError(f"{target}: {code}: {message}") from None
            if code in CONFIG_CODES:
                raise EndpointConfigError(f"{target}: {code}: {message}") from None
            raise EndpointUnavailableError(f"{target}: {code}: {message}") from None
        except (BotoCoreError, TimeoutError, OSError) as exc:
            raise EndpointUnavailableError(f"{target}: {type(exc).__name__}: {exc}") from None
        try:
            scored = decode_response(
                data, "json" if cfg.content_type == "application/json" else "msgpack"
            )
        except ResponseError as exc:
            raise EndpointRejectedError(f"{target}: {exc}") from None
        n = len(scored.response.results)
        if n != len(raw_reports):
            raise EndpointRejectedError(f"{target}: {n} results for {len(raw_reports)} reports")
        return scored
