"""The tag ring: one producer, one consumer, any number of read-only observers.

Protocol (see ``shm.layout`` for the words):

* The producer publishes k records: ``claim = end``, copy the records (one or two numpy
  slice copies), ``published = end``, ring the doorbell. It never blocks: when the ring is
  full the oldest records are overwritten (and counted).
* The consumer copies records below ``published`` starting at its read position, then
  re-reads ``claim`` and drops whatever may have been overwritten during the copy
  (``seq < claim - capacity``), counting it as lost. Every record's ``seq`` is checked.
  ``committed`` moves only when the caller says the records are durable (``commit``), so
  a consumer killed mid-batch loses nothing: its successor reads from ``committed``.
* A producer killed between claim and publish leaves ``published < claim``; the next
  producer fills that hole with padding records (``FLAG_PADDING``) and publishes them.
* Roles are enforced with ``flock`` on a lock file per role; the doorbell is a named
  semaphore used as a hint only (every wait has a timeout).

Memory ordering: each header word is an aligned 8-byte store, and x86-64 keeps stores in
order and loads in order, which is what claim-before-copy-before-publish relies on.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import layout as L
from . import segment as S
from .errors import CapacityError, CorruptRing, LayoutMismatch, RingMissing, RingNotDrained

log = logging.getLogger("tagpipe.shm")

# Word indices used on hot paths.
_W = {f.name: f.word for f in L.FIELDS}
W_MAGIC = _W["magic"]
W_VERSION = _W["layout_version"]
W_RECSIZE = _W["record_size"]
W_CAPACITY = _W["capacity"]
W_EPOCH = _W["epoch"]
W_CLAIM = _W["producer.claim"]
W_PUBLISHED = _W["producer.published"]
W_COMMITTED = _W["consumer.committed"]
W_BATCHES = _W["producer.batches"]
W_OVERWRITTEN = _W["producer.overwritten"]
W_OVERWRITTEN_UPTO = _W["producer.overwritten_upto"]
W_PRODUCER_HEARTBEAT = _W["producer.heartbeat_us"]
W_ALERT_ACTIVE = _W["producer.alert_active"]
W_ALERTS = _W["producer.alerts"]
# These words never move between layout versions, so a drained check works on any ring.
assert (W_MAGIC, W_VERSION, W_RECSIZE, W_CAPACITY, W_CLAIM, W_PUBLISHED, W_COMMITTED) == (0, 1, 2, 3, 16, 17, 48)


# The one-record path packs straight into the slot; same bytes as RECORD_DTYPE.
_RECORD_STRUCT = struct.Struct("<Qqd16s16sBB6x")
assert _RECORD_STRUCT.size == L.RECORD_SIZE
assert all(
    L.RECORD_DTYPE.fields[n][1] == off
    for n, off in zip(("seq", "ts_us", "value", "plc_code", "tag_address", "quality", "flags"), (0, 8, 16, 24, 40, 56, 57))
)


def now_us() -> int:
    return time.time_ns() // 1000


class _Header:
    """Typed access to the header words of a mapped segment (``owner`` enforced on writes)."""

    def __init__(self, buf, role: str | None) -> None:
        mv = memoryview(buf)[: L.HEADER_BYTES]
        self.u = mv.cast("Q")
        self.i = mv.cast("q")
        self.f = mv.cast("d")
        self.role = role

    def get(self, name: str) -> int | float:
        f = L.FIELD_BY_NAME[name]
        return self.f[f.word] if f.kind == "f64" else (self.i[f.word] if f.kind == "i64" else self.u[f.word])

    def set(self, name: str, value: int | float) -> None:
        f = L.FIELD_BY_NAME[name]
        if f.owner != self.role:
            raise PermissionError(f"{self.role} may not write {name} (owned by {f.owner})")
        if f.kind == "f64":
            self.f[f.word] = float(value)
        elif f.kind == "i64":
            self.i[f.word] = int(value)
        else:
            self.u[f.word] = int(value)

    def add(self, name: str, delta: int) -> None:
        f = L.FIELD_BY_NAME[name]
        if f.owner != self.role:
            raise PermissionError(f"{self.role} may not write {name} (owned by {f.owner})")
        self.u[f.word] = self.u[f.word] + int(delta)


def _check_header(h: _Header, ring: str, size: int | None = None) -> None:
    magic = h.u[W_MAGIC]
    if magic == 0:
        raise RingMissing(f"ring {ring!r} is still being created")
    if magic != L.MAGIC:
        raise LayoutMismatch(f"ring {ring!r}: {S.segment_path(ring)} is not a tagpipe ring (bad magic)")
    if h.u[W_VERSION] != L.LAYOUT_VERSION or h.u[W_RECSIZE] != L.RECORD_SIZE:
        raise LayoutMismatch(
            f"ring {ring!r} has layout version {h.u[W_VERSION]} with {h.u[W_RECSIZE]}-byte records;"
            f" this version reads layout {L.LAYOUT_VERSION} with {L.RECORD_SIZE}-byte records"
        )
    if size is not None and size < L.segment_bytes(int(h.u[W_CAPACITY])):
        raise LayoutMismatch(f"ring {ring!r}: segment of {size} bytes is too small for capacity {h.u[W_CAPACITY]}")


def _data_view(buf, capacity: int) -> np.ndarray:
    return np.frombuffer(buf, dtype=L.RECORD_DTYPE, count=capacity, offset=L.HEADER_BYTES)


class _Endpoint:
    """What the producer and consumer share: the mapping, the role lock, the doorbell."""

    role = ""

    def __init__(self, name: str, shm, lock: S.RoleLock) -> None:
        self.name = name
        self._shm = shm
        self._lock = lock
        self.h = _Header(shm.buf, self.role)
        self.capacity = int(self.h.u[W_CAPACITY])
        self.epoch = int(self.h.u[W_EPOCH])
        self.data = _data_view(shm.buf, self.capacity)
        self.inode = os.fstat(shm._fd).st_ino  # type: ignore[attr-defined]
        self.doorbell = S.Doorbell(name)
        self.closed = False

    def set(self, name: str, value: int | float) -> None:
        self.h.set(name, value)

    def add(self, name: str, delta: int = 1) -> None:
        self.h.add(name, delta)

    def get(self, name: str) -> int | float:
        return self.h.get(name)

    def heartbeat(self) -> None:
        self.h.i[_W[f"{self.role}.heartbeat_us"]] = now_us()

    def replaced(self) -> bool:
        """True if the segment this endpoint maps was deleted or replaced by a new one."""
        return S.segment_inode(self.name) != self.inode

    def close(self) -> None:
        """Mark the role stopped and release the lock. Never deletes the ring."""
        if self.closed:
            return
        self.closed = True
        try:
            self.h.set(f"{self.role}.state", 0)
            self.h.set(f"{self.role}.pid", 0)
        except (ValueError, TypeError):
            pass
        self.doorbell.close()
        # numpy views hold exports of the buffer; drop them before closing the mapping.
        self.data = None  # type: ignore[assignment]
        self.h = None  # type: ignore[assignment]
        try:
            self._shm.close()
        except BufferError:  # a caller still holds a view; the mapping dies with the process
            pass
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Producer(_Endpoint):
    """The ring's only writer of records (the poller). Creates the ring if needed.

    ``notes`` lists what ``open`` decided (created, replaced, kept the old size), for the
    caller to log.
    """

    role = "producer"

    def __init__(self, name, shm, lock, alert_threshold_pct: float, notes: list[str]) -> None:
        super().__init__(name, shm, lock)
        self.notes = notes
        self.alert_threshold_pct = float(alert_threshold_pct)
        self._unaccounted = 0
        # Hot-path handles for put(): the header words and the raw record bytes.
        self._hu = self.h.u
        self._dbuf = shm.buf
        self._slot0 = L.HEADER_BYTES
        self._pack = _RECORD_STRUCT.pack_into
        self._published = int(self.h.u[W_PUBLISHED])
        self._fill_hole()
        self.h.u[_W["producer.pid"]] = os.getpid()
        self.h.add("producer.starts", 1)
        self.h.set("producer.state", 1)
        self.heartbeat()

    @classmethod
    def open(
        cls,
        name: str,
        capacity: int,
        alert_threshold_pct: float = 80.0,
        lock_retry_s: float = 3.0,
    ) -> "Producer":
        """Take the producer role of ring ``name``, creating or replacing the segment.

        An existing ring with another capacity or layout is replaced only when drained
        (published == committed); with another capacity and records waiting, the old
        size is kept (see ``notes``). Raises RoleTaken, RingNotDrained, LayoutMismatch,
        CapacityError.
        """
        S.check_ring_name(name)
        if not L.MIN_CAPACITY <= capacity <= L.MAX_CAPACITY:
            raise CapacityError(f"capacity {capacity} must be between {L.MIN_CAPACITY} and {L.MAX_CAPACITY}")
        lock = S.RoleLock(name, "producer")
        lock.acquire(lock_retry_s)
        try:
            shm, notes = cls._create_or_attach(name, capacity)
        except BaseException:
            lock.release()
            raise
        return cls(name, shm, lock, alert_threshold_pct, notes)

    @staticmethod
    def _create_or_attach(name: str, capacity: int):
        notes: list[str] = []
        try:
            shm = S.attach_segment(name)
        except FileNotFoundError:
            return _create(name, capacity), [f"created ring {name!r} with capacity {capacity}"]
        except RingMissing:
            # Empty file: a creator died before sizing it (we hold the producer lock).
            S.unlink_segment(name)
            return _create(name, capacity), [f"replaced half-created ring {name!r}"]
        size_ok = shm.size >= L.HEADER_BYTES
        h = _Header(shm.buf, None)
        magic = h.u[W_MAGIC] if size_ok else 0
        if magic == 0:
            # A creator died before finishing the header: nothing in it was ever published.
            del h
            shm.close()
            S.unlink_segment(name)
            return _create(name, capacity), [f"replaced half-created ring {name!r}"]
        if magic != L.MAGIC:
            del h
            shm.close()
            raise LayoutMismatch(f"{S.segment_path(name)} is not a tagpipe ring; remove it or choose another RING_NAME")
        published, committed = int(h.u[W_PUBLISHED]), int(h.u[W_COMMITTED])
        drained = committed >= published
        old_cap, version, recsize = int(h.u[W_CAPACITY]), int(h.u[W_VERSION]), int(h.u[W_RECSIZE])
        del h
        if version != L.LAYOUT_VERSION or recsize != L.RECORD_SIZE:
            shm.close()
            if not drained:
                raise RingNotDrained(
                    f"ring {name!r} has layout version {version} and still holds {published - committed}"
                    f" unwritten records; run the previous version's writer until it is drained, or"
                    f" discard them with 'python -m pipeline delete-ring --name {name}'"
                )
            S.unlink_segment(name)
            return _create(name, capacity), [f"replaced drained ring {name!r} of layout version {version}"]
        if shm.size < L.segment_bytes(old_cap):
            shm.close()
            raise LayoutMismatch(
                f"ring {name!r}: {S.segment_path(name)} is {shm.size} bytes, too small for its"
                f" capacity {old_cap}; delete it with 'python -m pipeline delete-ring --name {name}'"
            )
        if old_cap != capacity:
            if drained:
                shm.close()
                S.unlink_segment(name)
                return _create(name, capacity), [
                    f"replaced drained ring {name!r}: capacity {old_cap} -> {capacity}"
                ]
            notes.append(
                f"kept ring {name!r} at capacity {old_cap} (BUFFER_MAX_SIZE is {capacity}):"
                f" {published - committed} records are not yet written; it is resized once drained"
            )
        else:
            notes.append(f"attached to ring {name!r} (capacity {old_cap}, {published - committed} records waiting)")
        return shm, notes

    def _fill_hole(self) -> None:
        claim = int(self.h.u[W_CLAIM])
        if claim <= self._published:
            self.h.u[W_CLAIM] = self._published
            return
        n = claim - self._published
        pad = np.zeros(n, dtype=L.RECORD_DTYPE)
        pad["flags"] = L.FLAG_PADDING
        # Publish the padding at the same seqs the dead producer had claimed.
        self._write(pad, self._published)
        self.h.u[W_PUBLISHED] = claim
        self._published = claim
        self.h.add("producer.padding", n)
        self.notes.append(f"filled a hole of {n} records left by a producer that died mid-publish")

    def _write(self, recs: np.ndarray, start: int) -> None:
        n = len(recs)
        recs["seq"] = np.arange(start, start + n, dtype=np.uint64)
        cap = self.capacity
        s0 = start % cap
        n1 = min(n, cap - s0)
        self.data[s0 : s0 + n1] = recs[:n1]
        if n1 < n:
            self.data[: n - n1] = recs[n1:]

    @property
    def published(self) -> int:
        return self._published

    def publish(self, recs: np.ndarray) -> int:
        """Publish records (a RECORD_DTYPE array; ``seq`` is filled in here). Never blocks.

        Returns the new ``published`` value. More records than the capacity are published
        in chunks (the oldest are overwritten and counted).
        """
        cap = self.capacity
        n = len(recs)
        if n == 0:
            return self._published
        for off in range(0, n, cap):
            chunk = recs[off : off + cap]
            start = self._published
            end = start + len(chunk)
            self.h.u[W_CLAIM] = end
            self._write(chunk, start)
            self.h.u[W_PUBLISHED] = end
            self._published = end
        hu = self._hu
        hu[W_BATCHES] = hu[W_BATCHES] + 1
        self._account(n)
        self.doorbell.ring()
        return self._published

    def put(self, ts_us: int, value: float, plc_code: bytes, tag_address: bytes, quality: int, flags: int = 0) -> None:
        """Publish one record (the one-record path). Never blocks.

        Call ``flush()`` after a burst of puts: it does the accounting and rings the
        doorbell, which ``put`` skips for speed. ``plc_code`` / ``tag_address`` must have
        been checked with ``layout.check_field_text`` where they entered (configuration):
        like a numpy assignment, packing does not check their length.
        """
        seq = self._published
        end = seq + 1
        hu = self._hu
        hu[W_CLAIM] = end  # claim before the slot is touched ...
        self._pack(self._dbuf, self._slot0 + (seq % self.capacity) * 64, seq, ts_us, value, plc_code, tag_address, quality, flags)
        hu[W_PUBLISHED] = end  # ... published only after it is complete
        self._published = end
        self._unaccounted += 1

    def flush(self) -> None:
        """Account for records ``put`` since the last flush and ring the doorbell."""
        if self._unaccounted:
            n, self._unaccounted = self._unaccounted, 0
            self._account(n)
            self.doorbell.ring()

    def _account(self, n: int) -> None:
        """Overflow accounting, the hour window, heartbeat and the utilization alert.

        ``producer.overwritten`` counts seqs below ``published - capacity`` that were not
        yet committed when their slot was reused (an estimate from the producer's side:
        a consumer may hold a copy; ``consumer.lost`` is the exact count).
        """
        hu = self._hu
        end = self._published
        cap = self.capacity
        committed = hu[W_COMMITTED]
        overwritten = 0
        floor = end - cap
        if floor > 0:
            upto = max(hu[W_OVERWRITTEN_UPTO], committed)
            if floor > upto:
                overwritten = floor - upto
                hu[W_OVERWRITTEN] = hu[W_OVERWRITTEN] + overwritten
                hu[W_OVERWRITTEN_UPTO] = floor
            elif upto > hu[W_OVERWRITTEN_UPTO]:
                hu[W_OVERWRITTEN_UPTO] = upto
        t = time.time_ns() // 1000
        self.h.i[W_PRODUCER_HEARTBEAT] = t
        minute = t // 60_000_000
        base = L.HOUR_BUCKETS_BASE + (minute % L.HOUR_BUCKETS) * L.HOUR_BUCKET_WORDS
        if hu[base] != minute:  # a new minute reuses the bucket of an hour ago
            hu[base + 1] = 0
            hu[base + 2] = 0
            hu[base] = minute
        hu[base + 1] = hu[base + 1] + n
        if overwritten:
            hu[base + 2] = hu[base + 2] + overwritten
        used = end - max(committed, floor)
        pct = 100.0 * used / cap
        threshold = self.alert_threshold_pct
        if not hu[W_ALERT_ACTIVE]:
            if pct >= threshold:
                hu[W_ALERT_ACTIVE] = 1
                hu[W_ALERTS] = hu[W_ALERTS] + 1
                log.warning(
                    "ring %r is %.1f%% full (BUFFER_ALERT_THRESHOLD %.1f%%): the writer is falling behind",
                    self.name, pct, threshold,
                )
        elif pct < threshold - min(5.0, threshold / 2):  # hysteresis: one warning per crossing
            hu[W_ALERT_ACTIVE] = 0
            log.info("ring %r back to %.1f%% full", self.name, pct)

    def used(self) -> int:
        """Records published but not yet committed (at most the capacity)."""
        return min(self._published - int(self.h.u[W_COMMITTED]), self.capacity)

    def plc_slot(self, index: int) -> "PlcSlot":
        return PlcSlot(self.h, index)

    def close(self) -> None:
        if not self.closed and self.h is not None:
            self.flush()
        self._hu = self._dbuf = None  # drop buffer exports before the mapping closes
        super().close()


class PlcSlot:
    """Writer of one per-PLC row of the header's PLC table (producer only)."""

    def __init__(self, h: _Header, index: int) -> None:
        if not 0 <= index < L.MAX_PLCS:
            raise IndexError(f"PLC slot {index} out of range (max {L.MAX_PLCS})")
        self._u = h.u
        self._i = h.i
        self._base = L.PLC_TABLE_BASE + index * L.PLC_SLOT_WORDS

    def set_code(self, code: str) -> None:
        w0, w1 = L.encode_code(code)
        self._u[self._base] = w0
        self._u[self._base + 1] = w1

    def set(self, field: str, value: int) -> None:
        self._i[self._base + L.PLC_SLOT_FIELDS.index(field)] = int(value)

    def add(self, field: str, delta: int = 1) -> None:
        w = self._base + L.PLC_SLOT_FIELDS.index(field)
        self._i[w] = self._i[w] + int(delta)


