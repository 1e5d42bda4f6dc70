"""Where the writer produces gap-ledger records (pipeline/common/gaps.py).

The writer sees three kinds of gap itself and turns each into a FLAG_GAP record that
rides with the ring batch it was found in, so it is written to the database (or a
backup file, then replayed) in the same transaction as that batch's data:

* ``overwritten``: a read reported ``lost`` records: seqs ``start .. start + lost - 1``
  of the batch's stream, between the poll time of the last record read before (the
  writer remembers it; unknown after a writer restart: then the first time after) and
  the first record after.
* ``poller_down`` across a replaced ring: the old ring's last producer heartbeat to the
  new ring's creation, in the new ring's stream at its first read position.
* ``quarantine``: rows the database refused, made durable in a quarantine file inside
  the sink's transaction; the gap record is returned to the sink, which writes it in
  that same transaction.

The identity of each is fixed by where it was found (epoch, kind, first seq): a batch
read again after a crash or a rewind gives the same identity, and the database keeps
the first copy. (The poller publishes ``poller_down`` at its own start and
``plc_unreachable`` records into the ring itself; they arrive as ordinary records.)
"""

from __future__ import annotations

import os
import re

import numpy as np

from pipeline.common import gaps as G
from shm.ring import ReadBatch, now_us


class GapFinder:
    """Adds the gap records a ring batch reveals (main thread only)."""

    def __init__(self) -> None:
        self.last_ts_us: int | None = None  # poll time of the last record made durable
        self._replaced: tuple[int, np.ndarray] | None = None  # (new epoch, its poller_down record)

    def records_for(self, batch: ReadBatch) -> np.ndarray:
        """``batch.records`` preceded by the gap records this batch reveals (the batch
        itself is left as it is: its counts are the ring's)."""
        extra = []
        if self._replaced is not None and self._replaced[0] == batch.epoch:
            extra.append(self._replaced[1])
        if batch.lost:
            data = batch.records[~G.is_gap(batch.records)] if len(batch.records) else batch.records
            end = int(data["ts_us"][0]) if len(data) else now_us()
            start = self.last_ts_us if self.last_ts_us is not None else end
            extra.append(G.make_record(G.OVERWRITTEN, batch.start, min(start, end), end, G.ALL_PLCS,
                                       str(batch.start + batch.lost - 1)))
        if not extra:
            return batch.records
        return np.concatenate(extra + [batch.records])

    def durable(self, batch: ReadBatch) -> None:
        """``batch`` (and its gap records) is durable: remember its last poll time."""
        if self._replaced is not None and self._replaced[0] == batch.epoch:
            self._replaced = None
        recs = batch.records
        if len(recs):
            # The last data record's index, not a copy of every data record (each batch).
            data = np.flatnonzero(~G.is_gap(recs))
            if len(data):
                self.last_ts_us = int(recs["ts_us"][data[-1]])

    def replaced(self, old_heartbeat_us: int, new_epoch: int, new_created_us: int, first_seq: int) -> None:
        """The ring was replaced: the next batch of ``new_epoch`` carries a poller_down gap
        from the old producer's last heartbeat to the new ring's creation."""
        start = old_heartbeat_us or new_created_us
        rec = G.make_record(G.POLLER_DOWN, first_seq, min(start, new_created_us), new_created_us, G.ALL_PLCS, "ring_replaced")
        self._replaced = (new_epoch, rec)


def quarantine_record(rows: np.ndarray, lines: int, path: str) -> np.ndarray:
    """The ``quarantine`` gap record of ``rows`` (RECORD_DTYPE, at least one) moved as
    ``lines`` lines to quarantine file ``path`` (quarantine_YYYYMMDD.csv)."""
    m = re.search(r"(\d{8})", os.path.basename(path))
    stamp = m.group(1) if m else "unknown"
    data = rows[~G.is_gap(rows)] if len(rows) else rows
    plcs = {bytes(p) for p in data["plc_code"].tolist()}
    plc = plcs.pop().rstrip(b"\0").decode("ascii", "replace") if len(plcs) == 1 else G.ALL_PLCS
    ts = data["ts_us"] if len(data) else np.array([now_us()], dtype=np.int64)
    first_seq = int(data["seq"].min()) if len(data) else 0
    return G.make_record(G.QUARANTINE, first_seq, int(ts.min()), int(ts.max()), plc, f"{stamp}:{lines}")


def bad_lines_record(first_line: int, lines: int, start_us: int, path: str) -> np.ndarray:
    """The ``quarantine`` gap record of ``lines`` unreadable backup-file lines from
    ``first_line`` (its identity in the backup file's synthetic stream)."""
    m = re.search(r"(\d{8})", os.path.basename(path))
    return G.make_record(G.QUARANTINE, first_line, start_us, start_us, G.ALL_PLCS, f"{m.group(1) if m else 'unknown'}:{lines}")
