"""The ring's consumer (the writer): reads batches, commits them once they are durable.

Read: copy records below ``published`` from the read position, then re-read ``claim`` and
drop whatever may have been overwritten during the copy (``seq < claim - capacity``),
counting it as lost; every record's ``seq`` is checked; padding is skipped. ``committed``
moves only when the caller says the records are durable (``commit``), so a consumer
killed mid-batch loses nothing: its successor reads again from ``committed``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import layout as L
from . import segment as S
from .errors import CorruptRing, LayoutMismatch, RingMissing
from .header import W_CLAIM, W_COMMITTED, W_PUBLISHED, _W, _check_header, _copy_out, _Endpoint, _Header, now_us, take_segment_role
from .telemetry import TelemetrySchema

log = logging.getLogger("tagpipe.shm")


@dataclass
class ReadBatch:
    """Records read from the ring, not yet committed.

    ``start``..``end`` is the seq range this batch covers (including lost and padding
    records); ``records`` holds only real records (a private copy); ``lost`` counts
    records overwritten before they could be read, ``padding`` the holes skipped.
    """

    epoch: int
    start: int
    end: int
    records: np.ndarray
    lost: int
    padding: int

    def __len__(self) -> int:
        return len(self.records)


class Consumer(_Endpoint):
    """The ring's only remover of records (the writer)."""

    role = "consumer"

    def __init__(self, name, shm, lock, schema: TelemetrySchema | None = None) -> None:
        super().__init__(name, shm, lock, schema)
        self._recover_journal()
        self.read_pos = int(self.h.u[W_COMMITTED])
        # One entry per read not yet committed: (end, lost, padding, delivered). commit()
        # adds up every read up to the batch's end, so a read that returned no records
        # (only lost ones) still gets counted when a later batch is committed.
        self._ledger: deque[tuple[int, int, int, int]] = deque()
        self.h.u[_W["consumer.pid"]] = os.getpid()
        self.h.add("consumer.starts", 1)
        self.h.set("consumer.state", 1)
        self.heartbeat()

    @classmethod
    def open(
        cls,
        name: str,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        stop: Callable[[], bool] | None = None,
        lock_retry_s: float = 3.0,
        max_backoff_s: float = 2.0,
        telemetry: TelemetrySchema | None = None,
    ) -> "Consumer | None":
        """Take the consumer role of ring ``name``, waiting for the ring to exist.

        While the ring is missing (or has another layout) ``on_wait(reason)`` is called on
        the first attempt and then every 30 s, and attempts back off up to
        ``max_backoff_s``. Returns None if ``stop()`` became true while waiting.
        With ``telemetry``, only a ring created with that schema will do (another one is
        waited for like another layout), and its consumer-owned words can be written.
        Raises RoleTaken; RingMissing / LayoutMismatch if ``wait`` is false.
        """
        S.check_ring_name(name)
        lock = S.RoleLock(name, "consumer")
        lock.acquire(lock_retry_s)
        try:
            shm = _attach_when_ready(name, wait, on_wait, stop, max_backoff_s, telemetry)
        except BaseException:
            lock.release()
            raise
        if shm is None:
            lock.release()
            return None
        try:
            take_segment_role(shm, name, "consumer")  # a writer whose lock file was deleted
        except BaseException:
            shm.close()
            lock.release()
            raise
        return cls._adopt(name, shm, lock, telemetry)

    def _recover_journal(self) -> None:
        """Finish the copy of a commit whose consumer died after its commit point.

        ``commit`` first zeroes ``j_end``, writes the new totals to the journal, then sets
        ``j_end`` and ``committed`` to the batch's end, then copies the totals. So
        ``j_end == committed`` means the journal holds the totals of the last commit
        (copying them again is harmless); anything else means the last commit never
        reached its commit point and the totals already match ``committed``.
        """
        u = self.h.u
        if u[_W["consumer.j_end"]] == u[W_COMMITTED] and u[W_COMMITTED] != 0:
            self._apply_journal()

    def _apply_journal(self) -> None:
        u = self.h.u
        for name in ("lost", "padding", "delivered", "batches"):
            u[_W[f"consumer.{name}"]] = u[_W[f"consumer.j_{name}"]]

    @property
    def committed(self) -> int:
        return int(self.h.u[W_COMMITTED])

    @property
    def published(self) -> int:
        return int(self.h.u[W_PUBLISHED])

    def backlog(self) -> int:
        """Records published and not yet read by this consumer."""
        return max(0, int(self.h.u[W_PUBLISHED]) - self.read_pos)

    def pending(self) -> int:
        """Records published and not yet committed."""
        return max(0, int(self.h.u[W_PUBLISHED]) - int(self.h.u[W_COMMITTED]))

    def wait(self, timeout_s: float) -> bool:
        """Wait for the doorbell (at most ``timeout_s``). True if records may have arrived."""
        if self.backlog() > 0:
            return True
        self.doorbell.wait(timeout_s)
        return self.backlog() > 0

    def rewind(self) -> None:
        """Forget reads not yet committed: the next read starts at ``committed``."""
        self.read_pos = int(self.h.u[W_COMMITTED])
        self._ledger.clear()

    def read(self, max_n: int) -> ReadBatch:
        """Copy up to ``max_n`` records after the read position (never blocks).

        Records overwritten before or during the copy are dropped and counted in the
        batch's ``lost``; padding is skipped. Raises CorruptRing if a record does not carry
        its expected seq (a protocol violation, never expected).
        """
        hu = self.h.u
        cap = self.capacity
        first = start = self.read_pos
        published = int(hu[W_PUBLISHED])
        lost = 0
        floor = int(hu[W_CLAIM]) - cap
        if start < floor:
            lost += floor - start
            start = floor
        n = min(max(published - start, 0), max_n)
        if n == 0:
            self.read_pos = start
            if lost:
                self._ledger.append((start, lost, 0, 0))
            return ReadBatch(self.epoch, first, start, _EMPTY, lost, 0)
        out = _copy_out(self.data, start, n)
        floor = int(hu[W_CLAIM]) - cap  # anything below was being overwritten while we copied
        if start < floor:
            drop = min(floor - start, n)
            lost += drop
            out = out[drop:]
            start += drop
            n -= drop
        if n:
            seqs = out["seq"]
            if seqs[0] != start or seqs[-1] != start + n - 1 or (n > 2 and not np.all(np.diff(seqs) == 1)):
                raise CorruptRing(f"ring {self.name!r}: records {start}..{start + n} do not carry their seq")
            pad_mask = (out["flags"] & L.FLAG_PADDING) != 0
            padding = int(pad_mask.sum())
            if padding:
                out = out[~pad_mask]
        else:
            padding = 0
        end = start + n
        self.read_pos = end
        if end > first:
            self._ledger.append((end, lost, padding, len(out)))
        return ReadBatch(self.epoch, first, end, out, lost, padding)

    def commit(self, batch: ReadBatch) -> None:
        """Mark ``batch`` and every read before it durable: their slots may now be reused.

        Counts every read up to ``batch.end`` (including reads that returned only lost
        records and were never committed themselves). Committing an older batch again is
        a no-op. Raises ValueError for a batch that is not one of this consumer's reads
        since the last commit (e.g. a batch read before ``rewind()`` that overlaps a newer
        read).
        """
        u = self.h.u
        committed = int(u[W_COMMITTED])
        if batch.end <= committed:
            return
        lost = padding = delivered = 0
        covered = committed
        ledger = self._ledger
        while ledger and ledger[0][0] <= batch.end:
            end, l_, p_, d_ = ledger.popleft()
            if end <= committed:
                continue
            lost, padding, delivered, covered = lost + l_, padding + p_, delivered + d_, end
        if covered != batch.end:
            if covered == committed and batch.start == committed and not ledger:
                # A batch read before rewind(): its own counts cover exactly its range.
                lost, padding, delivered = batch.lost, batch.padding, len(batch.records)
                self.read_pos = max(self.read_pos, batch.end)
            else:
                raise ValueError(
                    f"ring {self.name!r}: batch {batch.start}..{batch.end} was not read in order"
                    f" after committed {committed}; commit batches in the order they were read"
                )
        if lost:
            self.h.i[_W["consumer.last_lost_us"]] = now_us()
            log.error("ring %r: %d records were overwritten before the writer could read them", self.name, lost)
        # Journal first (see _recover_journal): invalidate, totals, then its end.
        u[_W["consumer.j_end"]] = 0
        u[_W["consumer.j_lost"]] = u[_W["consumer.lost"]] + lost
        u[_W["consumer.j_padding"]] = u[_W["consumer.padding"]] + padding
        u[_W["consumer.j_delivered"]] = u[_W["consumer.delivered"]] + delivered
        u[_W["consumer.j_batches"]] = u[_W["consumer.batches"]] + 1
        u[_W["consumer.j_end"]] = batch.end
        u[W_COMMITTED] = batch.end  # the commit point
        self._apply_journal()
        self.h.i[_W["consumer.heartbeat_us"]] = now_us()

    def peek_ts_us(self, seq: int) -> int | None:
        """Poll time of record ``seq`` if it is still in the ring, else None."""
        if seq >= int(self.h.u[W_PUBLISHED]):
            return None
        rec = self.data[seq % self.capacity]
        ts = int(rec["ts_us"])
        # Read after the copy: a slot being overwritten has seq < claim - capacity.
        if int(rec["seq"]) != seq or seq < int(self.h.u[W_CLAIM]) - self.capacity:
            return None
        return ts


