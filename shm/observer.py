"""Read-only observers of a ring (the web process, the status command)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import layout as L
from . import segment as S
from .errors import RingMissing
from .telemetry import TelemetrySchema
from .header import W_CAPACITY, W_EPOCH, _check_header, _copy_out, _data_view, _Header, now_us


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A copy of the header taken at ``taken_us`` (microseconds since 1970 UTC).

    ``fields``: every protocol word and every telemetry word of the observer's schema, by
    name. ``tables``: each telemetry table of the schema as a list of rows, each row a
    tuple of its cells in column order. The meaning is the schema owner's business.
    """

    ring: str
    taken_us: int
    fields: dict[str, int | float]
    tables: dict[str, list[tuple[int | float, ...]]]


class Observer:
    """A read-only view of a ring (the web process, the status command).

    The segment is mapped with PROT_READ: nothing here can write to it.
    """

    def __init__(self, name: str, telemetry: TelemetrySchema | None = None) -> None:
        """Map ring ``name`` read-only. With ``telemetry``, snapshots include its words and
        tables, and a ring of another schema is refused. Raises RingMissing, LayoutMismatch."""
        S.check_ring_name(name)
        self.name = name
        try:
            self._mm, self.inode = S.map_readonly(name)
        except FileNotFoundError:
            raise RingMissing(f"ring {name!r} does not exist") from None
        try:
            _check_header(_Header(self._mm[: L.HEADER_BYTES], None), name, len(self._mm), telemetry)
        except Exception:
            self._mm.close()
            raise
        self.schema = telemetry
        self.h = _Header(self._mm, None, telemetry)
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
        for f in self.h.fields.values():
            v = floats[f.word] if f.kind == "f64" else (ints[f.word] if f.kind == "i64" else words[f.word])
            fields[f.name] = v.item()
        tables: dict[str, list[tuple[int | float, ...]]] = {}
        if self.schema is not None:
            for name, (base, t) in self.schema.tables.items():
                view = floats if t.kind == "f64" else (ints if t.kind == "i64" else words)
                cells = view[base : base + t.rows * len(t.columns)].reshape(t.rows, len(t.columns))
                tables[name] = [tuple(r) for r in cells.tolist()]
        return Snapshot(self.name, now_us(), fields, tables)

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
