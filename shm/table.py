"""A shared table: fixed-width rows in their own segment, one writer, any number of readers.

``shm`` knows no meaning here (like ``shm.telemetry``): the caller gives a numpy row
``dtype``, the rows split into consecutive *blocks* (each written as a unit), and an opaque
``meta`` blob (bytes) written once at creation. The writer overwrites a block's rows in
place; a reader copies any or all rows at any time and never sees a torn block.

Byte layout of ``/dev/shm/<name>`` (little-endian u64 words)::

    0    magic "TPTABLE1"
    8    row_size (bytes)         16  rows          24  blocks
    32   meta_len (bytes)         40  dtype fingerprint (BLAKE2b-8 of dtype.descr)
    48   created_us (UTC)         56  writer pid
    HEADER_BYTES (4096): blocks x u64 generation words (the seqlocks)
    then blocks x u64 first row of each block
    then meta_len bytes of meta, then rows x row_size bytes of rows (8-byte aligned)

Seqlock per block: the writer makes the block's generation odd, writes the rows, makes it
even again. A reader copies generation, rows, generation, and keeps the copy only when
both generations are equal and even; otherwise it copies that block again. This holds on
x86-64 (stores are not reordered with other stores, loads not with other loads), and each
step is a separate numpy call the compiler cannot move across. A writer killed inside a
write leaves its block odd: a reader gives up on it after ``settle_s`` and reports it torn.

The segment is made with ``os.open`` + ``mmap``, never ``multiprocessing.SharedMemory``,
so Python 3.11's resource tracker never learns of it and cannot unlink it when a process
exits (the trap described in ``shm.segment``). A writer replaces a table atomically
(``rename`` over the old name): a reader that checks ``changed()`` maps the new one.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import time

import numpy as np

from .header import now_us

SHM_DIR = "/dev/shm"
MAGIC = int.from_bytes(b"TPTABLE1", "little")
HEADER_BYTES = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_H = np.dtype("<u8")


class TableMissing(FileNotFoundError):
    """No table of that name (its writer has not made it yet), or it is not a table."""


class TableMismatch(ValueError):
    """The table exists but its rows are not of the reader's dtype."""


def table_path(name: str) -> str:
    """``/dev/shm/<name>``. Raises ValueError for a name outside 1-100 of A-Z a-z 0-9 _ . -"""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.startswith("."):
        raise ValueError(f"table name {name!r} must be 1-100 characters of A-Z a-z 0-9 _ . -")
    return os.path.join(SHM_DIR, name)


def dtype_fingerprint(dtype: np.dtype) -> int:
    return int.from_bytes(hashlib.blake2b(repr(np.dtype(dtype).descr).encode(), digest_size=8).digest(), "little") or 1