_EMPTY = np.empty(0, dtype=L.RECORD_DTYPE)


def _attach_when_ready(name, wait, on_wait, stop, max_backoff_s, schema=None):
    delay = 0.05
    last_said = 0.0
    said = None
    while True:
        try:
            shm = S.attach_segment(name)
        except FileNotFoundError:
            reason = f"waiting for ring {name!r} (no poller has created it yet)"
            shm = None
        except RingMissing as e:
            if not wait:
                raise
            reason = f"waiting for ring {name!r}: {e}"
            shm = None
        if shm is not None:
            try:
                if shm.size < L.HEADER_BYTES:
                    raise RingMissing(f"ring {name!r} is still being created")
                # Check a copy: an exception's traceback must not keep a view of the
                # mapping alive, or shm.close() below fails with BufferError.
                _check_header(_Header(bytearray(shm.buf[: L.HEADER_BYTES]), None), name, shm.size, schema)
                return shm
            except (RingMissing, LayoutMismatch) as e:
                shm.close()
                if not wait:
                    raise
                reason = f"waiting for ring {name!r}: {e}"
        elif not wait:
            raise RingMissing(f"ring {name!r} does not exist")
        if on_wait and (reason != said or time.monotonic() - last_said >= 30):
            on_wait(reason)
            said, last_said = reason, time.monotonic()
        if stop and stop():
            return None
        time.sleep(delay)
        delay = min(delay * 2, max_backoff_s)