def _create(name: str, capacity: int):
    size = L.segment_bytes(capacity)
    free = S.shm_free_bytes()
    if size > free:
        raise CapacityError(
            f"a ring of {capacity} records needs {size} bytes of shared memory; {S.SHM_DIR} has {free} free"
        )
    shm = S.create_segment(name, size)
    h = _Header(shm.buf, "creator")
    u = h.u
    u[W_RECSIZE] = L.RECORD_SIZE
    u[W_CAPACITY] = capacity
    u[_W["data_offset"]] = L.HEADER_BYTES
    u[W_EPOCH] = secrets.randbits(63) or 1
    h.i[_W["created_us"]] = now_us()
    u[_W["header_bytes"]] = L.HEADER_BYTES
    u[W_VERSION] = L.LAYOUT_VERSION
    u[W_MAGIC] = L.MAGIC  # last: an attacher seeing the magic sees a complete header
    del h, u
    return shm


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

    def __init__(self, name, shm, lock) -> None:
        super().__init__(name, shm, lock)
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
    ) -> "Consumer | None":
        """Take the consumer role of ring ``name``, waiting for the ring to exist.

        While the ring is missing (or has another layout) ``on_wait(reason)`` is called on
        the first attempt and then every 30 s, and attempts back off up to
        ``max_backoff_s``. Returns None if ``stop()`` became true while waiting.
        Raises RoleTaken; RingMissing / LayoutMismatch if ``wait`` is false.
        """
        S.check_ring_name(name)
        lock = S.RoleLock(name, "consumer")
        lock.acquire(lock_retry_s)
        try:
            shm = _attach_when_ready(name, wait, on_wait, stop, max_backoff_s)
        except BaseException:
            lock.release()
            raise
        if shm is None:
            lock.release()
            return None
        return cls(name, shm, lock)

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
        out = np.empty(n, dtype=L.RECORD_DTYPE)
        s0 = start % cap
        n1 = min(n, cap - s0)
        out[:n1] = self.data[s0 : s0 + n1]
        if n1 < n:
            out[n1:] = self.data[: n - n1]
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

    def record_write(self, ok: bool, items: int, latency_us: int) -> None:
        """Add one batch write to the current 10-second bucket of the rolling metrics."""
        u = self.h.u
        idx = now_us() // (L.WRITER_BUCKET_S * 1_000_000)
        base = L.WRITER_BUCKETS_BASE + (idx % L.WRITER_BUCKETS) * L.WRITER_BUCKET_WORDS
        if u[base] != idx:
            for k in range(1, L.WRITER_BUCKET_WORDS):
                u[base + k] = 0
            u[base] = idx
        if ok:
            u[base + 1] = u[base + 1] + 1
            u[base + 3] = u[base + 3] + items
            u[base + 4] = u[base + 4] + latency_us
            u[base + 5] = max(u[base + 5], latency_us)
        else:
            u[base + 2] = u[base + 2] + 1