def _layout(rows: int, blocks: int, meta_len: int, row_size: int) -> tuple[int, int, int, int]:
    gens = HEADER_BYTES
    starts = gens + 8 * blocks
    meta = starts + 8 * blocks
    data = -(-(meta + meta_len) // 64) * 64
    return gens, starts, meta, data + rows * row_size


def unlink_table(name: str) -> bool:
    """Remove the table (readers keep their mapping until they close). True if it existed."""
    try:
        os.unlink(table_path(name))
        return True
    except FileNotFoundError:
        return False


class TableWriter:
    """The one writer of a table. Make it with ``create``; ``block(i)`` gives block i's writer."""

    def __init__(self, name: str, mm: mmap.mmap, dtype: np.dtype, block_sizes: list[int]) -> None:
        self.name = name
        self._mm = mm
        n = sum(block_sizes)
        meta_len = int(np.frombuffer(mm, dtype=_H, count=8)[4])
        gens, _, _, data_end = _layout(n, len(block_sizes), meta_len, dtype.itemsize)
        self.gens = np.frombuffer(mm, dtype=_H, count=len(block_sizes), offset=gens)
        self.rows = np.frombuffer(mm, dtype=dtype, count=n, offset=data_end - n * dtype.itemsize)
        first = np.concatenate([[0], np.cumsum(block_sizes)]).astype(int)
        self._bounds = [(int(first[i]), int(first[i + 1])) for i in range(len(block_sizes))]

    @classmethod
    def create(cls, name: str, dtype: np.dtype, block_sizes: list[int], meta: bytes = b"") -> "TableWriter":
        """Make a new table (every row zero, every generation 0) and put it in place of any
        table of that name, atomically. ``block_sizes``: rows of each block, in order.

        Raises ValueError for a bad name or block size, OSError (ENOSPC...) when
        /dev/shm cannot hold it.
        """
        dtype = np.dtype(dtype)
        if any(int(b) < 0 for b in block_sizes):
            raise ValueError("table block sizes must be >= 0")
        path = table_path(name)
        rows = int(sum(block_sizes))
        gens, starts, meta_off, end = _layout(rows, len(block_sizes), len(meta), dtype.itemsize)
        tmp = f"{path}.new{os.getpid()}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            # Reserve every page now (tmpfs is sparse): a full /dev/shm fails here, not as
            # a SIGBUS in some later write.
            os.posix_fallocate(fd, 0, max(end, HEADER_BYTES))
            mm = mmap.mmap(fd, max(end, HEADER_BYTES), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        head = np.frombuffer(mm, dtype=_H, count=8)
        head[1:8] = [dtype.itemsize, rows, len(block_sizes), len(meta), dtype_fingerprint(dtype),
                     now_us(), os.getpid()]
        np.frombuffer(mm, dtype=_H, count=len(block_sizes), offset=starts)[:] = (
            np.concatenate([[0], np.cumsum(block_sizes)[:-1]]) if block_sizes else [])
        mm[meta_off:meta_off + len(meta)] = meta
        head[0] = MAGIC  # last: a reader that sees the magic sees a complete header
        del head
        os.rename(tmp, path)
        return cls(name, mm, dtype, [int(b) for b in block_sizes])

    def block(self, i: int) -> "BlockWriter":
        """Writer of block ``i`` (IndexError if there is none)."""
        lo, hi = self._bounds[i]
        return BlockWriter(self.gens, i, self.rows[lo:hi])

    def close(self) -> None:
        """Unmap (the table stays for readers). Drop every BlockWriter first."""
        self.gens = self.rows = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass  # a BlockWriter still holds a view: the map goes with the process


class BlockWriter:
    """Writes one block's rows under its seqlock. ``rows`` is the block's own (writable) view."""

    __slots__ = ("_gens", "_i", "rows", "_cols")

    def __init__(self, gens: np.ndarray, i: int, rows: np.ndarray) -> None:
        self._gens, self._i, self.rows = gens, i, rows
        self._cols = {f: rows[f] for f in rows.dtype.names or ()}

    def write(self, **columns) -> None:
        """Set whole columns of the block (each value a scalar or an array of the block's
        length), seen by readers all at once. KeyError for an unknown column."""
        g, i = self._gens, self._i
        g[i] += 1  # odd: readers retry this block
        for name, value in columns.items():
            self._cols[name][:] = value
        g[i] += 1  # even: consistent again


class TableReader:
    """A read-only mapping (PROT_READ) of a table: it cannot write a byte of it.

    Raises TableMissing when there is no table yet, TableMismatch when its rows are not
    of ``dtype``.
    """

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        path = table_path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise TableMissing(f"table {name!r} does not exist") from None
        try:
            st = os.fstat(fd)
            if st.st_size < HEADER_BYTES:
                raise TableMissing(f"table {name!r} is not a table ({st.st_size} bytes)")
            self._mm = mmap.mmap(fd, st.st_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self.inode = st.st_ino
        finally:
            os.close(fd)
        head = np.frombuffer(self._mm, dtype=_H, count=8).copy()
        if int(head[0]) != MAGIC:
            self._mm.close()
            raise TableMissing(f"table {name!r} is not a table (bad magic)")
        if int(head[5]) != dtype_fingerprint(self.dtype) or int(head[1]) != self.dtype.itemsize:
            self._mm.close()
            raise TableMismatch(f"table {name!r} holds rows of another layout than this reader's")
        rows, blocks, meta_len = int(head[2]), int(head[3]), int(head[4])
        gens, starts, meta, end = _layout(rows, blocks, meta_len, self.dtype.itemsize)
        if end > len(self._mm):
            self._mm.close()
            raise TableMissing(f"table {name!r} is shorter than its header says (truncated)")
        self.created_us = int(head[6])
        self.writer_pid = int(head[7])
        self.meta = bytes(self._mm[meta:meta + meta_len])
        self._gens = np.frombuffer(self._mm, dtype=_H, count=blocks, offset=gens)
        first = np.frombuffer(self._mm, dtype=_H, count=blocks, offset=starts).astype(np.int64)
        self._bounds = list(zip(first.tolist(), np.append(first[1:], rows).tolist()))
        self._rows = np.frombuffer(self._mm, dtype=self.dtype, count=rows, offset=end - rows * self.dtype.itemsize)
        self._stuck: dict[int, int] = {}  # block -> odd generation it was given up at

    def __len__(self) -> int:
        return len(self._rows)

    def changed(self) -> bool:
        """True if the table's name now holds another table (or none): reopen to see it."""
        try:
            return os.stat(table_path(self.name)).st_ino != self.inode
        except FileNotFoundError:
            return True

    def snapshot(self, settle_s: float = 0.2, min_tries: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """Copy every row. Returns (rows, torn): ``torn`` is a bool per row, true for the
        rows of a block its writer kept in the middle of a write for ``settle_s`` seconds
        and ``min_tries`` copies (a writer killed mid-write; those rows are whatever the copy
        caught). A block found stuck at the same odd generation as last time is reported
        torn at once, so a dead writer costs the reader one wait, not one per call."""
        g1 = self._gens.copy()
        out = self._rows.copy()
        g2 = self._gens.copy()
        torn = np.zeros(len(out), dtype=bool)
        for b in np.flatnonzero((g1 != g2) | (g1 & 1)).tolist():
            lo, hi = self._bounds[b]
            deadline = time.monotonic() + settle_s
            tries = 0
            while True:
                a = int(self._gens[b])
                part = self._rows[lo:hi].copy()
                if a == int(self._gens[b]) and not a & 1:
                    out[lo:hi] = part
                    self._stuck.pop(b, None)
                    break
                tries += 1
                if self._stuck.get(b) == a or (tries >= min_tries and time.monotonic() > deadline):
                    out[lo:hi] = part
                    torn[lo:hi] = True
                    if a & 1:
                        self._stuck[b] = a
                    break
                time.sleep(0.0002)
        return out, torn

    def close(self) -> None:
        self._gens = self._rows = None  # type: ignore[assignment]
        try:
            self._mm.close()
        except BufferError:
            pass


__all__ = ["BlockWriter", "TableMismatch", "TableMissing", "TableReader", "TableWriter", "table_path", "unlink_table"]
