"""Read-only observers of a ring (the web process, the status command)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import layout as L
from . import segment as S
from .errors import RingMissing
from .header import W_CAPACITY, W_EPOCH, _check_header, _copy_out, _data_view, _Header, now_us


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
        return _copy_out(self.data, start, max(0, min(n, self.capacity)))

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