_EMPTY = np.empty(0, dtype=L.RECORD_DTYPE)


def _attach_when_ready(name, wait, on_wait, stop, max_backoff_s):
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
                _check_header(_Header(bytearray(shm.buf[: L.HEADER_BYTES]), None), name, shm.size)
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


@dataclass
class Snapshot:
    """A copy of the header taken at ``taken_us`` (see ``shm.stats`` for derived figures)."""

    ring: str
    taken_us: int
    fields: dict[str, int | float]
    hour: list[tuple[int, int, int]]
    writer_buckets: list[tuple[int, ...]]
    plcs: list[dict[str, object]]


class Observer:
    """A read-only view of a ring (the web process, the status command).

    The segment is mapped with PROT_READ: nothing here can write to it.
    """

    def __init__(self, name: str) -> None:
        S.check_ring_name(name)
        self.name = name
        try:
            self._mm, self.inode = S.map_readonly(name)
        except FileNotFoundError:
            raise RingMissing(f"ring {name!r} does not exist") from None
        try:
            _check_header(_Header(self._mm[: L.HEADER_BYTES], None), name, len(self._mm))
        except Exception:
            self._mm.close()
            raise
        self.h = _Header(self._mm, None)
        self.capacity = int(self.h.u[W_CAPACITY])
        self.epoch = int(self.h.u[W_EPOCH])
        self.data = _data_view(self._mm, self.capacity)

    def replaced(self) -> bool:
        return S.segment_inode(self.name) != self.inode

    def snapshot(self) -> Snapshot:
        words = np.frombuffer(self._mm, dtype="<u8", count=L.HEADER_WORDS).copy()
        ints = words.view("<i8")
        floats = words.view("<f8")
        fields: dict[str, int | float] = {}
        for f in L.FIELDS:
            v = floats[f.word] if f.kind == "f64" else (ints[f.word] if f.kind == "i64" else words[f.word])
            fields[f.name] = v.item()
        hour = []
        for b in range(L.HOUR_BUCKETS):
            base = L.HOUR_BUCKETS_BASE + b * L.HOUR_BUCKET_WORDS
            hour.append((int(words[base]), int(words[base + 1]), int(words[base + 2])))
        wb = []
        for b in range(L.WRITER_BUCKETS):
            base = L.WRITER_BUCKETS_BASE + b * L.WRITER_BUCKET_WORDS
            wb.append(tuple(int(x) for x in words[base : base + len(L.WRITER_BUCKET_FIELDS)]))
        plcs = []
        for i in range(min(int(fields["poller.plc_count"]), L.MAX_PLCS)):
            base = L.PLC_TABLE_BASE + i * L.PLC_SLOT_WORDS
            row: dict[str, object] = {"plc_code": L.decode_code(int(words[base]), int(words[base + 1]))}
            for k, fname in enumerate(L.PLC_SLOT_FIELDS[2:], start=2):
                row[fname] = int(ints[base + k])
            plcs.append(row)
        return Snapshot(self.name, now_us(), fields, hour, wb, plcs)

    def records(self, start: int, n: int) -> np.ndarray:
        """Copy of up to ``n`` records from ``start`` (may include overwritten ones: check seq)."""
        n = max(0, min(n, self.capacity))
        out = np.empty(n, dtype=L.RECORD_DTYPE)
        s0 = start % self.capacity
        n1 = min(n, self.capacity - s0)
        out[:n1] = self.data[s0 : s0 + n1]
        out[n1:] = self.data[: n - n1]
        return out

    def close(self) -> None:
        self.data = None  # type: ignore[assignment]
        self.h = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def delete_ring(name: str, force: bool = False) -> list[str]:
    """Delete a ring's segment, doorbell and lock files. Returns what was removed.

    Refuses (RingError) while a producer or consumer holds its role, unless ``force``.
    Records still in the ring are gone: this is the explicit admin action.
    """
    from .errors import RingError

    S.check_ring_name(name)
    if not force:
        for role in ("producer", "consumer"):
            if S.role_alive(name, role):
                raise RingError(f"ring {name!r} still has a running {role}; stop it first (or use --force)")
    removed = []
    if S.unlink_segment(name):
        removed.append(S.segment_path(name))
    if S.unlink_doorbell(name):
        removed.append(f"semaphore {S.doorbell_name(name)}")
    S.remove_lock_files(name)
    return removed
