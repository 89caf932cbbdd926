"""Turn one MQTT message into accepted reports and dead letters (pure; no I/O).

Every report of a message is accounted for exactly once: it is accepted, a
duplicate of an earlier report in the same message, or a dead letter. A
message that fails as a whole (oversize, wrong topic, undecodable envelope,
spoofed envelope) becomes one dead letter with ``part = -1``; a bad report
inside a good envelope becomes a dead letter with its index as ``part``.

This module is the boundary where the codec's errors (``ReportDecodeError``)
become :class:`~cloud.consumer.errors.RemoteError` and then dead letters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import dsp
from cloud.store import DeadLetter, Identity

from .errors import RemoteError

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Accepted:
    report: dsp.Report
    raw: bytes  # the report's msgpack bytes exactly as received
    index: int  # position in the message

    @property
    def identity(self) -> Identity:
        return self.report.identity


@dataclass(slots=True)
class Parsed:
    accepted: list[Accepted] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0  # reports repeated within this message (accounted for by the first)

    @property
    def parts(self) -> int:
        return len(self.accepted) + len(self.dead) + self.duplicates


def topic_device(topic: str, root: str) -> str:
    """The device named by ``{root}/devices/{device}/reports``; RemoteError otherwise."""
    prefix = f"{root}/devices/"
    if topic.startswith(prefix) and topic.endswith("/reports"):
        device = topic[len(prefix) : -len("/reports")]
        if device and "/" not in device:
            return device
    raise RemoteError("topic", f"topic {topic!r} is not {root}/devices/{{device}}/reports")


def _kind_of(exc: dsp.ReportDecodeError) -> str:
    """Dead-letter kind: the codec's own ("version" files as a schema problem)."""
    return "malformed" if exc.kind == "malformed" else "schema"


def _decoder_failed(exc: Exception) -> RemoteError:
    # The codec should only raise ReportDecodeError, but msgspec lets some errors through
    # (e.g. UnicodeDecodeError for invalid UTF-8 in a str field). Input must never crash us.
    return RemoteError("malformed", f"undecodable: {type(exc).__name__}: {exc}")


def message_key(topic: str, payload: bytes) -> bytes:
    """Idempotence key of a dead letter: same topic and payload -> same key."""
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).digest()


def parse_message(
    topic: str,
    payload: bytes,
    *,
    root: str,
    max_payload: int,
    received_ns: int,
) -> Parsed:
    """Validate one message; never raises for anything a device can send."""
    out = Parsed()
    key = b""

    def dead(part: int, err: RemoteError, data: bytes) -> None:
        nonlocal key
        if not key:
            key = message_key(topic, payload)
        ident = err.identity
        out.dead.append(
            DeadLetter(
                key=key, part=part, received_ns=received_ns, topic=topic, kind=err.kind,
                reason=err.reason, payload=data,
                device=None if ident is None else ident[0],
                epoch=None if ident is None else ident[1],
                seq=None if ident is None else ident[2],
            )
        )

    try:
        if len(payload) > max_payload:
            raise RemoteError(
                "oversize", f"payload of {len(payload)} bytes exceeds max_payload={max_payload}"
            )
        device = topic_device(topic, root)
        try:
            batch = dsp.decode_batch(payload)
        except dsp.ReportDecodeError as exc:
            raise RemoteError(_kind_of(exc), exc.reason) from None
        except Exception as exc:  # see _decoder_failed
            raise _decoder_failed(exc) from None
        if batch.device != device:
            raise RemoteError(
                "spoofed", f"batch device {batch.device!r} differs from topic device {device!r}"
            )
    except RemoteError as err:
        dead(-1, err, payload)
        return out

    seen: set[Identity] = set()
    for index, raw_report in enumerate(batch.reports):
        raw = bytes(raw_report)
        try:
            try:
                report = dsp.decode_report(raw)
            except dsp.ReportDecodeError as exc:
                raise RemoteError(_kind_of(exc), exc.reason, identity=exc.identity) from None
            except Exception as exc:  # see _decoder_failed
                raise _decoder_failed(exc) from None
            if report.device != device:
                raise RemoteError(
                    "spoofed",
                    f"report device {report.device!r} differs from topic device {device!r}",
                    identity=report.identity,
                )
            # Stores keep 64-bit integers: a larger value would fail every commit it is in.
            if report.epoch >= _U64 or report.seq > _I64_MAX or not (
                -_I64_MAX - 1 <= report.t0_ns <= _I64_MAX
            ):
                raise RemoteError(
                    "schema",
                    f"integer out of 64-bit range (epoch={report.epoch}, seq={report.seq}, "
                    f"t0_ns={report.t0_ns})",
                    identity=report.identity if report.epoch < _U64 else None,
                )
        except RemoteError as err:
            dead(index, err, raw)
            continue
        ident = report.identity
        if ident in seen:
            out.duplicates += 1
            continue
        seen.add(ident)
        out.accepted.append(Accepted(report=report, raw=raw, index=index))
    return out
