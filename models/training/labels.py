"""Operators' verdicts as training labels: the ``pumpwatch labels export`` directory format.

An export directory holds ``labels.jsonl`` (one closed asset alarm a line:
:class:`Label`) and, per label, ``reports/<n>.pwr``: the reports archived for
that pump while the alarm was open, exactly as the edge encoded them
(:func:`dsp.encode_report`), each prefixed by its length (4 bytes, big
endian). :func:`write_label_set` writes one, :func:`read_labels` reads it back
as reports and their labels -- what :func:`models.training.training.fit` takes.
A verdict of ``no_fault_found`` says the pump was healthy while it alarmed:
read back as ``healthy`` unless told otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import msgspec

import dsp
from dsp.results import HEALTHY

NO_FAULT_FOUND = "no_fault_found"  # the verdict vocabulary's own (cloud.store.NO_FAULT_FOUND)
_LEN = struct.Struct(">I")


class Label(msgspec.Struct, frozen=True, kw_only=True):
    """One closed asset alarm: its verdict, who closed it and when, what raised it."""

    alarm_id: str
    site: str
    pump: str
    verdict: str
    action_taken: str
    note: str | None
    closed_by: str
    since_ns: int
    closed_ns: int
    onset_ns: int | None
    model_version: str
    condition: str  # what the model named when it raised the alarm
    reports: str  # relative path of the reports file
    n_reports: int


def pack_reports(blobs: Sequence[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in blobs)


def unpack_reports(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            raise ValueError(f"truncated length prefix at byte {i}")
        (n,) = _LEN.unpack_from(data, i)
        if i + 4 + n > len(data):
            raise ValueError(f"truncated report at byte {i} (needs {n} bytes)")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


def write_label_set(out: Path, labels: Sequence[tuple[Label, Sequence[bytes]]]) -> None:
    """Write an export directory (``labels.jsonl`` last, so a reader never sees a label
    without its reports)."""
    (out / "reports").mkdir(parents=True, exist_ok=True)
    lines = []
    for label, blobs in labels:
        (out / label.reports).write_bytes(pack_reports(blobs))
        lines.append(msgspec.json.encode(label))
    (out / "labels.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def load_labels(directory: Path) -> list[Label]:
    dec = msgspec.json.Decoder(Label)
    text = (directory / "labels.jsonl").read_bytes()
    return [dec.decode(line) for line in text.splitlines() if line.strip()]


def read_labels(
    directory: Path, *, no_fault_as: str = HEALTHY
) -> tuple[list[dsp.Report], list[str]]:
    """Every exported report and its label (the alarm's verdict; ``no_fault_found`` ->
    ``no_fault_as``), in export order."""
    reports: list[dsp.Report] = []
    labels: list[str] = []
    for label in load_labels(directory):
        name = no_fault_as if label.verdict == NO_FAULT_FOUND else label.verdict
        for blob in unpack_reports((directory / label.reports).read_bytes()):
            reports.append(dsp.decode_report(blob))
            labels.append(name)
    return reports, labels


__all__ = ["NO_FAULT_FOUND", "Label", "load_labels", "pack_reports", "read_labels",
           "unpack_reports", "write_label_set"]
