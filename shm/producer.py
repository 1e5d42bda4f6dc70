"""The ring's producer (the poller): creates the ring, publishes records, never blocks.

Publish: ``claim = end``, copy the records into their slots, ``published = end``, ring the
doorbell. When the ring is full the oldest records are overwritten and counted. A producer
killed between claim and publish leaves ``published < claim``; the next one fills that hole
with padding records (``FLAG_PADDING``) and publishes them.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time

from typing import Callable

import numpy as np

from . import layout as L
from . import segment as S
from .errors import CapacityError, LayoutMismatch, RingMissing, RingNotDrained
from .telemetry import TelemetrySchema
from .header import (
    W_ALERT_ACTIVE,
    W_ALERTS,
    W_BATCHES,
    W_CAPACITY,
    W_CLAIM,
    W_COMMITTED,
    W_EPOCH,
    W_MAGIC,
    W_OVERWRITTEN,
    W_OVERWRITTEN_UPTO,
    W_PRODUCER_HEARTBEAT,
    W_PUBLISHED,
    W_RECSIZE,
    W_SCHEMA,
    W_VERSION,
    _W,
    _copy_in,
    take_segment_role,
    _Endpoint,
    _Header,
    now_us,
)

log = logging.getLogger("tagpipe.shm")

# Test-only: see Producer._install_test_stall. Never set in a deployment.
TEST_PUBLISH_STALL_ENV = "TAGPIPE_TEST_PUBLISH_STALL"

# The one-record path packs straight into the slot; same bytes as RECORD_DTYPE.
_RECORD_STRUCT = struct.Struct("<Qqd16s16sBB6x")
assert _RECORD_STRUCT.size == L.RECORD_SIZE
assert all(
    L.RECORD_DTYPE.fields[n][1] == off
    for n, off in zip(("seq", "ts_us", "value", "plc_code", "tag_address", "quality", "flags"), (0, 8, 16, 24, 40, 56, 57))
)


class Producer(_Endpoint):
    """The ring's only writer of records (the poller). Creates the ring if needed.

    ``notes`` lists what ``open`` decided (created, replaced, kept the old size), for the
    caller to log.
    """

    role = "producer"

    def __init__(self, name, shm, lock, alert_threshold_pct: float, notes: list[str],
                 schema: TelemetrySchema | None = None) -> None:
        super().__init__(name, shm, lock, schema)
        self.notes = notes
        # Called as on_account(records, overwritten, now_us) after every publish / flush
        # (once per batch, never per record): a caller's hook for its own rolling windows.
        self.on_account: Callable[[int, int, int], None] | None = None
        self.alert_threshold_pct = float(alert_threshold_pct)
        self._unaccounted = 0
        # Hot-path handles for put(): the header words and the raw record bytes.
        self._hu = self.h.u
        self._dbuf = shm.buf
        self._slot0 = L.HEADER_BYTES
        self._pack = _RECORD_STRUCT.pack_into
        self._published = int(self.h.u[W_PUBLISHED])
        self._fill_hole()
        stall = os.environ.get(TEST_PUBLISH_STALL_ENV)
        if stall:
            self._install_test_stall(stall)
        # The producer before this one, as it left the header (for the gap ledger): starts,
        # last heartbeat (us), pid, state (ROLE_STATE code; 1 "running" = it did not stop).
        self.previous = (int(self.h.get("producer.starts")), int(self.h.get("producer.heartbeat_us")),
                         int(self.h.get("producer.pid")), int(self.h.get("producer.state")))
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
        telemetry: TelemetrySchema | None = None,
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
            shm, notes = cls._create_or_attach(name, capacity, telemetry)
        except BaseException:
            lock.release()
            raise
        return cls._adopt(name, shm, lock, alert_threshold_pct, notes, telemetry)

    @staticmethod
    def _create_or_attach(name: str, capacity: int, schema: TelemetrySchema | None = None):
        notes: list[str] = []
        try:
            shm = S.attach_segment(name)
        except FileNotFoundError:
            return _create(name, capacity, schema), [f"created ring {name!r} with capacity {capacity}"]
        except RingMissing:
            # Empty file: a creator died before sizing it (we hold the producer lock).
            S.unlink_segment(name)
            return _create(name, capacity, schema), [f"replaced half-created ring {name!r}"]
        try:
            # Before anything is decided about this segment: a producer whose lock file
            # was deleted may still be running on it.
            take_segment_role(shm, name, "producer")
        except BaseException:
            shm.close()
            raise
        size_ok = shm.size >= L.HEADER_BYTES
        h = _Header(shm.buf, None)
        magic = h.u[W_MAGIC] if size_ok else 0
        if magic == 0:
            # A creator died before finishing the header: nothing in it was ever published.
            del h
            shm.close()
            S.unlink_segment(name)
            return _create(name, capacity, schema), [f"replaced half-created ring {name!r}"]
        if magic != L.MAGIC:
            del h
            shm.close()
            raise LayoutMismatch(f"{S.segment_path(name)} is not a tagpipe ring; remove it or choose another RING_NAME")
        published, committed = int(h.u[W_PUBLISHED]), int(h.u[W_COMMITTED])
        drained = committed >= published
        old_cap, version, recsize = int(h.u[W_CAPACITY]), int(h.u[W_VERSION]), int(h.u[W_RECSIZE])
        fingerprint = int(h.u[W_SCHEMA])
        del h
        other = None  # what makes the old ring unusable as it is: replaced once drained
        if version == L.LAYOUT_VERSION and schema is not None and fingerprint != schema.fingerprint:
            # Same ring layout, other telemetry words: the same replace-when-drained rule.
            other = (f"another telemetry schema ({fingerprint:#x}, this version {schema.fingerprint:#x})",
                     "another telemetry schema")
        elif version != L.LAYOUT_VERSION or recsize != L.RECORD_SIZE:
            other = (f"layout version {version}", f"layout version {version}")
        if other is not None:
            shm.close()
            if not drained:
                raise RingNotDrained(
                    f"ring {name!r} has {other[0]} and still holds {published - committed} unwritten records;"
                    f" run the previous version's writer until it is drained, or discard them with"
                    f" 'python -m pipeline delete-ring --name {name}'"
                )
            S.unlink_segment(name)
            return _create(name, capacity, schema), [f"replaced drained ring {name!r} of {other[1]}"]
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
                return _create(name, capacity, schema), [
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

    def _install_test_stall(self, spec: str) -> None:
        """Test hook (``TAGPIPE_TEST_PUBLISH_STALL="p,seconds"``, set only by the ring's chaos
        tests): with probability ``p`` a ``publish`` writes half of a chunk, sleeps
        ``seconds`` with the chunk claimed but not published, then writes the rest, so a
        SIGKILL can be aimed between claim and publish. Installed as an instance attribute:
        without the variable, ``publish`` runs the plain ``_write`` and costs nothing more.
        Raises ValueError for a malformed value."""
        p_text, _, s_text = spec.partition(",")
        chance, seconds = float(p_text), float(s_text)
        if not (0.0 <= chance <= 1.0 and 0.0 <= seconds <= 10.0):
            raise ValueError(f"{TEST_PUBLISH_STALL_ENV}={spec!r}: want 'p,seconds' with 0 <= p <= 1, 0 <= seconds <= 10")
        plain = self._write
        rnd = secrets.SystemRandom()

        def stalling_write(recs: np.ndarray, start: int) -> None:
            if len(recs) < 2 or rnd.random() >= chance:
                return plain(recs, start)
            half = len(recs) // 2
            plain(recs[:half], start)
            time.sleep(seconds)  # claimed, half written, not published: the window
            plain(recs[half:], start + half)

        self._write = stalling_write  # type: ignore[method-assign]

    def _write(self, recs: np.ndarray, start: int) -> None:
        n = len(recs)
        recs["seq"] = np.arange(start, start + n, dtype=np.uint64)
        _copy_in(self.data, start, recs)

    @property
    def published(self) -> int:
        return self._published

    def publish(self, recs: np.ndarray) -> int:
        """Publish records (a RECORD_DTYPE array; ``seq`` is filled in here). Never blocks.

        Returns the new ``published`` value. More records than the capacity are published
        in chunks (the oldest are overwritten and counted).
        """
        if recs.dtype != L.RECORD_DTYPE:  # numpy would convert field by field, silently
            raise TypeError(f"publish() takes a RECORD_DTYPE array, not {recs.dtype}")
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
        """Overflow accounting, heartbeat, the ``on_account`` hook and the utilization alert.

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
        t = now_us()
        self.h.i[W_PRODUCER_HEARTBEAT] = t
        if self.on_account is not None:
            self.on_account(n, overwritten, t)
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

    def close(self) -> None:
        if not self.closed and self.h is not None:
            self.flush()
        self.on_account = None  # a hook may hold views of the mapping (e.g. table rows)
        self._hu = self._dbuf = None  # drop buffer exports before the mapping closes
        super().close()


def _create(name: str, capacity: int, schema: TelemetrySchema | None = None):
    size = L.segment_bytes(capacity)
    free = S.shm_free_bytes()
    if size > free:
        raise CapacityError(
            f"a ring of {capacity} records needs {size} bytes of shared memory; {S.SHM_DIR} has {free} free"
        )
    shm = S.create_segment(name, size)
    try:
        take_segment_role(shm, name, "producer")  # a new file: nobody else can hold it yet
    except BaseException:
        shm.close()
        raise
    h = _Header(shm.buf, "creator")
    u = h.u
    u[W_RECSIZE] = L.RECORD_SIZE
    u[W_CAPACITY] = capacity
    u[_W["data_offset"]] = L.HEADER_BYTES
    u[W_EPOCH] = secrets.randbits(63) or 1
    h.i[_W["created_us"]] = now_us()
    u[_W["header_bytes"]] = L.HEADER_BYTES
    u[W_SCHEMA] = 0 if schema is None else schema.fingerprint
    u[W_VERSION] = L.LAYOUT_VERSION
    u[W_MAGIC] = L.MAGIC  # last: an attacher seeing the magic sees a complete header
    del h, u
    return shm
