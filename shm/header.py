"""Header access shared by every role: word indices, typed word access with the owner
rule, the attach-time check, and what the producer and the consumer have in common.

Memory ordering: each header word is an aligned 8-byte store, and x86-64 keeps stores in
order and loads in order, which is what claim-before-copy-before-publish relies on.
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import layout as L
from . import segment as S
from .errors import LayoutMismatch, RingMissing, RoleTaken
from .telemetry import Row, TelemetrySchema

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
W_SCHEMA = _W["telemetry_schema"]
# These words never move between layout versions, so a drained check works on any ring.
assert (W_MAGIC, W_VERSION, W_RECSIZE, W_CAPACITY, W_CLAIM, W_PUBLISHED, W_COMMITTED) == (0, 1, 2, 3, 16, 17, 48)


def now_us() -> int:
    return time.time_ns() // 1000


class _Header:
    """Typed access to the header words of a mapped segment (``owner`` enforced on writes).

    Words are addressed by name: the protocol words of ``layout.FIELDS`` and, given a
    ``schema``, its telemetry words and tables. KeyError for a name that is neither.
    """

    def __init__(self, buf, role: str | None, schema: TelemetrySchema | None = None) -> None:
        mv = memoryview(buf)[: L.HEADER_BYTES]
        self.u = mv.cast("Q")
        self.i = mv.cast("q")
        self.f = mv.cast("d")
        self.role = role
        self.schema = schema
        self.fields = L.FIELD_BY_NAME if schema is None else {**L.FIELD_BY_NAME, **schema.fields}

    def _view(self, kind: str):
        return self.f if kind == "f64" else (self.i if kind == "i64" else self.u)

    def get(self, name: str) -> int | float:
        f = self.fields[name]
        return self._view(f.kind)[f.word]

    def _writable(self, name: str):
        f = self.fields[name]
        if f.owner != self.role:
            raise PermissionError(f"{self.role} may not write {name} (owned by {f.owner})")
        return f

    def set(self, name: str, value: int | float) -> None:
        f = self._writable(name)
        self._view(f.kind)[f.word] = float(value) if f.kind == "f64" else int(value)

    def add(self, name: str, delta: int | float) -> None:
        f = self._writable(name)
        v = self._view(f.kind)
        v[f.word] = v[f.word] + (float(delta) if f.kind == "f64" else int(delta))

    def _writable_table(self, table: str):
        if self.schema is None or table not in self.schema.tables:
            raise KeyError(f"no telemetry table {table!r} (was the endpoint opened with its schema?)")
        base, t = self.schema.tables[table]
        if t.owner != self.role:
            raise PermissionError(f"{self.role} may not write table {table} (owned by {t.owner})")
        return base, t

    def row(self, table: str, index: int) -> Row:
        """Owner-checked writer of row ``index`` of telemetry table ``table``.

        Raises KeyError (no such table), PermissionError (another role owns it),
        IndexError (row out of range).
        """
        base, t = self._writable_table(table)
        if not 0 <= index < t.rows:
            raise IndexError(f"row {index} of table {table} out of range (it has {t.rows})")
        return Row(self._view(t.kind), base + index * len(t.columns), t.columns, t.kind)

    def cells(self, table: str) -> memoryview:
        """Owner-checked writable view of every cell of telemetry table ``table``, for a hot
        path: cell (row, col) is item ``row * len(columns) + col``. Raises like ``row``."""
        base, t = self._writable_table(table)
        return self._view(t.kind)[base : base + t.rows * len(t.columns)]


def _check_header(h: _Header, ring: str, size: int | None = None, schema: TelemetrySchema | None = None) -> None:
    """Raise RingMissing / LayoutMismatch unless the header is a complete ring of this
    layout (and, given a ``schema``, of that telemetry schema)."""
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
    if schema is not None and h.u[W_SCHEMA] != schema.fingerprint:
        raise LayoutMismatch(
            f"ring {ring!r} has telemetry schema {h.u[W_SCHEMA]:#x}; this version uses {schema.fingerprint:#x}"
        )


def _data_view(buf, capacity: int) -> np.ndarray:
    return np.frombuffer(buf, dtype=L.RECORD_DTYPE, count=capacity, offset=L.HEADER_BYTES)


# The records as opaque fixed-size items: numpy copies a structured array field by field
# (~25-35 ns per record here), the same bytes as one item each at memcpy speed (~1.5 ns).
_RAW = np.dtype((np.void, L.RECORD_DTYPE.itemsize))


def _copy_out(data: np.ndarray, start: int, n: int) -> np.ndarray:
    """A copy of the ``n`` slots (``n <= len(data)``) holding seqs ``start``.. of the ring
    ``data``: one byte copy, two when the range wraps past the end."""
    cap = len(data)
    out = np.empty(n, dtype=L.RECORD_DTYPE)
    raw_out, raw = out.view(_RAW), data.view(_RAW)
    s0 = start % cap
    n1 = min(n, cap - s0)
    raw_out[:n1] = raw[s0 : s0 + n1]
    if n1 < n:
        raw_out[n1:] = raw[: n - n1]
    return out


def _copy_in(data: np.ndarray, start: int, recs: np.ndarray) -> None:
    """Write ``recs`` (at most ``len(data)``) into the slots of seqs ``start``.. (wrapping)."""
    cap, n = len(data), len(recs)
    if recs.dtype == L.RECORD_DTYPE:
        data, recs = data.view(_RAW), recs.view(_RAW)  # same layout: copy bytes
    s0 = start % cap
    n1 = min(n, cap - s0)
    data[s0 : s0 + n1] = recs[:n1]
    if n1 < n:
        data[: n - n1] = recs[n1:]


def take_segment_role(shm, name: str, role: str) -> None:
    """Lock ``role``'s byte of the segment ``shm`` maps (see ``segment.lock_segment_role``).

    The lock files can be deleted from under their holder; this lock cannot, so a second
    producer or consumer is refused even then. Raises RoleTaken naming the ring and the
    holder's pid (from the header's ``<role>.pid`` word; the lock itself does not say).
    The caller closes ``shm`` on failure.
    """
    if S.lock_segment_role(shm._fd, role):
        return
    pid = 0
    if shm.size >= L.HEADER_BYTES:
        words = memoryview(shm.buf)[: L.HEADER_BYTES].cast("Q")
        pid = int(words[_W[f"{role}.pid"]])
        words.release()
    raise RoleTaken(
        f"ring {name!r} already has a {role} (pid {pid if pid else 'unknown'}), holding its lock on"
        f" {S.segment_path(name)}; stop it first"
    )


class _Endpoint:
    """What the producer and consumer share: the mapping, the role lock, the doorbell."""

    role = ""

    def __init__(self, name: str, shm, lock: S.RoleLock, schema: TelemetrySchema | None = None) -> None:
        self.name = name
        self._shm = shm
        self._lock = lock
        self.h = _Header(shm.buf, self.role, schema)
        self.capacity = int(self.h.u[W_CAPACITY])
        self.epoch = int(self.h.u[W_EPOCH])
        self.data = _data_view(shm.buf, self.capacity)
        self.inode = os.fstat(shm._fd).st_ino  # type: ignore[attr-defined]
        self.doorbell = S.Doorbell(name)
        self.closed = False

    @classmethod
    def _adopt(cls, name: str, shm, lock: S.RoleLock, *args):
        """``cls(name, shm, lock, *args)`` for ``open()``, which holds the role lock and the
        mapping. If construction fails (e.g. the doorbell cannot be opened) the mapping is
        closed and the lock released before the exception propagates: a failed open never
        keeps the role locked."""
        try:
            return cls(name, shm, lock, *args)
        except BaseException:
            try:
                shm.close()
            except BufferError:
                pass
            lock.release()
            raise

    def set(self, name: str, value: int | float) -> None:
        """Write a protocol or telemetry word by name. PermissionError if another role owns it."""
        self.h.set(name, value)

    def add(self, name: str, delta: int = 1) -> None:
        self.h.add(name, delta)

    def get(self, name: str) -> int | float:
        return self.h.get(name)

    def row(self, table: str, index: int) -> Row:
        """Writer of one row of a telemetry table this role owns (see ``_Header.row``)."""
        return self.h.row(table, index)

    def cells(self, table: str) -> memoryview:
        """Every cell of a telemetry table this role owns (see ``_Header.cells``)."""
        return self.h.cells(table)

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
        S.unlock_segment_role(self._shm._fd, self.role)  # even if a view keeps the mapping open
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
