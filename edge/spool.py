"""Crash-safe store-and-forward spool: a plain object over append-only segment files.

Theory of operation
-------------------
A report enters the spool before it is published and leaves only when its
PUBACK arrives. The spool is a directory of *segments*::

    seg-000000000007.log   records, appended only, never rewritten
    seg-000000000007.ack   which records of that segment were acknowledged

Record layout (little endian), 36-byte header then payload::

    magic u32 | length u32 | epoch u64 | seq u64 | stamp_ns u64 | crc32 u32 | payload

``crc32`` covers the first 32 header bytes and the payload, so a record is
either wholly valid or detected as damaged. An ack entry is ``index u32 |
crc32(index) u32`` (8 bytes).

Rules that make it crash-safe:

1. :meth:`Spool.append` writes a whole group of records with one ``write``
   and then ``fdatasync`` s the segment (group commit). When it returns, the
   records survive ``kill -9`` and power loss (with ``fsync=True``).
2. A segment is written by the process that created it and only by it; at
   open the spool always starts a new segment. Older segments are never
   written again, so a crash can only damage the tail of the newest one.
3. At open every segment is scanned. A damaged record (bad magic, bad length,
   bad checksum: the torn tail of a write killed mid-way) is skipped by
   searching for the next valid record; a damaged tail is truncated. Valid
   records before or after damage are never lost. What was skipped is
   counted (:attr:`SpoolStats.corrupt_bytes`).
4. Acks are appended to the segment's ``.ack`` file and synced lazily
   (:meth:`Spool.sync`): a lost ack only means a duplicate publish, which
   downstream dedupes by identity. A segment whose every record is acked is
   deleted (``.log`` first, then ``.ack``; orphan ``.ack`` files are removed
   at open).
5. The spool is bounded by bytes: when an append takes it over ``max_bytes``
   the oldest *segment* is deleted and its unacknowledged records are counted
   as dropped. Granularity is one segment (``segment_bytes``, at most a
   quarter of ``max_bytes``).

Publishing uses *leases*: :meth:`Spool.lease` hands out the oldest pending
records and marks them in flight (in memory only); :meth:`Spool.ack` removes
them for good; :meth:`Spool.release` puts them back (a failed PUBACK, a
dropped connection). After a restart nothing is leased, so everything not
acked is sent again.

End-to-end confirmation (the broker is not trusted with data): with it on, a
PUBACK only makes a record *unconfirmed* (:meth:`Spool.delivered`, in memory
with the time of the PUBACK); it leaves the spool when the cloud's
confirmation covers it (:meth:`Spool.confirm`, written to the ``.ack`` file
like an ack). :meth:`Spool.expire` returns the unconfirmed records that
:class:`edge.republish.RepublishSchedule` names to pending, so the normal drain
publishes them again (oldest first, same identity, under the same rate limit and
in-flight window): those the confirmations have passed over (the broker lost
them), or, when the cloud has confirmed nothing for the confirm timeout, a
bounded probe of the oldest -- never everything that waits, so a cloud that is
merely behind its backlog is not flooded with copies of what it has not reached
yet. A confirmation for a record that is pending or leased again also settles it. After a restart,
unconfirmed records are pending, so they are published (and confirmed) again.
The byte bound, drop-oldest and drop counting cover unconfirmed records too.

The spool does no clock reads: callers pass ``stamp_ns`` (append time) and
``now_ns`` where ages are wanted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .republish import MAX_LEVEL, RepublishSchedule

log = logging.getLogger(__name__)

MAGIC = 0x31535750  # b"PWS1" little endian
_HEAD = struct.Struct("<IIQQQ")  # magic, length, epoch, seq, stamp_ns
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _CRC.size  # 36
_ACK = struct.Struct("<II")
MAX_RECORD = 16 * 1024 * 1024
_MAGIC_BYTES = struct.pack("<I", MAGIC)

PENDING, LEASED, ACKED, UNCONFIRMED = 0, 1, 2, 3
MAX_BACKOFF_LEVEL = MAX_LEVEL  # a record's confirm timeout doubles per re-publication

Key = tuple[int, int]  # (epoch, seq): the report identity within one device


class SpoolError(RuntimeError):
    """The spool cannot be used (locked by another process, unwritable, bad settings)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled report: its identity, append time and encoded bytes."""

    epoch: int
    seq: int
    stamp_ns: int
    payload: bytes

    @property
    def key(self) -> Key:
        return (self.epoch, self.seq)


@dataclass(slots=True)
class SpoolStats:
    """Counters since this spool object was opened (``records``/``bytes``: current)."""

    records: int = 0  # unacknowledged records on disk (pending + leased)
    leased: int = 0
    bytes: int = 0  # bytes on disk (segments + ack files)
    peak_bytes: int = 0
    segments: int = 0
    appended: int = 0
    acked: int = 0
    dropped: int = 0  # unacknowledged records deleted to stay under max_bytes
    dropped_bytes: int = 0
    recovered: int = 0  # unacknowledged records found at open
    corrupt_bytes: int = 0  # damaged bytes skipped or truncated at open
    torn_tails: int = 0  # segments whose tail was truncated at open
    acks_unknown: int = 0  # acks for keys not leased (e.g. dropped meanwhile)
    unconfirmed: int = 0  # PUBACKed, awaiting the cloud's confirmation (current)
    confirmed: int = 0  # records settled by a confirmation
    confirms_unknown: int = 0  # confirmed identities not waiting here (settled already)
    republished: int = 0  # unconfirmed past the confirm timeout, put back to pending


def encode_record(epoch: int, seq: int, stamp_ns: int, payload: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, len(payload), epoch, seq, stamp_ns)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + _CRC.pack(crc) + payload


@dataclass(slots=True)
class _Index:
    """Where each record of a segment is (compact arrays: 36 bytes per record)."""

    offsets: array[int] = field(default_factory=lambda: array("q"))
    epochs: array[int] = field(default_factory=lambda: array("Q"))
    seqs: array[int] = field(default_factory=lambda: array("Q"))
    stamps: array[int] = field(default_factory=lambda: array("Q"))
    lengths: array[int] = field(default_factory=lambda: array("L"))


def scan_records(data: bytes | memoryview) -> tuple[_Index, int, int]:
    """Valid records in ``data``: (index, end of the last valid record, damaged bytes)."""
    mv = memoryview(data)
    n = len(mv)
    idx = _Index()
    pos = 0
    end = 0
    damaged = 0
    while pos + HEADER_BYTES <= n:
        magic, length, epoch, seq, stamp = _HEAD.unpack_from(mv, pos)
        ok = magic == MAGIC and length <= MAX_RECORD and pos + HEADER_BYTES + length <= n
        if ok:
            (crc,) = _CRC.unpack_from(mv, pos + _HEAD.size)
            body = mv[pos + HEADER_BYTES : pos + HEADER_BYTES + length]
            ok = zlib.crc32(body, zlib.crc32(mv[pos : pos + _HEAD.size])) == crc
        if ok:
            damaged += pos - end
            idx.offsets.append(pos)
            idx.epochs.append(epoch)
            idx.seqs.append(seq)
            idx.stamps.append(stamp)
            idx.lengths.append(length)
            pos += HEADER_BYTES + length
            end = pos
            continue
        nxt = bytes(mv[pos + 1 :]).find(_MAGIC_BYTES) if pos + 1 < n else -1
        if nxt < 0:
            break
        pos = pos + 1 + nxt
    return idx, end, damaged


class _Segment:
    __slots__ = (
        "ack_fd",
        "ack_path",
        "fd",
        "hint",
        "id",
        "index",
        "n_acked",
        "n_leased",
        "n_unconfirmed",
        "path",
        "sealed",
        "size",
        "state",
    )

    def __init__(self, seg_id: int, directory: Path) -> None:
        self.id = seg_id
        self.path = directory / f"seg-{seg_id:012d}.log"
        self.ack_path = directory / f"seg-{seg_id:012d}.ack"
        self.size = 0  # bytes of the .log file
        self.state = bytearray()  # per record: PENDING / LEASED / ACKED
        self.n_acked = 0
        self.n_leased = 0
        self.n_unconfirmed = 0
        self.index: _Index | None = None
        self.fd: int | None = None  # only the active segment is open for writing
        self.ack_fd: int | None = None
        self.sealed = True
        self.hint = 0  # no PENDING record before this index

    @property
    def count(self) -> int:
        return len(self.state)

    @property
    def unacked(self) -> int:
        return len(self.state) - self.n_acked

    def ack_bytes(self) -> int:
        return self.n_acked * _ACK.size


class Spool:
    """Bounded, crash-safe FIFO of encoded reports with lease / ack / release.

    Not thread-safe: one owner (or one lock around every call).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int,
        segment_bytes: int = 4 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        if max_bytes < 64 * 1024:
            raise SpoolError(f"spool max_bytes must be >= 65536, got {max_bytes=}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = max(16 * 1024, min(int(segment_bytes), self.max_bytes // 4))
        self.fsync = fsync
        self.stats = SpoolStats()
        self._segments: list[_Segment] = []
        self._leases: dict[Key, tuple[_Segment, int]] = {}
        # PUBACKed and not confirmed (unconfirmed, or pending / leased again after a
        # timeout) -> (segment, index); when to publish them again: the schedule
        self._unconfirmed: dict[Key, tuple[_Segment, int]] = {}
        self.schedule = RepublishSchedule()
        self._dir_dirty = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolError(f"spool {self.path} is in use by another process") from None
        self._closed = False
        self._recover()
        self._open_new_segment()
        self._update_bytes()

    # -- open / recovery ------------------------------------------------------------

    def _recover(self) -> None:
        logs = sorted(self.path.glob("seg-*.log"))
        live = {p.stem for p in logs}
        for ack in self.path.glob("seg-*.ack"):
            if ack.stem not in live:  # its .log was deleted before a crash
                ack.unlink(missing_ok=True)
                self._dir_dirty = True
        for p in logs:
            try:
                seg_id = int(p.stem.split("-", 1)[1])
            except ValueError:
                log.warning("spool: ignoring stray file %s", p)
                continue
            seg = _Segment(seg_id, self.path)
            data = p.read_bytes()
            idx, end, damaged = scan_records(data)
            tail = len(data) - end
            if damaged or tail:
                self.stats.corrupt_bytes += damaged + tail
                if tail:
                    self.stats.torn_tails += 1
                    with open(p, "r+b") as f:
                        f.truncate(end)
                        os.fsync(f.fileno())
                log.warning(
                    "spool: %s had %d damaged bytes inside and a torn tail of %d bytes "
                    "(truncated); %d valid records kept",
                    p.name,
                    damaged,
                    tail,
                    len(idx.offsets),
                )
            seg.size = end
            seg.state = bytearray(len(idx.offsets))
            self._read_acks(seg)
            if seg.unacked == 0:
                self._delete(seg)
                continue
            self._segments.append(seg)
            self.stats.recovered += seg.unacked
        self.stats.records = sum(s.unacked for s in self._segments)
        self._sync_dir()
        if self.stats.records:
            log.info(
                "spool: recovered %d unacknowledged reports in %d segments from %s",
                self.stats.records,
                len(self._segments),
                self.path,
            )

    def _read_acks(self, seg: _Segment) -> None:
        try:
            data = seg.ack_path.read_bytes()
        except FileNotFoundError:
            return
        usable = len(data) - len(data) % _ACK.size
        for off in range(0, usable, _ACK.size):
            i, crc = _ACK.unpack_from(data, off)
            if crc == zlib.crc32(struct.pack("<I", i)) and i < seg.count and seg.state[i] != ACKED:
                seg.state[i] = ACKED
                seg.n_acked += 1

    def _open_new_segment(self) -> None:
        seg_id = self._segments[-1].id + 1 if self._segments else 0
        seg = _Segment(seg_id, self.path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
        seg.fd = os.open(seg.path, flags, 0o644)
        seg.sealed = False
        seg.index = _Index()
        self._segments.append(seg)
        self._dir_dirty = True
        self._sync_dir()

    def _sync_dir(self) -> None:
        if not self._dir_dirty:
            return
        self._dir_dirty = False
        if not self.fsync:
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- writing ----------------------------------------------------------------------

    def append(self, records: Sequence[tuple[int, int, bytes]], *, stamp_ns: int = 0) -> None:
        """Durably append ``(epoch, seq, payload)`` records, oldest first (one fsync)."""
        self._check_open()
        if not records:
            return
        blob = b"".join(encode_record(e, s, stamp_ns, p) for e, s, p in records)
        active = self._segments[-1]
        if active.size and active.size + len(blob) > self.segment_bytes:
            self._seal_active()
            self._open_new_segment()
            active = self._segments[-1]
        assert active.fd is not None and active.index is not None
        view = memoryview(blob)
        try:
            while view:
                written = os.write(active.fd, view)
                view = view[written:]
            if self.fsync:
                os.fdatasync(active.fd)
        except OSError as exc:  # disk full, I/O error: leave no half record behind
            with contextlib.suppress(OSError):
                os.ftruncate(active.fd, active.size)
            raise SpoolError(
                f"cannot append {len(records)} records to {active.path}: {exc}"
            ) from exc
        off = active.size
        idx = active.index
        for e, s, p in records:
            idx.offsets.append(off)
            idx.epochs.append(e)
            idx.seqs.append(s)
            idx.stamps.append(stamp_ns)
            idx.lengths.append(len(p))
            off += HEADER_BYTES + len(p)
        active.size = off
        active.state.extend(bytes(len(records)))
        self.stats.appended += len(records)
        self.stats.records += len(records)
        self._update_bytes()
        self._enforce_bound()

    def _seal_active(self) -> None:
        seg = self._segments[-1]
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None
        seg.sealed = True
        if seg.n_leased == 0 and seg.n_unconfirmed == 0:
            seg.index = None  # reloaded from the file when the drain gets here
        if seg.unacked == 0:
            self._delete(seg)
            self._segments.remove(seg)

    def _enforce_bound(self) -> None:
        while self.stats.bytes > self.max_bytes and len(self._segments) > 1:
            seg = self._segments.pop(0)
            lost = seg.count - seg.n_acked
            self.stats.dropped += lost
            self.stats.dropped_bytes += seg.size
            self.stats.records -= lost
            if seg.index is None:
                seg.index = self._load_index(seg)
            for i in range(seg.count):
                if seg.state[i] == LEASED:
                    self._leases.pop((seg.index.epochs[i], seg.index.seqs[i]), None)
                    self.stats.leased -= 1
                elif seg.state[i] == UNCONFIRMED:
                    self.stats.unconfirmed -= 1
                if seg.state[i] != ACKED:  # also expired ones, pending again
                    key = (seg.index.epochs[i], seg.index.seqs[i])
                    if self._unconfirmed.pop(key, None) is not None:
                        self.schedule.forget(key)
            self._delete(seg)
            log.warning(
                "spool full (%d > %d bytes): dropped the oldest %d unacknowledged reports "
                "(%d dropped since start)",
                self.stats.bytes,
                self.max_bytes,
                lost,
                self.stats.dropped,
            )
            self._update_bytes()
        self._sync_dir()

    def _delete(self, seg: _Segment) -> None:
        for fd in (seg.fd, seg.ack_fd):
            if fd is not None:
                os.close(fd)
        seg.fd = seg.ack_fd = None
        seg.path.unlink(missing_ok=True)
        seg.ack_path.unlink(missing_ok=True)
        seg.index = None
        self._dir_dirty = True

    def _update_bytes(self) -> None:
        self.stats.bytes = sum(s.size + s.ack_bytes() for s in self._segments)
        self.stats.segments = len(self._segments)
        self.stats.peak_bytes = max(self.stats.peak_bytes, self.stats.bytes)

    # -- reading ------------------------------------------------------------------

    def _load_index(self, seg: _Segment) -> _Index:
        idx, _end, _damaged = scan_records(seg.path.read_bytes()[: seg.size])
        if len(idx.offsets) != seg.count:  # the file changed under us: trust what is valid
            log.error(
                "spool: %s changed on disk (%d records, expected %d)",
                seg.path.name,
                len(idx.offsets),
                seg.count,
            )
            del seg.state[len(idx.offsets) :]
            seg.state.extend(bytes(max(0, len(idx.offsets) - seg.count)))
        return idx

    def _read(self, seg: _Segment, first: int, last: int) -> list[bytes]:
        """Payloads of records ``first..last-1`` of ``seg`` (one read)."""
        assert seg.index is not None
        idx = seg.index
        start = idx.offsets[first]
        stop = idx.offsets[last - 1] + HEADER_BYTES + idx.lengths[last - 1]
        with open(seg.path, "rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        return [
            data[
                idx.offsets[i] - start + HEADER_BYTES : idx.offsets[i]
                - start
                + HEADER_BYTES
                + idx.lengths[i]
            ]
            for i in range(first, last)
        ]

    def _select(self, max_records: int, max_bytes: int, lease: bool) -> list[Record]:
        out: list[Record] = []
        budget = max_bytes
        count = 0
        full = False
        for seg in self._segments:
            if full:
                break
            if seg.unacked - seg.n_leased - seg.n_unconfirmed == 0:
                continue
            if seg.index is None:
                seg.index = self._load_index(seg)
            idx = seg.index
            picked: list[int] = []
            for i in range(seg.hint, seg.count):
                if seg.state[i] != PENDING:
                    continue
                size = idx.lengths[i]
                if count >= max_records or (size > budget and count):
                    full = True
                    break
                budget -= size
                picked.append(i)
                count += 1
            if not picked:
                continue
            if lease:
                seg.hint = picked[-1] + 1
            run_start = 0  # read each contiguous run of records with one read
            for j in range(1, len(picked) + 1):
                if j < len(picked) and picked[j] == picked[j - 1] + 1:
                    continue
                first, last = picked[run_start], picked[j - 1] + 1
                payloads = self._read(seg, first, last)
                for k, payload in zip(range(first, last), payloads, strict=True):
                    out.append(Record(idx.epochs[k], idx.seqs[k], idx.stamps[k], payload))
                    if lease:
                        seg.state[k] = LEASED
                        self._leases[(idx.epochs[k], idx.seqs[k])] = (seg, k)
                if lease:
                    seg.n_leased += last - first
                run_start = j
        if lease:
            self.stats.leased += len(out)
        return out

    def peek(self, max_records: int, *, max_bytes: int = 1 << 62) -> list[Record]:
        """The oldest pending (not leased, not acked) records, without leasing them."""
        self._check_open()
        return self._select(max_records, max_bytes, lease=False)

    def lease(self, max_records: int, *, max_bytes: int = 1 << 62) -> list[Record]:
        """Take the oldest pending records for publishing (total payload <= ``max_bytes``,
        but always at least one record if any is pending)."""
        self._check_open()
        return self._select(max_records, max_bytes, lease=True)

    def release(self, keys: Iterable[Key]) -> int:
        """Return leased records to pending (sent again, oldest first). Returns how many."""
        self._check_open()
        n = 0
        for key in keys:
            ent = self._leases.pop(key, None)
            if ent is None:
                continue
            seg, i = ent
            if seg.state[i] == LEASED:
                seg.state[i] = PENDING
                seg.n_leased -= 1
                seg.hint = min(seg.hint, i)
                n += 1
        self.stats.leased -= n
        return n

    def ack(self, keys: Iterable[Key]) -> int:
        """Remove leased records for good (their PUBACK arrived, no confirmation wanted).
        Returns how many."""
        self._check_open()
        done: list[tuple[_Segment, int]] = []
        for key in keys:
            ent = self._leases.pop(key, None)
            if ent is None:
                self.stats.acks_unknown += 1
                continue
            seg, i = ent
            if seg.state[i] == LEASED:
                done.append((seg, i))
        n = self._settle(done)
        self.stats.acked += n
        return n

    def delivered(self, keys: Iterable[Key], now: float) -> int:
        """Leased records whose PUBACK arrived become unconfirmed (``now``: monotonic s);
        they stay until :meth:`confirm` or go back to pending by :meth:`expire`."""
        self._check_open()
        n = 0
        for key in keys:
            ent = self._leases.pop(key, None)
            if ent is None:
                self.stats.acks_unknown += 1  # confirmed (or dropped) while in flight
                continue
            seg, i = ent
            if seg.state[i] != LEASED:
                continue
            seg.state[i] = UNCONFIRMED
            seg.n_leased -= 1
            seg.n_unconfirmed += 1
            self._unconfirmed[key] = (seg, i)
            self.schedule.delivered(key, now)
            n += 1
        self.stats.leased -= n
        self.stats.unconfirmed += n
        return n

    def confirm(self, epoch: int, ranges: Iterable[tuple[int, int]],
                now: float | None = None) -> int:
        """Settle the records of ``epoch`` whose seq is in ``ranges`` (inclusive): the cloud
        committed them. Unconfirmed, pending-again-by-timeout and leased records all count;
        the rest is not waiting here. Idempotent. Returns how many were settled.
        ``now`` (monotonic s; default: the latest time passed in) feeds the schedule."""
        self._check_open()
        done: list[tuple[_Segment, int]] = []
        settled: list[Key] = []
        waiting = len(self._unconfirmed) + len(self._leases)
        for a, b in ranges:
            if b - a + 1 <= 4 * waiting + 16:
                keys: Iterable[Key] = [(epoch, q) for q in range(a, b + 1)]
            else:  # a long range: walk what is waiting instead
                keys = [k for k in (*self._unconfirmed, *self._leases)
                        if k[0] == epoch and a <= k[1] <= b]
            for key in keys:
                ent = self._unconfirmed.pop(key, None)
                lease = self._leases.pop(key, None)
                if lease is not None and lease[0].state[lease[1]] == LEASED:
                    done.append(lease)  # published again meanwhile; its PUBACK is moot
                    settled.append(key)
                elif ent is not None and ent[0].state[ent[1]] in (UNCONFIRMED, PENDING):
                    done.append(ent)  # PENDING: expired, not yet sent again
                    settled.append(key)
                else:
                    self.stats.confirms_unknown += 1
                    if ent is not None:
                        self.schedule.forget(key)
        self.schedule.settled(settled, now)
        n = self._settle(done)
        self.stats.confirmed += n
        return n

    def expire(self, now: float, timeout: float, *, probe: int = 1 << 30) -> int:
        """Unconfirmed records the schedule names due (``timeout``: the confirm timeout;
        ``probe``: at most this many per silent round; see :mod:`edge.republish`) go
        back to pending: they are published again, oldest first. Returns how many."""
        self._check_open()
        n = 0
        for key in self.schedule.due(now, timeout, probe):
            ent = self._unconfirmed.get(key)
            if ent is None:
                continue
            seg, i = ent
            if seg.state[i] != UNCONFIRMED:
                continue
            seg.state[i] = PENDING
            seg.n_unconfirmed -= 1
            seg.hint = min(seg.hint, i)
            n += 1
        self.stats.unconfirmed -= n
        self.stats.republished += n
        return n

    def settle_unconfirmed(self) -> int:
        """Settle every unconfirmed record as if confirmed (confirmations cannot arrive:
        see :meth:`edge.publisher.Publisher.on_subscribed`). Returns how many."""
        self._check_open()
        done = [(seg, i) for seg, i in self._unconfirmed.values()
                if seg.state[i] == UNCONFIRMED]
        self._unconfirmed.clear()
        self.schedule.clear()
        n = self._settle(done)
        self.stats.acked += n
        return n

    def next_expiry(self, timeout: float) -> float | None:
        """The earliest time (monotonic s) an unconfirmed record may be due, if any."""
        return self.schedule.next_due(timeout)

    def _settle(self, done: list[tuple[_Segment, int]]) -> int:
        """Mark records acked for good (``.ack`` entries; emptied sealed segments go)."""
        touched: dict[int, _Segment] = {}
        entries: dict[int, list[bytes]] = {}
        n = 0
        for seg, i in done:
            st = seg.state[i]
            if st == ACKED:
                continue
            if st == LEASED:
                seg.n_leased -= 1
                self.stats.leased -= 1
            elif st == UNCONFIRMED:
                seg.n_unconfirmed -= 1
                self.stats.unconfirmed -= 1
            seg.state[i] = ACKED
            seg.n_acked += 1
            n += 1
            touched[seg.id] = seg
            entries.setdefault(seg.id, []).append(_ACK.pack(i, zlib.crc32(struct.pack("<I", i))))
        self.stats.records -= n
        for seg_id, seg in touched.items():
            if seg.unacked == 0 and seg.sealed:
                self._delete(seg)
                self._segments.remove(seg)
                continue
            if seg.ack_fd is None:
                seg.ack_fd = os.open(seg.ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                self._dir_dirty = True
            os.write(seg.ack_fd, b"".join(entries[seg_id]))
        self._update_bytes()
        return n

    def sync(self) -> None:
        """Make acks and deletions durable (cheap; call every second or so)."""
        self._check_open()
        if self.fsync:
            for seg in self._segments:
                if seg.ack_fd is not None:
                    os.fdatasync(seg.ack_fd)
        self._sync_dir()

    # -- introspection ------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records waiting to be leased."""
        return self.stats.records - self.stats.leased - self.stats.unconfirmed

    def oldest_unconfirmed(self) -> float | None:
        """PUBACK time (monotonic s) of the longest-waiting unconfirmed record, if any."""
        return self.schedule.oldest()

    def oldest_stamp_ns(self) -> int | None:
        """Append time of the oldest unacknowledged record (loads at most one index)."""
        for seg in self._segments:
            if seg.unacked == 0:
                continue
            if seg.index is None:
                seg.index = self._load_index(seg)
            for i in range(seg.count):
                if seg.state[i] != ACKED:
                    return seg.index.stamps[i]
        return None

    def close(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self.sync()
        for seg in self._segments:
            for fd in (seg.fd, seg.ack_fd):
                if fd is not None:
                    os.close(fd)
            seg.fd = seg.ack_fd = None
        # an empty active segment is left for the next open to clean up
        os.close(self._lock_fd)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise SpoolError("spool is closed")

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
