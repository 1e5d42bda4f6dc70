"""The header's telemetry area: named words and tables declared by the caller, owner-checked.

``shm`` knows no meaning here. A caller above it declares a ``TelemetrySchema`` (blocks of
named words and named tables, each block owned by one role) and passes it to
``Producer.open`` / ``Consumer.open`` / ``Observer``; the endpoints then write the words
and table cells their role owns (anything else raises PermissionError) and an observer's
``Snapshot`` reads them back by name.

Byte layout (inside the ring header, after the protocol words of ``shm.layout``)::

    header word AREA_BASE (byte 1024) .. HEADER_WORDS (byte 16384): AREA_WORDS words of
    8 bytes, little-endian, zero at creation ("not reported yet").

    Blocks follow each other in declaration order; each starts on a 64-byte line, so two
    owners never share a cache line.
      Words block of n words:    word i at block start + i (kind u64, i64 or f64)
      Table of r rows x c cols:  cell (row, col) at block start + row * c + col, every
                                 cell of the table's one kind

    Header word ``telemetry_schema`` (a creator word of ``shm.layout``) holds the schema's
    fingerprint: the first 8 bytes of BLAKE2b over the declaration (names, kinds, owners,
    shapes, order), 0 for a ring created without a schema. An endpoint opened with a
    schema attaches only to a ring of the same fingerprint (``LayoutMismatch`` otherwise;
    a producer replaces such a ring when it is drained, like a layout change), so adding
    or moving one word can never make two processes read each other's words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from . import layout as L

AREA_BASE = 128  # first word after the protocol regions (identity, producer, consumer)
AREA_WORDS = L.HEADER_WORDS - AREA_BASE
OWNERS = ("producer", "consumer")
KINDS = ("u64", "i64", "f64")
_LINE_WORDS = 8  # 64 bytes


@dataclass(frozen=True, slots=True)
class Word:
    """One named header word: ``kind`` u64 / i64 / f64; ``doc`` says what it means (for the caller)."""

    name: str
    kind: str
    doc: str


@dataclass(frozen=True, slots=True)
class Words:
    """A block of words written only by ``owner`` ("producer" or "consumer")."""

    owner: str
    words: tuple[Word, ...]


@dataclass(frozen=True, slots=True)
class Table:
    """``rows`` x ``len(columns)`` cells of one ``kind``, written only by ``owner``."""

    name: str
    owner: str
    rows: int
    columns: tuple[str, ...]
    kind: str = "u64"
    doc: str = ""


class TelemetrySchema:
    """Where each declared word and table lives in the area. Raises ValueError for a
    duplicate name, an unknown owner or kind, or blocks that do not fit in ``AREA_WORDS``."""

    def __init__(self, *blocks: Words | Table) -> None:
        self.blocks = tuple(blocks)
        self.fields: dict[str, L.Field] = {}
        self.tables: dict[str, tuple[int, Table]] = {}  # name -> (first word, table)
        pos = AREA_BASE
        for b in self.blocks:
            if b.owner not in OWNERS:
                raise ValueError(f"telemetry owner {b.owner!r} must be one of {OWNERS}")
            if isinstance(b, Words):
                for i, w in enumerate(b.words):
                    self._name(w.name)
                    if w.kind not in KINDS:
                        raise ValueError(f"telemetry word {w.name!r}: kind {w.kind!r} must be one of {KINDS}")
                    self.fields[w.name] = L.Field(w.name, pos + i, w.kind, b.owner, w.doc)
                size = len(b.words)
            else:
                self._name(b.name)
                if b.kind not in KINDS or b.rows < 1 or not b.columns or len(set(b.columns)) != len(b.columns):
                    raise ValueError(f"telemetry table {b.name!r}: needs rows >= 1, distinct columns and a kind of {KINDS}")
                self.tables[b.name] = (pos, b)
                size = b.rows * len(b.columns)
            pos += -(-size // _LINE_WORDS) * _LINE_WORDS
        if pos > L.HEADER_WORDS:
            raise ValueError(f"telemetry schema needs {pos - AREA_BASE} words; the header has {AREA_WORDS}")
        self.words_used = pos - AREA_BASE
        text = repr([(type(b).__name__, b) for b in self.blocks]).encode()
        self.fingerprint = int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") or 1

    def _name(self, name: str) -> None:
        if name in self.fields or name in self.tables or name in L.FIELD_BY_NAME:
            raise ValueError(f"telemetry name {name!r} is declared twice (or is a protocol word)")

    def describe(self) -> str:
        """The area as text: word, kind, owner, name (like ``layout.describe_layout``)."""
        lines = [f"{'word':>5} {'kind':4} {'owner':9} name: meaning"]
        for f in self.fields.values():
            lines.append(f"{f.word:>5} {f.kind:4} {f.owner:9} {f.name}: {f.doc}")
        for base, t in self.tables.values():
            lines.append(f"{base:>5} {t.kind:4} {t.owner:9} {t.name}[{t.rows}][{', '.join(t.columns)}]: {t.doc}")
        return "\n".join(lines)


class Row:
    """Owner-checked access to one row of a table (from ``Producer.row`` / ``Consumer.row``).

    The check is made once, when the row is taken; ``set`` / ``add`` / ``get`` address a
    column by name (KeyError for an unknown one). Holds a view of the mapping: drop it
    before the endpoint closes.
    """

    __slots__ = ("_v", "_base", "_cols", "_conv")

    def __init__(self, view, base: int, columns: tuple[str, ...], kind: str) -> None:
        self._v = view
        self._base = base
        self._cols = {c: i for i, c in enumerate(columns)}
        self._conv = float if kind == "f64" else int

    def set(self, column: str, value: int | float) -> None:
        self._v[self._base + self._cols[column]] = self._conv(value)

    def add(self, column: str, delta: int | float = 1) -> None:
        w = self._base + self._cols[column]
        self._v[w] = self._v[w] + self._conv(delta)

    def get(self, column: str) -> int | float:
        return self._v[self._base + self._cols[column]]

    def words(self) -> list[int | float]:
        """The row's cells in column order."""
        return list(self._v[self._base : self._base + len(self._cols)])


__all__ = ["AREA_BASE", "AREA_WORDS", "Row", "Table", "TelemetrySchema", "Word", "Words"]
