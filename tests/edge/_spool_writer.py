"""A spool writer for the kill test: appends, leases and acks until killed.

Protocol on stdout (one line per event, flushed):
``A epoch seq_first seq_last`` after an append returned (those records are durable);
``K epoch seq`` *before* acking a record (it may be gone from then on).
"""

from __future__ import annotations

import hashlib
import random
import sys

from edge.spool import Spool


def payload(epoch: int, seq: int) -> bytes:
    rng = random.Random(epoch ^ (seq * 1_000_003))
    n = rng.choice([10, 200, 1600, 1600, 1600, 5000, 40_000])
    unit = hashlib.sha256(f"{epoch}:{seq}".encode()).digest()
    return (unit * (n // len(unit) + 1))[:n]


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    epoch = rng.getrandbits(63)
    seq = 0
    out = sys.stdout
    with Spool(path, max_bytes=1 << 34, segment_bytes=512 * 1024, fsync=True) as spool:
        while True:
            k = rng.randint(1, 8)
            spool.append([(epoch, seq + i, payload(epoch, seq + i)) for i in range(k)])
            out.write(f"A {epoch} {seq} {seq + k - 1}\n")
            out.flush()
            seq += k
            if rng.random() < 0.8:
                leased = spool.lease(rng.randint(1, 12))
                done = [r for r in leased if rng.random() < 0.7]
                for r in done:
                    out.write(f"K {r.epoch} {r.seq}\n")
                out.flush()
                spool.ack([r.key for r in done])
                spool.release([r.key for r in leased if r not in done])
                if rng.random() < 0.3:
                    spool.sync()


if __name__ == "__main__":
    main()
