"""Turn one MQTT message into accepted reports and dead letters (pure; no I/O).

Every report of a message is accounted for exactly once: it is accepted, a
duplicate of an earlier report in the same message, or a dead letter. A
message that fails as a whole (oversize, wrong topic, undecodable envelope,
spoofed envelope) becomes one dead letter with ``part = -1``; a bad report
inside a good envelope becomes a dead letter with its index as ``part``.

This module is the boundary where the codec's errors (``ReportDecodeError``)
become :class:`~cloud.consumer.errors.RemoteError` and then dead letters.
Decoded reports also pass :func:`~.validate.check_report` (what the model
needs), so a report that reaches the endpoint cannot fail a batch by itself.

Dead letters are bounded here: a message with more than
``max_dead_per_message`` bad reports is *one* dead letter (``part = -1``)
whose reason carries the count, and a dead letter keeps at most
``max_dead_bytes`` of its payload (the reason then names the full size and
the BLAKE2b-128 digest of the whole). ``Parsed.confirmable`` lists the
identities of the message's reports that end as dead letters of the sending
device: once committed they are confirmed to the edge like results.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import dsp
from cloud.store import DeadLetter, Identity

from .errors import RemoteError
from .validate import check_report, name_ok

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
    dead_parts: int = 0  # reports (or the whole message) dead-lettered, before collapsing
    confirmable: list[Identity] = field(default_factory=list)  # dead, of the sending device
    # per dead-lettered part (before collapsing): the pump of a report that decoded and
    # came from the device it names, else None (the whole message, undecodable, spoofed)
    dead_pumps: list[str | None] = field(default_factory=list)

    @property
    def parts(self) -> int:
        return len(self.accepted) + self.dead_parts + self.duplicates


def topic_device(topic: str, root: str) -> str:
    """The device named by ``{root}/devices/{device}/reports``; RemoteError otherwise."""
    prefix = f"{root}/devices/"
    if topic.startswith(prefix) and topic.endswith("/reports"):
        device = topic[len(prefix) : -len("/reports")]
        if device and "/" not in device:
            if not name_ok(device):
                raise RemoteError("name", f"topic device {device!r} breaks the name rule")
            return device
    raise RemoteError("topic", f"topic {topic!r} is not {root}/devices/{{device}}/reports")


def _kind_of(exc: dsp.ReportDecodeError) -> str:
    """Dead-letter kind: the codec's own ("version" files as a schema problem)."""
    return exc.kind if exc.kind in ("malformed", "name") else "schema"


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
    max_dead_per_message: int = 8,
    max_dead_bytes: int = 4096,
) -> Parsed:
    """Validate one message; never raises for anything a device can send."""
    out = Parsed()
    key = b""

    def dead(part: int, err: RemoteError, data: bytes, pump: str | None = None) -> None:
        nonlocal key
        if not key:
            key = message_key(topic, payload)
        ident = err.identity
        out.dead_parts += 1
        out.dead_pumps.append(pump)
        out.dead.append(
            DeadLetter(
                key=key, part=part, received_ns=received_ns, topic=topic, kind=err.kind,
                reason=err.reason + capped_note(data, max_dead_bytes),
                payload=data[:max_dead_bytes],
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
        pump: str | None = None
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
            pump = report.pump
            check_report(report)
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
            dead(index, err, raw, pump)
            if err.kind != "spoofed" and err.identity is not None and err.identity[0] == device:
                out.confirmable.append(err.identity)
            continue
        ident = report.identity
        if ident in seen:
            out.duplicates += 1
            continue
        seen.add(ident)
        out.accepted.append(Accepted(report=report, raw=raw, index=index))
    if len(out.dead) > max_dead_per_message:
        out.dead = [_collapse(out.dead, len(batch.reports), payload, max_dead_bytes)]
    return out


def capped_note(data: bytes, cap: int) -> str:
    """What a dead letter says when it keeps only the first ``cap`` bytes of ``data``."""
    if len(data) <= cap:
        return ""
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    return f" [payload {len(data)} bytes, blake2b-128 {digest}; first {cap} kept]"


def _collapse(dead: list[DeadLetter], total: int, payload: bytes, cap: int) -> DeadLetter:
    """One dead letter standing for the many bad reports of one message."""
    kinds: dict[str, int] = {}
    for d in dead:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    first = dead[0]
    summary = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    return DeadLetter(
        key=first.key, part=-1, received_ns=first.received_ns, topic=first.topic,
        kind=max(kinds, key=lambda k: kinds[k]),
        reason=f"{len(dead)} of {total} reports rejected ({summary}); first, part "
        f"{first.part}: {first.reason}" + capped_note(payload, cap),
        payload=payload[:cap],
    )
