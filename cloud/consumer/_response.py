"""Decoding an InvocationResponse without losing what this code does not know (sans-IO).

The endpoint contract is open on the model's side: a bundle may return classes
and optional result fields that did not exist when this consumer was built
(``dsp.results`` only ever appends optional fields). So each result is decoded
twice from its raw bytes: into the typed :class:`dsp.results.Result` the
pipeline works with, and into a map of its top-level fields, of which those
``Result`` does not declare are kept as ``extra`` (JSON-ready) for the store.
The manifest, when the response carries one, is kept whole the same way.

A body that does not decode -- not an InvocationResponse, a result missing a
required field, a condition that is not a class name -- is the model's fault,
deterministic for that input: :func:`decode_response` raises
:class:`ResponseError`, which the adapter turns into a rejection so the batch
is bisected down to the report at fault and dead-lettered (see
:mod:`.endpoint`), instead of being retried forever while every pump waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from dsp.results import InvocationResponse, Manifest, Result

Encoding = Literal["msgpack", "json"]

RESULT_FIELDS = frozenset(Result.__struct_fields__)
MAX_CONDITION = 64


class ResponseError(ValueError):
    """The response body is not a usable InvocationResponse; the message says why."""


class _RawResponse(msgspec.Struct, frozen=True):
    """InvocationResponse with its results and manifest left as their encoded bytes."""

    v: int
    model_version: str
    results: list[msgspec.Raw]
    manifest_digest: str | None = None
    manifest: msgspec.Raw = msgspec.Raw()  # empty: absent (msgspec has no Raw | None)


@dataclass(frozen=True, slots=True)
class Scored:
    """A decoded response: the typed response, and per result the fields it does not type.

    ``extras[i]`` belongs to ``response.results[i]`` (``{}``: none).
    ``manifest_json`` is the response's manifest as JSON, every field kept.
    """

    response: InvocationResponse
    extras: list[dict[str, Any]] = field(default_factory=list)
    manifest_json: bytes | None = None

    def extra_fields(self, i: int) -> dict[str, Any]:
        return self.extras[i] if i < len(self.extras) else {}


class _Decoders:
    def __init__(self, enc: Encoding) -> None:
        mod = msgspec.msgpack if enc == "msgpack" else msgspec.json
        self.envelope = mod.Decoder(_RawResponse)
        self.result = mod.Decoder(Result)
        self.fields = mod.Decoder(dict[str, msgspec.Raw])
        self.any = mod.Decoder()
        self.manifest = mod.Decoder(Manifest)


_DECODERS: dict[Encoding, _Decoders] = {"msgpack": _Decoders("msgpack"), "json": _Decoders("json")}
_json_encode = msgspec.json.Encoder().encode
_NULLS = (b"\xc0", b"null")  # an explicit nil / null manifest: none


def _check_condition(i: int, condition: str) -> None:
    if not condition or len(condition) > MAX_CONDITION or not condition.isprintable():
        raise ResponseError(
            f"results[{i}].condition must be 1-{MAX_CONDITION} printable characters, "
            f"got {condition[:80]!r}"
        )


def decode_response(data: bytes, encoding: Encoding) -> Scored:
    """Decode a response body; :class:`ResponseError` names what is wrong with it."""
    d = _DECODERS[encoding]
    try:
        env = d.envelope.decode(data)
    except msgspec.DecodeError as exc:
        raise ResponseError(f"response is not an InvocationResponse: {exc}") from None
    results: list[Result] = []
    extras: list[dict[str, Any]] = []
    for i, raw in enumerate(env.results):
        try:
            r = d.result.decode(raw)
            unknown = {k: v for k, v in d.fields.decode(raw).items() if k not in RESULT_FIELDS}
            extra = {k: d.any.decode(v) for k, v in unknown.items()}
            if extra:
                _json_encode(extra)  # must be storable as JSON (no msgpack ext types)
        except (msgspec.DecodeError, TypeError) as exc:
            raise ResponseError(f"results[{i}] is not a Result: {exc}") from None
        _check_condition(i, r.condition)
        results.append(r)
        extras.append(extra)
    manifest: Manifest | None = None
    manifest_json: bytes | None = None
    if len(env.manifest) and bytes(env.manifest) not in _NULLS:
        try:
            manifest = d.manifest.decode(env.manifest)
            manifest_json = _json_encode(d.any.decode(env.manifest))
        except (msgspec.DecodeError, TypeError) as exc:
            raise ResponseError(f"response manifest is not a Manifest: {exc}") from None
    response = InvocationResponse(
        v=env.v, model_version=env.model_version, results=results,
        manifest_digest=env.manifest_digest, manifest=manifest,
    )
    return Scored(response, extras, manifest_json)
